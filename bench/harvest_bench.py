"""Harvest benchmark: records rewritten per minute by the autogen council on the embedded SmolLM2 (CPU).

Run:  cd /work/main && PYTHONPATH=. .venv/bin/python bench/harvest_bench.py [--records 3] [--agents 3] [--max-tokens 96]

A fresh state directory gets ``--records`` failed exchanges (real embeddings, one with a user correction), the
``local`` provider is loaded first (model load is not timed), then one full ``harvest()`` runs: selection,
PII redaction, 2 rounds x N agents through litellm (proposal + ballot), scoring, JSONL writes, marks.
Prints records/minute (attempted and kept), seconds per record and model calls per minute.
Prints numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from council.core.config import LOCAL_MODEL, load_settings  # noqa: E402
from council.engine.provider import register_local_provider, unregister_provider  # noqa: E402
from council.memory.embedder import Embedder  # noqa: E402
from council.memory.schema import ExchangeRecord, Feedback  # noqa: E402
from council.memory.store import MemoryStore  # noqa: E402
from harvest.config import HarvestConfig  # noqa: E402
from harvest.main import harvest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHED = REPO / ".council" / "test-cache" / "models" / "smollm2-135m-instruct"
DAY = datetime(2026, 11, 21, tzinfo=UTC)
QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Lyon.", "Paris"),
    ("How many legs does a spider have?", "Spiders have six legs.", None),
    ("Who wrote Romeo and Juliet?", "Charles Dickens wrote it.", None),
    ("What is the boiling point of water at sea level in Celsius?", "50 degrees.", None),
    ("What gas do plants absorb from the air?", "Oxygen.", "Carbon dioxide"),
    ("How many days are in a leap year?", "365.", None),
]


async def run(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="harvest-bench-"))
    source = args.model_source if args.model_source is not None else (str(CACHED) if CACHED.is_dir() else "")
    settings = load_settings(overrides={"home": str(home), "model.source": source})
    settings.paths.ensure()
    records = []
    for i in range(args.records):
        query, bad, correction = QUESTIONS[i % len(QUESTIONS)]
        records.append(ExchangeRecord(query if i < len(QUESTIONS) else f"{query} (variant {i})", bad, 0.3, False,
                                      LOCAL_MODEL, created_at=DAY + timedelta(minutes=i),
                                      feedback=Feedback(correction=correction) if correction else None))
    store = MemoryStore.open(settings.paths.memory)
    store.add_many(list(zip(records, Embedder().embed([r.query for r in records]), strict=True)))
    store.close()
    provider = await register_local_provider(settings)
    try:
        config = HarvestConfig(settings=settings, since=DAY, until=DAY + timedelta(days=1), agents=args.agents,
                               max_tokens=args.max_tokens, dedupe_similarity=0.99)
        started = time.perf_counter()
        report = await harvest(config)
        seconds = time.perf_counter() - started
    finally:
        unregister_provider("local", provider)
        provider.close()
    calls = (report.attempted + report.rewritten) * args.agents  # proposals + ballots
    print(f"harvest bench: {args.records} records, {args.agents} agents, max_tokens {args.max_tokens}, "
          f"{os.cpu_count()} cpus, model {source or '(embedded GGUF)'}")
    print(report.summary_line())
    print(f"records attempted per minute: {report.attempted / seconds * 60:.2f}")
    print(f"records kept per minute:      {report.kept / seconds * 60:.2f}")
    print(f"seconds per record:           {seconds / max(1, report.attempted):.1f}")
    print(f"model calls: ~{calls} ({calls / seconds * 60:.1f}/min); kept {report.kept}/{report.attempted}, "
          f"malformed {report.dropped_malformed}, disagreeing {report.dropped_disagreeing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--model-source", default=None, help="base model folder; default: the test cache or the GGUF")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
