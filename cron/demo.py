"""``council demo``: one command that shows what a correction does at once, and what one night teaches.

1. A fresh temporary state directory gets a ``council.toml`` (below), and the real server
   (``python -m council.cli serve``) starts on a free port of 127.0.0.1 on the embedded SmolLM2-135M model.
2. **Before**: it asks the bundled questions (``cron/demo_data.jsonl``: facts about the fictional
   "Zorblax 3000", which the base model cannot know) through ``/v1/chat/completions`` and sends a
   thumbs-down with the correction through ``/v1/feedback`` for every answer that misses the fact.
3. **Memory** (right after the corrections, before any training): the same questions again, then each one
   reworded (``reworded`` in the data, never corrected): the server recalls the corrections from memory.
4. **Night**: ``cron.nightly.main`` against that server with the nightly defaults a user gets — harvest (the
   corrections always kept, each with paraphrases, statements and a reverse question written by the council,
   some paraphrases held out), train, deploy (canary, in-scope probes, validation loss, swap, ``/health``
   confirmation, a monitoring window probed with the demo's questions and judged against the figures
   measured before the swap).
5. **After the night, memory off**: the server restarts with ``council.memory_k = 0``, so every answer comes
   from the adapter's weights alone; the questions and their rewordings are asked again.
6. A table per question and per rewording (before, memory, night), totals against the targets, the canary
   as served and unscoped, the probes, and seconds per stage. Exit 0 when every target is met, the canary
   passed in full and the server confirmed the new adapter; 1 otherwise; 2 for bad options.

Run it::

    council demo                                # all questions; state in a temp dir, removed at the end
    council demo --questions 3 --keep-home      # a quicker run; keeps the state dir to look around
    council --home ~/.council demo              # where the converted base model is cached

The demo's ``council.toml`` differs from the defaults in two ways only, neither of them the learning recipe:

* ``council.heads = {}``: no escalation. Every "before" answer is unsure, and the default config would ask
  4 specialist heads each time — 4 more generations of the same 135M model per question (about 5x the
  time on 2 cores). The demo measures what memory and one night taught Agent-0, so Agent-0 alone answers.
* ``model.max_new_tokens = --max-new-tokens`` (64): caps every generation to keep the night short; the
  alerts webhook, API key and other ``COUNCIL_*`` settings of your shell are not used.

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
from pathlib import Path
from typing import Any

from council.core import exitcodes
from council.core.atomic import atomic_write_json
from council.core.cliargs import add_config_arguments
from council.core.config import Settings, load_settings
from council.core.errors import CouncilError
from council.core.processes import exit_on_sigterm
from cron.demo_report import format_report, summarize
from cron.demo_server import (
    DemoServer,
    Question,
    bundled_questions_path,
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
                                                         "empty = the bundled cron/demo_data.jsonl."})
    model_source: str = field(default="", metadata={"help": "Base model folder; empty = settings' model.source or "
                                                            "the embedded model converted in <home>/models."})
    port: int = field(default=0, metadata={"help": "Port of the demo server; 0 = a free one."})
    max_tokens: int = field(default=32, metadata={"help": "max_tokens of each demo question."})
    max_new_tokens: int = field(default=64, metadata={"help": "model.max_new_tokens of the demo (caps harvest "
                                                               "rewrites too)."})
    agents: int = field(default=3, metadata={"help": "Harvest council members (local/smollm2 each)."})
    window_seconds: float = field(default=10.0, metadata={"help": "Deploy monitoring window (the nightly default is "
                                                                 "60 s; the demo's probes fill 10 s)."})
    memory_target: float = field(default=0.85, metadata={"help": "Share of corrected questions right from memory, "
                                                                "before the night (8/9)."})
    memory_reworded_target: float = field(default=0.75, metadata={"help": "Share of rewordings right from memory, "
                                                                         "before the night (7/9)."})
    target: float = field(default=1.0, metadata={"help": "Share of corrected questions right after the night with "
                                                        "memory off (9/9)."})
    reworded_target: float = field(default=0.85, metadata={"help": "Share of rewordings right after the night with "
                                                                  "memory off (8/9)."})
    start_seconds: float = field(default=300.0, metadata={"help": "How long the server may take to start."})

    @property
    def targets(self) -> dict[str, float]:
        return {"memory": self.memory_target, "memory_reworded": self.memory_reworded_target, "after": self.target,
                "reworded": self.reworded_target}

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
        if self.agents < 1:
            raise ValueError("agents must be >= 1")
        for name in ("memory_target", "memory_reworded_target", "target", "reworded_target"):
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
    from council.engine.model_files import resolve_base_model

    return resolve_base_model("", config.settings.paths.models).path


def write_settings(home: Path, max_new_tokens: int, source: str, port: int, memory: bool = True,
                   name: str = "council.toml") -> tuple[Path, Settings]:
    """The demo's council.toml (see the module docstring) and the Settings it gives, ignoring the environment.
    ``memory=False`` adds ``council.memory_k = 0``: answers from the model (and its adapter) alone."""
    home.mkdir(parents=True, exist_ok=True)
    toml = (f"[server]\nhost = \"127.0.0.1\"\nport = {port}\n\n"
            f"[model]\nsource = {json.dumps(source)}\nmax_new_tokens = {max_new_tokens}\n\n"
            "[council]\nheads = {}\n" + ("" if memory else "memory_k = 0\n"))
    path = home / name
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


def ask_both(server: DemoServer, questions: list[Question], max_tokens: int) -> tuple[list[dict], list[dict]]:
    """Every question, then every rewording (never corrected)."""
    asked = ask_all(server, questions, max_tokens, correct=False)
    reworded = ask_all(server, [replace(q, question=q.reworded) for q in questions if q.reworded], max_tokens,
                       correct=False)
    return asked, reworded


def run_night(config: DemoConfig, settings: Settings, url: str) -> dict[str, Any]:
    """cron.nightly.main on the demo state with the nightly defaults; its summary plus the stage summaries.

    Only what a demo needs differs: the server URL, a short monitoring window filled by probes (the demo's
    questions, so the window sees adapter-answered traffic), and the council size."""
    from cron.config import NightlyConfig
    from cron.nightly import main as nightly_main

    probes = settings.home / "demo_probes.jsonl"
    probes.write_text("".join(json.dumps({"prompt": q.question}) + "\n" for q in config.question_list))
    nightly_main(NightlyConfig(settings=settings, server_url=url, agents=config.agents,
                               window_seconds=config.window_seconds, sample_seconds=2.0, probe_file=str(probes)))
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
    port = config.port or free_port()
    config_file, settings = write_settings(home, config.max_new_tokens, source, port)
    questions, tokens = config.question_list, config.max_tokens
    with DemoServer(home, config_file, settings.server.port, config.start_seconds) as server:
        seconds["server start"] = time.perf_counter() - clock
        mark = time.perf_counter()
        before = ask_all(server, questions, tokens, correct=True)
        seconds["before"] = time.perf_counter() - mark
        mark = time.perf_counter()
        memory, memory_reworded = ask_both(server, questions, tokens)
        seconds["memory"] = time.perf_counter() - mark
        mark = time.perf_counter()
        night = run_night(config, settings, server.url)
        stage_seconds = night["nightly"].get("seconds") or {}
        seconds.update({k: float(stage_seconds[k]) for k in ("harvest", "train", "deploy") if k in stage_seconds})
        seconds["night"] = time.perf_counter() - mark
    off_file, _ = write_settings(home, config.max_new_tokens, source, port, memory=False, name="council-memory-off.toml")
    with DemoServer(home, off_file, port, config.start_seconds) as server:
        serving = server.health().get("adapter")
        mark = time.perf_counter()
        after, after_reworded = ask_both(server, questions, tokens)
        seconds["after"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - clock
    return summarize(config.question_list, config.targets, home, source, server.url, night, serving, seconds,
                     before, (memory, memory_reworded), (after, after_reworded))


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
    with exit_on_sigterm():  # SIGTERM stops the demo's server too, as Ctrl-C does
        return main(config, out=lambda line: sys.stdout.write(line + "\n"))
