"""The stages of ``council nightly``: each package's ``main(config)`` called with NightlyConfig's options, what
work earlier nights left each one (``pending``), and the retention cleanup that ends every night.

A stage returns its package's exit code (0 done, 3 nothing to do, other = failed). Its ``pending`` check reads
the state the stages leave on disk, never changing it: harvest files in ``training_data/`` that
``consumed.json`` does not list with their current hash (``training.data.pending_files``) are training's;
a ``loras/<version>/`` newer than the current one that the registry never deployed nor refused
(``deploy.main.pick_version``) is deploy's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cron.config import NightlyConfig, deploy_config


def _harvest(config: NightlyConfig) -> int:
    from harvest.config import HarvestConfig
    from harvest.main import main as harvest_main

    extra = {"models": [m.strip() for m in config.harvest_models.split(",") if m.strip()]}
    return harvest_main(HarvestConfig(settings=config.settings, since=config.since or None,
                                      until=config.until or None, max_records=config.max_records,
                                      agents=config.agents, **(extra if extra["models"] else {})))


def _train(config: NightlyConfig) -> int:
    from training.config import TrainConfig
    from training.main import main as train_main

    overrides: dict[str, Any] = {"fresh": config.fresh, "min_examples": config.min_examples}
    if config.replay_ratio >= 0:
        overrides["replay_ratio"] = config.replay_ratio
    if config.epochs:
        overrides.update(epochs=config.epochs, incremental_epochs=config.epochs)
    if config.learning_rate:
        overrides.update(learning_rate=config.learning_rate, incremental_learning_rate=config.learning_rate)
    # The harvest's local model left torch on model.torch_threads (1); training takes every core unless told:
    # on 2 cores the demo's night trained at 126 tokens/s on one thread, 222 on two.
    overrides["torch_threads"] = config.train_threads or os.cpu_count() or 1
    return train_main(TrainConfig.from_settings(config.settings, **overrides))


def _deploy(config: NightlyConfig) -> int:
    from deploy.main import main as deploy_main

    return deploy_main(deploy_config(config))


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


def pending_training(config: NightlyConfig) -> str | None:
    """Why training has work an earlier night left (harvest files never trained on), or None."""
    from training.data import pending_files

    files = pending_files(config.settings.paths.training_data)
    return f"{len(files)} harvest file(s) never trained on: {', '.join(p.name for p in files)}" if files else None


def pending_deploy(config: NightlyConfig) -> str | None:
    """Why deploy has work an earlier night left (an adapter trained but never deployed nor refused), or None."""
    from deploy.main import pick_version
    from deploy.registry import Registry

    registry = Registry(config.settings.paths.loras)
    version = pick_version(registry.versions(), registry.load())
    return f"adapter {version} was trained but never deployed" if version else None


@dataclass(frozen=True)
class Stage:
    """One step of the loop: ``run`` returns its exit code; ``pending`` says what work earlier nights left it."""

    name: str
    run: Callable[[NightlyConfig], int]
    pending: Callable[[NightlyConfig], str | None] | None = None


STAGES = (Stage("harvest", _harvest), Stage("train", _train, pending_training),
          Stage("deploy", _deploy, pending_deploy))
