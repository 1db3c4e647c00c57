"""Adapter version folders on disk (design contract "Adapters on disk") and the files written beside them.

A run trains into ``loras/.tmp-<version>/`` and renames it to ``loras/<version>/`` only when every file is
written and synced, so deploy never sees a half-written adapter. A lock file keeps two runs apart, which
makes any ``.tmp-*`` folder found at start a leftover of a killed run, safe to delete.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from council.core.atomic import atomic_write_json, fsync_path
from council.core.locks import exclusive
from council.engine.adapter_files import check_adapter_folder
from council.engine.model_files import BaseModel
from training.data import CONSUMED_FILE, DatasetFile, read_consumed
from training.errors import TrainingError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
LOCK_FILE = ".train.lock"


def new_version(now: datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS-<6 hex>`` in UTC: sortable and unique."""
    return f"{(now or datetime.now(UTC)).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@contextmanager
def training_lock(loras: Path) -> Iterator[None]:
    """Hold ``loras/.train.lock`` for the whole run; the OS drops it if the process dies.

    Raises TrainingError at once when another run holds it.
    """
    with exclusive(loras / LOCK_FILE) as held:
        if not held:
            raise TrainingError(f"another `council train` is running (it holds {loras / LOCK_FILE}); try later")
        yield


def clean_stale(loras: Path) -> list[str]:
    """Delete ``.tmp-*`` folders left by killed runs (call with the lock held)."""
    removed = []
    for path in sorted(loras.glob(f"{TMP_PREFIX}*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    if removed:
        log.warning(
            "removed %d unfinished training folder(s) from an earlier run: %s",
            len(removed),
            ", ".join(removed),
        )
    return removed


def publish(tmp: Path, final: Path) -> None:
    """Sync every file in ``tmp`` and rename it to ``final`` in one step."""
    for path in tmp.iterdir():
        if path.is_file():
            fsync_path(path)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def find_parent(current: Path, base: BaseModel) -> Path | None:
    """The version folder ``loras/current`` points at, if it is an adapter for ``base``; None = train fresh."""
    if not current.is_symlink() and not current.exists():
        return None
    target = current.resolve()
    check_adapter_folder(target)
    meta_path = target / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log.warning(
            "current adapter %s has no readable metadata.json (%s); training from the base model",
            target.name,
            exc,
        )
        return None
    if meta.get("base_model_fingerprint") != base.fingerprint:
        log.warning(
            "current adapter %s was trained on another base model (%s); training from the base model",
            target.name,
            meta.get("base_model_id"),
        )
        return None
    return target


def write_validation(path: Path, examples: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")


def plot_loss(
    path: Path, train: list[float], validation: list[float], steps: list[float], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    epochs = len(train)
    if steps:
        per_step = [epochs * (i + 1) / len(steps) for i in range(len(steps))]
        axes.plot(per_step, steps, color="tab:blue", alpha=0.35, linewidth=1, label="train (per step)")
    axes.plot(range(1, epochs + 1), train, marker="o", color="tab:blue", label="train (epoch)")
    if validation:
        axes.plot(
            range(1, len(validation) + 1), validation, marker="s", color="tab:orange", label="validation"
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (assistant tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def mark_consumed(training_data: Path, files: list[DatasetFile]) -> list[str]:
    """Record harvest files inside ``training_data`` as trained on (files elsewhere are not tracked)."""
    consumed = read_consumed(training_data)
    names = []
    for item in files:
        path = Path(item.path).resolve()
        if path.parent == training_data.resolve():
            consumed[path.name] = item.sha256
            names.append(path.name)
    if names:
        atomic_write_json(training_data / CONSUMED_FILE, consumed)
    return names
