"""Many nights in a row: does what night 1 taught still hold after night K, on the README's default path?

Each night ``k`` (1..K): two users teach N new fictional facts (``bench/nights_facts.py``) — each question
asked through the real server (``council serve``, the defaults plus ``council.heads = {}`` as in
``council demo``) and corrected through ``/v1/feedback`` when wrong; some earlier facts are corrected again to
a new value; before the night after the middle one, one user's records are erased (``DELETE /v1/records``)
and their facts asked at once. Then ``council nightly`` runs with its defaults (harvest with 3 agents,
train, deploy with the canary, probes and retention gates). After every night every fact taught so far is
asked, same words and reworded (never corrected), on two servers over the same state: **memory on** (as users
get it) and **memory off** (``council.memory_k = 0``: the adapter's weights alone), with ``store: false``
so that measuring teaches the loop nothing; and the canary (as served) and the locality questions the base
model answered right (weights alone).

It prints the retention matrices (night taught × night asked; the share right), each night's seconds by stage,
training lines and adapter size, and the targets; writes everything to ``--out`` (JSON) and exits 1 when a
target is missed (0 when all are met, 2 for bad options). ``--quick`` (2 nights × 3 facts, with one update
and one erasure, 8 locality questions) is what CI runs (``tests/test_nights_bench.py``).

    .venv/bin/python -m bench.nights_bench                    # 20 nights x 10 facts (hours on 2 cores)
    .venv/bin/python -m bench.nights_bench --quick --keep-home /tmp/nights
    .venv/bin/python -m bench.nights_bench --nights 5 --facts 5 --out nights.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.nights_facts import LOCALITY, Fact, has_word, make_facts, plan_updates, update  # noqa: E402
from bench.nights_report import check_targets, report  # noqa: E402
from council.core.config import load_settings  # noqa: E402
from cron.demo import write_settings  # noqa: E402
from cron.demo_server import DemoServer, free_port  # noqa: E402

log = logging.getLogger("nights_bench")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class NightsConfig:
    nights: int = field(default=20, metadata={"help": "Nights in a row (K)."})
    facts: int = field(default=10, metadata={"help": "New facts taught each night (N)."})
    update_share: float = field(default=0.1, metadata={"help": "Share of facts corrected again to a new value."})
    seed: int = field(default=0, metadata={"help": "Seed of the facts' products and values."})
    locality: int = field(default=len(LOCALITY), metadata={"help": "General questions asked (the first N of "
                                                                   "bench/nights_facts.py's LOCALITY)."})
    max_tokens: int = field(default=32, metadata={"help": "max_tokens of every question (as council demo)."})
    max_new_tokens: int = field(default=64, metadata={"help": "model.max_new_tokens of the servers (as council demo)."})
    agents: int = field(default=3, metadata={"help": "Harvest council members (the nightly default)."})
    replay_ratio: float = field(default=-1.0, metadata={"help": "Training's replay_ratio (0 = every earlier line); "
                                                                "-1 = the default."})
    window_seconds: float = field(default=10.0, metadata={"help": "Deploy monitoring window (as council demo)."})
    model_source: str = field(default="", metadata={"help": "Base model folder; empty = the embedded model "
                                                            "converted in your home's models/."})
    keep_home: str = field(default="", metadata={"help": "Run in this (new) folder and keep it; empty = a temp one."})
    out: str = field(default="", metadata={"help": "Write the results here as JSON."})

    def __post_init__(self) -> None:
        if self.nights < 1 or self.facts < 1:
            raise ValueError("nights and facts must be >= 1")
        if not 0 <= self.locality <= len(LOCALITY):
            raise ValueError(f"locality must be within 0..{len(LOCALITY)}")
        if not 0 <= self.update_share <= 1:
            raise ValueError("update_share must be within 0..1")
        if self.keep_home and Path(self.keep_home).exists() and any(Path(self.keep_home).iterdir()):
            raise ValueError(f"--keep-home {self.keep_home} is not empty; name a new folder")

    @property
    def erase_night(self) -> int:
        """The night after which one user's records are erased (before night ``erase_night + 1``); 0 = none."""
        return max(1, self.nights // 2) if self.nights >= 2 else 0


def ask(server: DemoServer, question: str, tokens: int) -> str:
    return server.ask(question, tokens, user="bench-probe", store=False)["text"]


def teach(server: DemoServer, facts: list[Fact], tokens: int) -> int:
    """Ask each fact as its user (recorded) and correct the wrong answers; returns how many were corrected."""
    corrected = 0
    for fact in facts:
        reply = server.ask(fact.question, tokens, user=fact.user)
        if not fact.right(reply["text"]) or fact.says_old(reply["text"]):
            server.correct(reply["record_id"], fact.correction)
            corrected += 1
    return corrected


def measure(on: DemoServer, off: DemoServer, facts: list[Fact], tokens: int) -> dict[str, dict[int, list[int]]]:
    """For each (server, wording): fact index -> [right, says the old value] of every taught, kept fact."""
    out: dict[str, dict[int, list[int]]] = {}
    for name, server in (("on", on), ("off", off)):
        for wording in ("same", "reworded"):
            cell = out[f"{name}_{wording}"] = {}
            for fact in facts:
                text = ask(server, fact.question if wording == "same" else fact.reworded, tokens)
                cell[fact.index] = [int(fact.right(text)), int(fact.says_old(text))]
    return out


def erased_answers(on: DemoServer, off: DemoServer, facts: list[Fact], tokens: int) -> dict[str, int]:
    """How many of the erased facts each server still answers (same words or reworded)."""
    return {name: sum(fact.right(ask(server, q, tokens)) for fact in facts for q in (fact.question, fact.reworded))
            for name, server in (("on", on), ("off", off))}


def canary(server: DemoServer, tokens: int) -> tuple[int, int]:
    from deploy.canary import load_cases

    cases = load_cases(REPO / "prompts" / "canary.jsonl")
    passed = sum(all(c.passes(ask(server, case.prompt, case.max_tokens)) for c in case.checks) for case in cases)
    return passed, len(cases)


def locality(server: DemoServer, kept: dict[str, str] | None, tokens: int, count: int = 0) -> dict[str, Any]:
    """First call (``kept`` None): of the first ``count`` locality questions, those the model answers right,
    with their answers. Later: how many of ``kept`` are still right, and how many are unchanged word for word."""
    if kept is None:
        answers = {q: ask(server, q, tokens) for q, _ in LOCALITY[:count]}
        return {q: a for q, a in answers.items() if any(has_word(a, w) for w in dict(LOCALITY)[q])}
    words = dict(LOCALITY)
    answers = {q: ask(server, q, tokens) for q in kept}
    return {"right": sum(any(has_word(a, w) for w in words[q]) for q, a in answers.items()),
            "same_text": sum(a == kept[q] for q, a in answers.items()), "total": len(kept)}


def night_figures(home: Path) -> dict[str, Any]:
    """What the night's stages wrote: seconds by stage, result, training lines and steps, adapter size."""
    logs = home / "logs"
    summary = json.loads((logs / "nightly_summary.json").read_text())
    current = home / "loras" / "current"
    folders = sorted(p for p in (home / "loras").iterdir() if p.is_dir() and p.name != "current")
    trained = (summary.get("stages") or {}).get("train") == 0  # tonight's training published a version
    meta = json.loads((folders[-1] / "metadata.json").read_text()) if folders and trained else {}
    size = sum(f.stat().st_size for f in current.resolve().glob("adapter_model.*")) if current.exists() else 0
    return {"seconds": summary.get("seconds", {}), "result": summary.get("result"), "reason": summary.get("reason"),
            "exit_code": summary.get("exit_code"), "trained": meta.get("version"),
            "examples": meta.get("examples", {}), "steps": meta.get("optimizer_steps"),
            "train_seconds": meta.get("train_seconds"), "fresh_because": meta.get("fresh_because"),
            "deployed": current.resolve().name if current.exists() else None, "adapter_bytes": size,
            "retention_gate": (summary.get("gates") or {}).get("retention")}


def run_night(settings: Any, url: str, config: NightsConfig, probes: list[Fact]) -> None:
    from cron.config import NightlyConfig
    from cron.nightly import main as nightly_main

    probe_file = settings.home / "bench_probes.jsonl"
    probe_file.write_text("".join(json.dumps({"prompt": f.question}) + "\n" for f in probes))
    nightly_main(NightlyConfig(settings=settings, server_url=url, agents=config.agents,
                               window_seconds=config.window_seconds, sample_seconds=2.0, probe_file=str(probe_file),
                               replay_ratio=config.replay_ratio))


def wait_same_adapter(on: DemoServer, off: DemoServer, seconds: float = 120.0) -> None:
    """The memory-off server follows ``loras/current`` through its watcher; wait until it serves the same one."""
    deadline = time.monotonic() + seconds
    while off.health().get("adapter") != on.health().get("adapter"):
        if time.monotonic() > deadline:
            log.warning("the memory-off server still serves %s after %.0f s; measuring anyway",
                        off.health().get("adapter"), seconds)
            return
        time.sleep(1.0)


def run(config: NightsConfig, home: Path) -> dict[str, Any]:
    from council.engine.model_files import resolve_base_model

    source = config.model_source or resolve_base_model("", load_settings().paths.models).path
    facts = make_facts(config.nights, config.facts, config.seed)
    erase_user = f"teacher-{config.erase_night}-b" if config.erase_night else ""
    updates = plan_updates([f for f in facts if f.user != erase_user], config.nights, config.update_share)
    rng = random.Random(config.seed + 1)
    on_port, off_port = free_port(), free_port()
    on_file, settings = write_settings(home, config.max_new_tokens, source, on_port)
    off_file, _ = write_settings(home, config.max_new_tokens, source, off_port, memory=False, name="memory-off.toml")
    results: dict[str, Any] = {"config": {k: v for k, v in vars(config).items()}, "nights": [],
                               "facts": [], "erasure": {}}
    with DemoServer(home, on_file, on_port, 300.0) as on, DemoServer(home, off_file, off_port, 300.0) as off:
        kept_locality = locality(off, None, config.max_tokens, config.locality)
        results["locality_kept"] = len(kept_locality)
        for night in range(1, config.nights + 1):
            clock = time.perf_counter()
            if erase_user and night == config.erase_night + 1:
                gone = [f for f in facts if f.user == erase_user]
                for record_id in on.record_ids(erase_user):
                    on.erase(record_id)
                for fact in gone:
                    fact.erased = True
                results["erasure"] = {"user": erase_user, "facts": len(gone), "night": night,
                                      "right_after": erased_answers(on, off, gone, config.max_tokens)}
            new = [f for f in facts if f.night == night]
            for fact in updates.get(night, []):
                update(fact, night, rng)
            corrected = teach(on, [*new, *updates.get(night, [])], config.max_tokens)
            taught_seconds = time.perf_counter() - clock
            run_night(settings, on.url, config, [f for f in facts if f.night <= night and not f.erased])
            wait_same_adapter(on, off)
            figures = night_figures(home)
            taught = [f for f in facts if f.night <= night and not f.erased]
            row = {"night": night, "corrected": corrected, "teach_seconds": round(taught_seconds, 1), **figures,
                   "asked": measure(on, off, taught, config.max_tokens),
                   "canary": canary(on, config.max_tokens), "locality": locality(off, kept_locality, config.max_tokens)}
            gone = [f for f in facts if f.erased]
            if gone:
                row["erased_right"] = erased_answers(on, off, gone, config.max_tokens)
            results["nights"].append(row)
            log.info("night %d done: %s, deployed %s", night, figures["result"], figures["deployed"])
    results["facts"] = [vars(f) for f in facts]
    return results


def main(config: NightsConfig) -> int:
    home = Path(config.keep_home) if config.keep_home else Path(tempfile.mkdtemp(prefix="council-nights-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        results = run(config, home.resolve())
    finally:
        if not config.keep_home:
            shutil.rmtree(home, ignore_errors=True)
    results["targets"] = check_targets(results)
    if config.out:
        Path(config.out).write_text(json.dumps(results, indent=1))
    sys.stdout.write("\n".join(report(results)) + "\n")
    return 0 if all(t["met"] for t in results["targets"]) else 1


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, spec in NightsConfig.__dataclass_fields__.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(spec.default), default=spec.default,
                            help=spec.metadata["help"])
    parser.add_argument("--quick", action="store_true", help="2 nights x 3 facts, 8 locality questions: CI's run.")
    args = vars(parser.parse_args(argv))
    if args.pop("quick"):
        args.update(nights=2, facts=3, locality=8)
    try:
        config = NightsConfig(**args)
    except ValueError as exc:
        sys.stderr.write(f"nights_bench: {exc}\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("LiteLLM", "httpx", "faiss.loader"):  # a line per request / per import attempt
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from council.core.processes import exit_on_sigterm

    with exit_on_sigterm():  # SIGTERM stops both servers, as Ctrl-C does
        return main(config)


if __name__ == "__main__":
    sys.exit(cli())
