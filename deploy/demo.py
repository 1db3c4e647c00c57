"""``council demo``: one command that shows a night of self-improvement, before and after.

1. A fresh temporary state directory gets a ``council.toml`` (below), and the real server
   (``python -m council.cli serve``) starts on a free port of 127.0.0.1 on the embedded SmolLM2-135M model.
2. Before: it asks the bundled questions (``deploy/demo_data.jsonl``: facts about the fictional
   "Zorblax 3000", which the base model cannot know) through ``/v1/chat/completions`` and sends a
   thumbs-down with the correction through ``/v1/feedback`` for every answer that misses the fact.
3. Night: ``cron.nightly.main`` against that server — harvest (a council of 3 x ``local/smollm2`` rewrites
   the corrected exchanges; each user correction is on the ballot, worded the way the model answers with it
   in memory), train (a fresh LoRA adapter on every core, with the model's own right answers to
   ``prompts/rehearsal.jsonl`` mixed into every batch, stopped once it says every harvested answer),
   deploy (canary, swap, confirmation on the
   server's ``/health``, a monitoring window probed with the demo's questions). The probes let the window
   judge real traffic for errors, latency and the served adapter; its success-rate floor is off
   (``--min-success-rate 0``) because SmolLM2-135M rarely reaches ``council.threshold`` confidence on these
   questions even when right, so a floor would judge the model's calibration, not the adapter — the canary
   is the regression gate.
4. After: the same questions again, on the adapter the server now serves, then each question reworded
   (``reworded`` in the data; asked only now, so they are never corrected or harvested): how far the night's
   facts carry beyond the exact words that were corrected.
5. A before/after table (right or wrong and confidence per question, and for its rewording), the canary
   result (and how many canary questions the scoped adapter answered), totals and seconds
   per stage. Exit 0 when at least ``--target`` of the corrected questions are right afterwards, every canary
   case passed and the server confirmed the new adapter; 1 otherwise; 2 for bad options.

Run it::

    council demo                                # all questions; state in a temp dir, removed at the end
    council demo --questions 3 --keep-home      # a quicker run; keeps the state dir to look around
    council --home ~/.council demo              # where the converted base model is cached

The demo's ``council.toml`` differs from the defaults on purpose:

* ``council.heads = {}``: no escalation. Every "before" answer is unsure, and the default config would ask
  4 specialist heads each time — 4 more generations of the same 135M model per question (about 5x the
  time on 2 cores) whose winner is just the most confident prompt. The demo measures what one night
  taught the model, so Agent-0 alone answers.
* ``council.memory_k = 0``: no past exchanges in the prompt, so the "after" answers come from the adapter's
  weights alone and do not depend on the order of the questions.
* ``model.max_new_tokens = --max-new-tokens``: caps every generation (answers and harvest rewrites) to keep
  the night short; the alerts webhook, API key and other ``COUNCIL_*`` settings of your shell are not used.

The base model is ``--model-source``, else ``model.source`` of your settings, else the embedded GGUF
converted once into ``<your home>/models`` (where ``council serve`` puts it), so later demos skip the ~30 s
conversion. Nothing else outside the demo's state directory is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from council import exitcodes
from council.atomic import atomic_write_json
from council.cliargs import add_config_arguments
from council.config import Settings, load_settings
from council.errors import CouncilError
from deploy.demo_server import (
    DemoServer,
    Question,
    bundled_questions_path,
    format_report,
    free_port,
    load_questions,
)

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    settings: Settings = field(metadata={"help": "Your Council settings (only used to find or cache the base model)."})
    demo_home: str = field(default="", metadata={"help": "Demo state directory (must be new or empty); empty = a "
                                                         "fresh temporary one."})
    keep_home: bool = field(default=False, metadata={"help": "Keep the demo state directory afterwards."})
    questions: int = field(default=0, metadata={"help": "Ask only the first N questions; 0 = all."})
    data_file: str = field(default="", metadata={"help": "Questions JSONL (id, question, correction, accept); "
                                                         "empty = the bundled deploy/demo_data.jsonl."})
    model_source: str = field(default="", metadata={"help": "Base model folder; empty = settings' model.source or "
                                                            "the embedded model converted in <home>/models."})
    port: int = field(default=0, metadata={"help": "Port of the demo server; 0 = a free one."})
    max_tokens: int = field(default=32, metadata={"help": "max_tokens of each demo question."})
    max_new_tokens: int = field(default=64, metadata={"help": "model.max_new_tokens of the demo (caps harvest "
                                                               "rewrites too)."})
    agents: int = field(default=3, metadata={"help": "Harvest council members (local/smollm2 each)."})
    epochs: int = field(default=12, metadata={"help": "Most training epochs of the fresh adapter (it stops once "
                                                      "it reproduces every harvested answer, ~7 here)."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Training learning rate."})
    min_success_rate: float = field(default=0.0, metadata={"help": "Deploy rolls back when a smaller share of the "
                                                                  "probe answers is confident; 0 = no floor."})
    window_seconds: float = field(default=10.0, metadata={"help": "Deploy monitoring window."})
    target: float = field(default=0.8, metadata={"help": "Share of corrected questions right afterwards to pass."})
    start_seconds: float = field(default=300.0, metadata={"help": "How long the server may take to start."})

    def __post_init__(self) -> None:
        path = Path(self.data_file).expanduser() if self.data_file else bundled_questions_path()
        self.question_list: list[Question] = load_questions(path)
        if self.questions < 0:
            raise ValueError("questions must be >= 0 (0 = all of them)")
        if self.questions:
            self.question_list = self.question_list[: self.questions]
        if self.demo_home:
            home = Path(self.demo_home).expanduser()
            if home.exists() and (not home.is_dir() or any(home.iterdir())):
                raise ValueError(f"--demo-home {home} exists and is not empty; the demo needs a fresh state "
                                 "directory (remove it or name another)")
        if self.model_source and not Path(self.model_source).expanduser().is_dir():
            raise ValueError(f"--model-source {self.model_source} is not a folder; give a converted model folder")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be 0 (a free one) or 1-65535, got {self.port}")
        if self.max_tokens < 8 or self.max_new_tokens < self.max_tokens:
            raise ValueError("max_tokens must be >= 8 and max_new_tokens >= max_tokens (e.g. 32 and 64)")
        if self.agents < 1 or self.epochs < 1:
            raise ValueError("agents and epochs must be >= 1")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), e.g. 2e-3; got {self.learning_rate}")
        for name in ("min_success_rate", "target"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.window_seconds < 0 or self.start_seconds <= 0:
            raise ValueError("window_seconds must be >= 0 and start_seconds > 0")


def base_model_source(config: DemoConfig) -> str:
    """The base model folder the demo server and trainer share (converting the embedded GGUF once)."""
    if config.model_source:
        return str(Path(config.model_source).expanduser().resolve())
    if config.settings.model.source:
        return config.settings.model.source
    from council.model_files import resolve_base_model

    return resolve_base_model("", config.settings.paths.models).path


def write_settings(home: Path, config: DemoConfig, source: str, port: int) -> tuple[Path, Settings]:
    """The demo's council.toml (see the module docstring) and the Settings it gives, ignoring the environment."""
    home.mkdir(parents=True, exist_ok=True)
    toml = (f"[server]\nhost = \"127.0.0.1\"\nport = {port}\n\n"
            f"[model]\nsource = {json.dumps(source)}\nmax_new_tokens = {config.max_new_tokens}\n\n"
            "[council]\nheads = {}\nmemory_k = 0\n")
    path = home / "council.toml"
    path.write_text(toml, encoding="utf-8")
    return path, load_settings(path, {"home": str(home)}, environ={})


def ask_all(server: DemoServer, questions: list[Question], max_tokens: int, correct: bool) -> list[dict[str, Any]]:
    replies = []
    for question in questions:
        reply = server.ask(question.question, max_tokens)
        reply["right"] = question.is_right(reply["text"])
        if correct and not reply["right"]:
            server.correct(reply["record_id"], question.correction)
            reply["corrected"] = True
        log.info("%s: %s (%.2f) %r", question.id, "right" if reply["right"] else "wrong", reply["confidence"] or 0,
                 reply["text"][:80])
        replies.append(reply)
    return replies


def run_night(config: DemoConfig, settings: Settings, url: str, since: datetime) -> dict[str, Any]:
    """cron.nightly.main on the demo state; its summary plus the harvest and deploy figures."""
    from cron.nightly import NightlyConfig
    from cron.nightly import main as nightly_main

    probes = settings.home / "demo_probes.jsonl"
    probes.write_text("".join(json.dumps({"prompt": q.question}) + "\n" for q in config.question_list))
    count = len(config.question_list)
    nightly_main(NightlyConfig(
        settings=settings, server_url=url, since=since.isoformat(),
        until=(datetime.now(UTC) + timedelta(minutes=1)).isoformat(), max_records=count, agents=config.agents,
        harvest_models="local/smollm2", fresh=True, epochs=config.epochs, learning_rate=config.learning_rate,
        min_examples=1, train_threads=os.cpu_count() or 1, window_seconds=config.window_seconds, sample_seconds=2.0, max_p95_latency_ms=120_000.0,
        min_success_rate=config.min_success_rate, probe_file=str(probes)))
    logs = settings.paths.logs

    def read(name: str) -> dict[str, Any]:
        path = logs / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    return {"nightly": read("nightly_summary.json"), "harvest": read("harvest_last.json"),
            "deploy": read("deploy_summary.json")}


def run(config: DemoConfig, home: Path) -> dict[str, Any]:
    """The whole demo in ``home``; returns the summary that ``format_report`` prints."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    source = base_model_source(config)
    config_file, settings = write_settings(home, config, source, config.port or free_port())
    with DemoServer(home, config_file, settings.server.port, config.start_seconds) as server:
        seconds["server start"] = time.perf_counter() - clock
        since = datetime.now(UTC) - timedelta(seconds=1)
        mark = time.perf_counter()
        before = ask_all(server, config.question_list, config.max_tokens, correct=True)
        seconds["before"] = time.perf_counter() - mark
        mark = time.perf_counter()
        night = run_night(config, settings, server.url, since)
        stage_seconds = night["nightly"].get("seconds") or {}
        seconds.update({k: float(stage_seconds[k]) for k in ("harvest", "train", "deploy") if k in stage_seconds})
        seconds["night"] = time.perf_counter() - mark
        serving = server.health().get("adapter")
        mark = time.perf_counter()
        after = ask_all(server, config.question_list, config.max_tokens, correct=False)
        rewordable = [q for q in config.question_list if q.reworded]
        reworded = ask_all(server, [replace(q, question=q.reworded) for q in rewordable], config.max_tokens,
                           correct=False)
        seconds["after"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - clock
    deploy = night["deploy"]
    version = deploy.get("version") if deploy.get("decision") == "deployed" else None
    reworded_by_id = {q.id: r for q, r in zip(rewordable, reworded, strict=True)}
    rows = [{"id": q.id, "question": q.question, "corrected": bool(b.get("corrected")), "before": b, "after": a,
             "reworded": reworded_by_id.get(q.id)}
            for q, b, a in zip(config.question_list, before, after, strict=True)]
    corrected = [r for r in rows if r["corrected"]]
    totals = {"questions": len(rows), "corrected": len(corrected),
              "before_right": sum(r["before"]["right"] for r in corrected),
              "after_right": sum(r["after"]["right"] for r in corrected),
              "reworded": len(reworded), "reworded_right": sum(r["right"] for r in reworded),
              "reworded_by_adapter": sum(1 for r in reworded if version and r.get("adapter") == version)}
    totals["after_accuracy"] = totals["after_right"] / len(corrected) if corrected else 0.0
    canary = deploy.get("canary")
    # answers outside the adapter's scope come from the base model, so the server's /health confirms the swap
    confirmed = version is not None and serving == version
    problems = []
    if not corrected:
        problems.append("the base model already knew every answer, so nothing was corrected")
    if not confirmed:
        why = str(deploy.get("reason") or night["nightly"].get("reason"))
        problems.append(f"the server serves {serving or 'the base model'}, not a newly deployed adapter "
                        f"({deploy.get('decision') or 'no deploy'}: {why[:240]})")
    if totals["after_accuracy"] < config.target:
        problems.append(f"{totals['after_accuracy']:.0%} of the corrected questions are right afterwards, "
                        f"below the {config.target:.0%} target")
    if not canary or canary["passed"] < canary["total"]:
        problems.append("the canary did not pass in full" if canary else "no candidate reached the canary")
    nightly = night["nightly"]
    return {"home": str(home), "base_model": source, "server_url": server.url, "rows": rows, "totals": totals, "target": config.target,
            "canary": canary and {"passed": canary["passed"], "total": canary["total"], "version": deploy.get("version"),
                                  "failed": [c["id"] for c in canary["cases"] if not c["passed"]],
                                  "adapter_answered": sum(1 for c in canary["cases"] if c.get("adapter_applied", True)),
                                  "unscoped": deploy.get("canary_unscoped")},
            "night": {"result": nightly.get("result"), "reason": nightly.get("reason"),
                      "stages": nightly.get("stages"), "harvest": night["harvest"],
                      "deploy": {k: deploy.get(k) for k in ("decision", "reason", "version", "server", "monitor")}},
            "deployed": version, "serving_adapter": serving, "adapter_confirmed": confirmed,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "passed": not problems, "verdict": "; ".join(problems) or "the night fixed the corrected questions"}


def main(config: DemoConfig, out: Callable[[str], None] | None = None) -> int:
    """Run the demo; ``out`` receives the report lines (default: the log). Writes logs/demo_summary.json."""
    write = out or log.info
    home = Path(config.demo_home).expanduser() if config.demo_home else Path(tempfile.mkdtemp(prefix="council-demo-"))
    try:
        summary = run(config, home.resolve())
        atomic_write_json(home / "logs" / "demo_summary.json", summary)
        for line in format_report(summary):
            write(line)
        if config.keep_home:
            write(f"state directory kept: {home} (summary in logs/demo_summary.json)")
        return exitcodes.OK if summary["passed"] else exitcodes.FAILURE
    except CouncilError as exc:
        log.error("demo failed: %s", exc.message)
        return exitcodes.FAILURE
    finally:
        if not config.keep_home:
            shutil.rmtree(home, ignore_errors=True)


def cli(argv: list[str], settings: Settings) -> int:
    """``council demo [--option value ...]``; options mirror DemoConfig's fields."""
    parser = argparse.ArgumentParser(prog="council demo", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, DemoConfig)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exitcodes.OK if exc.code in (0, None) else exitcodes.USAGE
    try:
        config = DemoConfig(settings=settings, **vars(args))
    except ValueError as exc:
        sys.stderr.write(f"council demo: {exc}\n")
        return exitcodes.USAGE
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)  # its handler writes INFO lines to stdout
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return main(config, out=lambda line: sys.stdout.write(line + "\n"))
