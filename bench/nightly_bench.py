"""Wall time of one `council nightly` on the embedded model: N failures (with corrections) recorded
yesterday → harvest (3 local agents) → train → deploy (no server: canary + validation only).
Baseline: the per-stage split, so the dominant stage is visible.

    .venv/bin/python -m bench.nightly_bench [--failures 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from council.core.config import load_settings  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402
from council.memory.embedder import Embedder  # noqa: E402
from council.memory.schema import ExchangeRecord, Feedback  # noqa: E402
from council.memory.store import MemoryStore  # noqa: E402
from cron.config import NightlyConfig  # noqa: E402
from cron.nightly import main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PRODUCTS = ["Zorblax 3000", "Quibbletron", "Marnox Pod", "Velquist Lamp", "Drubble Kettle", "Op-Fenwick Drone",
            "Sallowmere Bike", "Trantic Watch", "Bellquorn Speaker", "Nimbrel Oven"]
FACTS = [("What colour is the {p}?", "The {p} is {v}.", ["teal", "amber", "violet", "crimson", "silver"]),
         ("How much does the {p} cost?", "The {p} costs ${v}.", ["129", "349", "75", "980", "412"]),
         ("Which company makes the {p}?", "The {p} is made by {v}.", ["Hollin Works", "Brask & Co", "Ferrowind",
                                                                      "Lumet Labs", "Quarry Nine"]),
         ("How long does the {p} battery last?", "The {p} battery lasts {v} hours.", ["12", "30", "48", "7", "96"]),
         ("In what year was the {p} released?", "The {p} was released in {v}.", ["2027", "2031", "2029", "2033", "2030"])]


def failures(count: int, day: datetime) -> list[ExchangeRecord]:
    """``count`` distinct questions about fictional products (distinct enough not to be collapsed as duplicates),
    each answered "I am not sure." with a thumbs-down and a correction."""
    records = []
    for i in range(count):
        product = PRODUCTS[i % len(PRODUCTS)]
        question, answer, values = FACTS[(i // len(PRODUCTS)) % len(FACTS)]
        value = values[i % len(values)]
        records.append(ExchangeRecord(question.format(p=product), "I am not sure.", 0.3, False, "local/smollm2",
                                      created_at=day + timedelta(minutes=10 * i),
                                      feedback=Feedback(thumbs="down", correction=answer.format(p=product, v=value))))
    return records


def run(count: int) -> None:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    base = resolve_base_model("", REPO / ".council" / "test-cache" / "models")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides={"home": tmp, "model.source": base.path})
        store = MemoryStore.open(settings.paths.memory)
        embedder = Embedder()
        records = failures(count, day)
        store.add_many([(r, v) for r, v in zip(records, embedder.embed([r.query for r in records]), strict=True)])
        store.close()
        started = time.perf_counter()
        code = main(NightlyConfig(settings=settings, server_url="http://127.0.0.1:9", fresh=True,
                                  max_records=count, min_examples=min(5, count)))
        wall = time.perf_counter() - started
        summary = json.loads((settings.paths.logs / "nightly_summary.json").read_text())
        harvest = json.loads((settings.paths.logs / "harvest_last.json").read_text())
        deploy_file = settings.paths.logs / "deploy_summary.json"
        deploy = json.loads(deploy_file.read_text()) if deploy_file.is_file() else {}
    print(json.dumps({"failures": count, "exit_code": code, "result": summary.get("result"),
                      "stage_seconds": summary.get("seconds"),
                      "harvest": {k: harvest.get(k) for k in ("found", "collapsed", "attempted", "kept", "errors")},
                      "deploy": {k: deploy.get(k) for k in ("decision", "reason")}}))
    per_record = summary["seconds"].get("harvest", 0) / max(count, 1)
    print(f"nightly wall time: {wall:.0f} s for {count} failures; harvest {per_record:.1f} s/record "
          f"-> {per_record * 50 / 60:.1f} min of harvest for 50 failures (target: whole night <= 10 min)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--failures", type=int, default=50)
    run(parser.parse_args().failures)
