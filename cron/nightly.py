"""``council nightly``: the improvement loop — harvest → train → deploy → retention cleanup → one summary alert.

Run by cron through ``cron/nightly_improvement.sh`` (crontab example in the README), or by hand::

    council nightly                          # yesterday's failures, server at server.host:server.port
    council nightly --since 2026-11-21 --fresh --window-seconds 120

Each stage is its package's own ``main(config)``; this module only sequences them. A lock
(``<home>/nightly.lock``) refuses a second run while one is going. Preflight needs ``--min-free-gb`` of free
disk and, when a server URL answers nothing, says so (deploy then runs without monitoring). Every stage logs
to ``<home>/logs/nightly-<stamp>/<stage>.log``. "Nothing to do" (exit 3) from a stage is normal and ends
the loop early with exit 0; a real failure exits 1 and alerts. Loop figures go to
``<home>/logs/loop_metrics.json``, which the server exposes on ``/metrics``.

Exit codes: 0 done (also when there was nothing to do), 1 a stage failed, 2 bad arguments,
4 another nightly run holds the lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from council import exitcodes
from council.atomic import atomic_write_json
from council.cliargs import add_config_arguments
from council.config import Settings
from deploy.alerts import PIPELINE_ERROR, TRAINING_DONE, Alerter
from deploy.monitor import ServerClient, default_server_url
from deploy.registry import utc_now

log = logging.getLogger(__name__)
BUSY = 4


@dataclass
class NightlyConfig:
    settings: Settings = field(metadata={"help": "Council settings (home, model, alerts, server)."})
    server_url: str = field(default="", metadata={"help": "Running server to deploy into; empty = from settings."})
    since: str = field(default="", metadata={"help": "Harvest window start (ISO, UTC); empty = yesterday."})
    until: str = field(default="", metadata={"help": "Harvest window end (ISO, UTC, exclusive); empty = today."})
    max_records: int = field(default=50, metadata={"help": "Most failures rewritten in one night."})
    agents: int = field(default=3, metadata={"help": "Agent-0 council members."})
    harvest_models: str = field(default="", metadata={"help": "Comma-separated litellm models for the council "
                                                              "members; empty = harvest's default."})
    fresh: bool = field(default=False, metadata={"help": "Train from the base model instead of the current adapter."})
    epochs: int = field(default=0, metadata={"help": "Training epochs; 0 = the trainer's default."})
    learning_rate: float = field(default=0.0, metadata={"help": "Training learning rate; 0 = the trainer's default."})
    min_examples: int = field(default=5, metadata={"help": "Fewest harvested examples worth a training run."})
    train_threads: int = field(default=0, metadata={"help": "torch threads while training; 0 = model.torch_threads "
                                                            "(raise it when the server is idle at night)."})
    window_seconds: float = field(default=60.0, metadata={"help": "Deploy monitoring window."})
    sample_seconds: float = field(default=10.0, metadata={"help": "Deploy monitoring sample interval."})
    max_p95_latency_ms: float = field(default=1000.0, metadata={"help": "Deploy rolls back above this p95."})
    min_success_rate: float = field(default=0.85, metadata={"help": "Deploy rolls back below this success rate."})
    probe_file: str = field(default="", metadata={"help": "Probe prompts for a window without traffic."})
    min_free_gb: float = field(default=2.0, metadata={"help": "Free disk the state directory needs to start."})
    keep_adapters: int = field(default=5, metadata={"help": "Adapter versions kept (current and previous always)."})
    log_days: int = field(default=14, metadata={"help": "Days of nightly logs kept."})

    def __post_init__(self) -> None:
        if not self.server_url:
            self.server_url = default_server_url(self.settings)
        if self.keep_adapters < 2:
            raise ValueError("keep_adapters must be >= 2 so the current and previous adapters survive cleanup")
        if self.train_threads < 0:
            raise ValueError("train_threads must be >= 0 (0 = model.torch_threads)")
        if self.min_free_gb < 0 or self.log_days < 1:
            raise ValueError("min_free_gb must be >= 0 and log_days >= 1")


@contextmanager
def nightly_lock(home: Path) -> Iterator[bool]:
    """An flock on ``<home>/nightly.lock``; yields False when another run holds it (released by the OS on death)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "nightly.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def stage_log(folder: Path, stage: str) -> Iterator[None]:
    """Send every log record of the stage to ``<folder>/<stage>.log`` too."""
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"{stage}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(min(previous_level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def preflight(config: NightlyConfig) -> tuple[str | None, dict[str, Any]]:
    """Why the loop must not start (or None), and what was checked."""
    free_gb = shutil.disk_usage(config.settings.home).free / 1e9
    checks: dict[str, Any] = {"free_gb": round(free_gb, 2)}
    if free_gb < config.min_free_gb:
        return f"only {free_gb:.1f} GB free in {config.settings.home}; need {config.min_free_gb} GB", checks
    health = ServerClient(config.server_url, config.settings.server.api_key).health()
    checks["server"] = {"url": config.server_url, "healthy": health is not None,
                        "adapter": (health or {}).get("adapter")}
    if health is None:
        log.warning("no server answers at %s; the deploy will not be confirmed or monitored", config.server_url)
    return None, checks


def _harvest(config: NightlyConfig) -> int:
    from harvest.main import HarvestConfig
    from harvest.main import main as harvest_main

    extra = {"models": [m.strip() for m in config.harvest_models.split(",") if m.strip()]}
    return harvest_main(HarvestConfig(settings=config.settings, since=config.since or None,
                                      until=config.until or None, max_records=config.max_records,
                                      agents=config.agents, **(extra if extra["models"] else {})))


def _train(config: NightlyConfig) -> int:
    from training.main import TrainConfig
    from training.main import main as train_main

    overrides: dict[str, Any] = {"fresh": config.fresh, "min_examples": config.min_examples}
    if config.epochs:
        overrides.update(epochs=config.epochs, incremental_epochs=config.epochs)
    if config.learning_rate:
        overrides.update(learning_rate=config.learning_rate, incremental_learning_rate=config.learning_rate)
    if config.train_threads:
        overrides["torch_threads"] = config.train_threads
    return train_main(TrainConfig.from_settings(config.settings, **overrides))


def _deploy(config: NightlyConfig) -> int:
    from deploy.main import DeployConfig
    from deploy.main import main as deploy_main

    return deploy_main(DeployConfig(settings=config.settings, server_url=config.server_url,
                                    window_seconds=config.window_seconds, sample_seconds=config.sample_seconds,
                                    max_p95_latency_ms=config.max_p95_latency_ms,
                                    min_success_rate=config.min_success_rate, probe_file=config.probe_file))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _newest_metadata(loras: Path) -> dict[str, Any]:
    folders = sorted(p for p in loras.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "current")
    return _read_json(folders[-1] / "metadata.json") if folders else {}


def update_loop_metrics(paths: Any, stages: dict[str, int], started: float) -> dict[str, Any]:
    """Fold tonight's figures into ``logs/loop_metrics.json`` (counters accumulate, gauges overwrite)."""
    metrics = _read_json(paths.logs / "loop_metrics.json")
    harvest = _read_json(paths.logs / "harvest_last.json")
    if "harvest" in stages and harvest:
        attempted = harvest.get("attempted") or harvest.get("rewritten") or 0
        kept = harvest.get("kept", 0)
        if attempted:
            metrics["agent0_rewrite_success_rate"] = round(kept / attempted, 4)
        if harvest.get("mean_quality") is not None:
            metrics["harvest_mean_quality"] = harvest["mean_quality"]
    if stages.get("train") == exitcodes.OK:
        meta = _newest_metadata(paths.loras)
        metrics["training_completed_total"] = metrics.get("training_completed_total", 0) + 1
        metrics["training_duration_seconds"] = meta.get("duration_seconds", 0.0)
        losses = (meta.get("loss") or {}).get("train") or []
        if losses:
            metrics["training_loss"] = losses[-1]
    if "deploy" in stages:
        summary = _read_json(paths.logs / "deploy_summary.json")
        decision = summary.get("decision")
        if decision == "deployed":
            metrics["deployment_success_total"] = metrics.get("deployment_success_total", 0) + 1
        if decision == "rolled_back":
            metrics["rollbacks_triggered_total"] = metrics.get("rollbacks_triggered_total", 0) + 1
        evaluation = summary.get("eval") or {}
        if evaluation.get("candidate_loss") and evaluation.get("baseline_loss"):
            metrics["quality_improvement_ratio"] = round(evaluation["baseline_loss"] / evaluation["candidate_loss"], 4)
    metrics["nightly_last_run_seconds"] = round(time.time() - started, 2)
    metrics["nightly_last_run_timestamp"] = time.time()
    atomic_write_json(paths.logs / "loop_metrics.json", metrics)
    return metrics


def cleanup(config: NightlyConfig) -> dict[str, Any]:
    """Keep the newest ``keep_adapters`` versions (never current/previous) and ``log_days`` of nightly logs."""
    from deploy.registry import Registry

    registry = Registry(config.settings.paths.loras)
    state = registry.load()
    protected = {state.current, state.previous}
    versions = sorted(info.version for info in registry.versions())
    removed = [v for v in versions[: max(0, len(versions) - config.keep_adapters)] if v not in protected]
    for version in removed:
        shutil.rmtree(registry.folder(version), ignore_errors=True)
    cutoff = time.time() - config.log_days * 86400
    old_logs = [p for p in config.settings.paths.logs.glob("nightly-*") if p.is_dir() and p.stat().st_mtime < cutoff]
    for folder in old_logs:
        shutil.rmtree(folder, ignore_errors=True)
    return {"adapters_removed": removed, "log_folders_removed": len(old_logs)}


STAGES: list[tuple[str, Callable[[NightlyConfig], int]]] = [("harvest", _harvest), ("train", _train),
                                                            ("deploy", _deploy)]


def _run(config: NightlyConfig, summary: dict[str, Any]) -> int:
    paths = config.settings.paths.ensure()
    logs = paths.logs / f"nightly-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    reason, summary["preflight"] = preflight(config)
    if reason:
        summary.update(result="failed", reason=f"preflight: {reason}")
        return exitcodes.FAILURE
    for stage, run in STAGES:
        started = time.perf_counter()
        with stage_log(logs, stage):
            code = run(config)
        summary["stages"][stage] = code
        summary["seconds"][stage] = round(time.perf_counter() - started, 1)
        if stage == "train" and code == exitcodes.OK:
            meta = _newest_metadata(paths.loras)
            Alerter(config.settings.alerts).send(TRAINING_DONE, f"Trained adapter {meta.get('version')}", {
                "examples": (meta.get("examples") or {}).get("train"), "loss": (meta.get("loss") or {}).get("train"),
                "seconds": meta.get("duration_seconds")})
        if code == exitcodes.NOTHING_TO_DO:
            summary.update(result="nothing_to_do", reason=f"{stage}: nothing to do")
            return exitcodes.OK
        if code != exitcodes.OK:
            summary.update(result="failed", reason=f"{stage} exited {code}; see {logs / (stage + '.log')}")
            return exitcodes.FAILURE
    summary.update(result="improved", reason="harvested, trained and deployed")
    return exitcodes.OK


def main(config: NightlyConfig) -> int:
    """Run the loop once under the lock; writes logs/nightly_summary.json and sends one summary alert."""
    started = time.time()
    summary: dict[str, Any] = {"started_at": utc_now(), "stages": {}, "seconds": {}}
    with nightly_lock(config.settings.home) as held:
        if not held:
            log.error("another `council nightly` is running (lock %s); not starting a second one",
                      config.settings.home / "nightly.lock")
            return BUSY
        code = _run(config, summary)
        summary["cleanup"] = cleanup(config)
        summary["metrics"] = update_loop_metrics(config.settings.paths, summary["stages"], started)
    summary.update(exit_code=code, finished_at=utc_now(), seconds_total=round(time.time() - started, 1))
    atomic_write_json(config.settings.paths.logs / "nightly_summary.json", summary)
    alerter = Alerter(config.settings.alerts)
    fields = {"stages": summary["stages"], "seconds": summary["seconds"], "reason": summary.get("reason")}
    if code == exitcodes.OK:
        alerter.send("nightly_summary", f"Nightly loop: {summary.get('result')}", fields)
    else:
        alerter.send(PIPELINE_ERROR, "Nightly loop failed", fields)
    return code


def cli(argv: list[str], settings: Settings) -> int:
    """``council nightly [--option value ...]``; options mirror NightlyConfig's fields."""
    parser = argparse.ArgumentParser(prog="council nightly", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, NightlyConfig)
    try:
        config = NightlyConfig(settings=settings, **vars(parser.parse_args(argv)))
    except ValueError as exc:
        sys.stderr.write(f"council nightly: {exc}\n")
        return exitcodes.USAGE
    code = main(config)
    summary = _read_json(settings.paths.logs / "nightly_summary.json")
    if code == BUSY:
        sys.stderr.write("council nightly: another nightly run is in progress; refusing to start a second one\n")
    else:
        sys.stdout.write(f"nightly: {summary.get('result')} ({summary.get('reason')}); stages {summary.get('stages')}; "
                         f"{summary.get('seconds_total')} s\n")
    return code
