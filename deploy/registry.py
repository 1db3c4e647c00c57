"""The adapter registry: the versions in ``<home>/loras/`` with their metadata and deploy state.

The ``loras/current`` symlink is the truth about what is served; ``loras/registry.json``
(``{current, previous, failed: [...], deployed: [...], reasons: {version: why}}``, written atomically)
remembers the history around it. ``council adapters`` lists the versions::

    council adapters            # table: version, created, parent, train/val loss, state (and taint)
    council adapters --json     # the same as JSON lines
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from council.core.atomic import atomic_write_json
from council.core.config import Settings
from council.core.errors import AdapterError, CouncilError
from council.core.exitcodes import FAILURE, OK
from council.engine.adapter_files import check_adapter_folder

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
CURRENT_LINK = "current"
STATES = ("current", "previous", "failed", "deployed", "new")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class AdapterInfo:
    """One ``loras/<version>/`` folder."""

    version: str
    path: Path
    metadata: dict[str, Any]
    problem: str | None  # why the folder is not a complete adapter, None when it is
    state: str = "new"
    replaced_by: str | None = None  # a tainted version: the first clean version deployed after it was tainted

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def created(self) -> str:
        return str(self.metadata.get("created_at") or "")

    @property
    def parent(self) -> str | None:
        return self.metadata.get("parent")

    def last_loss(self, split: str) -> float | None:
        losses = (self.metadata.get("loss") or {}).get(split) or []
        return float(losses[-1]) if losses else None

    def row(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "parent": self.parent,
            "train_loss": self.last_loss("train"),
            "val_loss": self.last_loss("validation"),
            "state": self.state,
            "problem": self.problem,
            "examples": self.examples,
            "learned": self.learned,
            "tainted": self.tainted,
            "replaced_by": self.replaced_by,
        }

    @property
    def tainted(self) -> dict[str, Any] | None:
        """``{"at", "records"}`` when it learned from erased records (``council/memory/unlearning.py``)."""
        mark = self.metadata.get("tainted")
        return mark if isinstance(mark, dict) else None

    @property
    def examples(self) -> int | None:
        """Harvested examples it was trained on (rehearsal and validation not counted)."""
        return (self.metadata.get("examples") or {}).get("train")

    @property
    def learned(self) -> list[dict[str, str]]:
        """The harvested questions it was taught, each with the answer it learned."""
        return list(self.metadata.get("learned") or [])


def read_adapter(folder: Path) -> AdapterInfo:
    """Describe ``folder``; a missing or unreadable ``metadata.json`` is reported in ``problem``."""
    problem: str | None = None
    metadata: dict[str, Any] = {}
    try:
        check_adapter_folder(folder)
    except AdapterError as exc:
        problem = exc.message
    meta_path = folder / "metadata.json"
    try:
        loaded = json.loads(meta_path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            metadata = loaded
        else:
            problem = problem or f"{meta_path} is not a JSON object"
    except FileNotFoundError:
        problem = problem or f"{folder} has no metadata.json"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = problem or f"{meta_path} is not valid JSON: {exc}"
    return AdapterInfo(folder.name, folder, metadata, problem)


@dataclass
class RegistryState:
    current: str | None = None
    previous: str | None = None
    failed: list[str] = field(default_factory=list)
    deployed: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    updated_at: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryState:
        return cls(
            current=data.get("current"),
            previous=data.get("previous"),
            failed=[str(v) for v in data.get("failed") or []],
            deployed=[str(v) for v in data.get("deployed") or []],
            reasons={str(k): str(v) for k, v in (data.get("reasons") or {}).items()},
            updated_at=str(data.get("updated_at") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "previous": self.previous,
            "failed": self.failed,
            "deployed": self.deployed,
            "reasons": self.reasons,
            "updated_at": self.updated_at,
        }


class Registry:
    """Reads the adapter folders and ``registry.json`` of one ``loras`` folder."""

    def __init__(self, loras: Path) -> None:
        self.loras = Path(loras)

    @property
    def link(self) -> Path:
        return self.loras / CURRENT_LINK

    @property
    def file(self) -> Path:
        return self.loras / REGISTRY_FILE

    def folder(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or version == CURRENT_LINK:
            raise ValueError(f"{version!r} is not an adapter version; list them with `council adapters`")
        return self.loras / version

    def linked_version(self) -> str | None:
        """The version ``loras/current`` names, or None (no link = the bare base model)."""
        if not self.link.is_symlink():
            if self.link.exists():
                raise CouncilError(f"{self.link} is not a symlink; move it away so deploy can manage it")
            return None
        return Path(os.readlink(self.link)).name

    def load(self) -> RegistryState:
        """registry.json reconciled with the link (the link wins if a crash left them apart)."""
        state = RegistryState()
        if self.file.is_file():
            try:
                state = RegistryState.from_dict(json.loads(self.file.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                log.warning("%s is unreadable (%s); rebuilding it from the current link", self.file, exc)
        linked = self.linked_version()
        if linked != state.current:
            log.warning("registry.json says current=%s but loras/current names %s; trusting the link",
                        state.current, linked)
            if state.current is not None:
                state.previous = state.current
            state.current = linked
            if linked is not None and linked not in state.deployed:
                state.deployed.append(linked)
        return state

    def save(self, state: RegistryState) -> None:
        state.updated_at = utc_now()
        atomic_write_json(self.file, state.to_dict())

    def versions(self) -> list[AdapterInfo]:
        """Every adapter folder, oldest first, each with its state."""
        if not self.loras.is_dir():
            return []
        state = self.load()
        infos = []
        for entry in sorted(self.loras.iterdir()):
            if entry.name.startswith(".") or entry.name == CURRENT_LINK or entry.is_symlink() or not entry.is_dir():
                continue
            info = read_adapter(entry)
            info.state = self.state_of(info.version, state)
            infos.append(info)
        clean = [i for i in infos if not i.tainted and i.state in ("current", "previous", "deployed")]
        for info in infos:
            if info.tainted:
                info.replaced_by = next((i.version for i in clean if i.created > str(info.tainted.get("at"))), None)
        return infos

    @staticmethod
    def state_of(version: str, state: RegistryState) -> str:
        if version == state.current:
            return "current"
        if version in state.failed:
            return "failed"
        if version == state.previous:
            return "previous"
        if version in state.deployed:
            return "deployed"
        return "new"

    def last_good(self, state: RegistryState, exclude: set[str]) -> str | None:
        """The most recently deployed version that has not failed and is still complete on disk."""
        for version in reversed(state.deployed):
            if version in exclude or version in state.failed:
                continue
            if read_adapter(self.loras / version).complete:
                return version
        return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _taint(info: AdapterInfo) -> str:
    if not info.tainted:
        return ""
    replaced = f", replaced by {info.replaced_by}" if info.replaced_by else ", not yet replaced"
    return f" TAINTED since {str(info.tainted.get('at'))[:19]} ({info.tainted.get('records')} erased){replaced}"


LEARNED_SHOWN = 5  # questions listed per version in the table view


def format_table(infos: list[AdapterInfo]) -> str:
    header = ("VERSION", "CREATED", "PARENT", "EXAMPLES", "TRAIN LOSS", "VAL LOSS", "STATE")
    rows = [
        (
            i.version,
            i.created[:19] or "-",
            i.parent or "-",
            "-" if i.examples is None else str(i.examples),
            _fmt(i.last_loss("train")),
            _fmt(i.last_loss("validation")),
            i.state + (f" (incomplete: {i.problem})" if i.problem else "") + _taint(i),
        )
        for i in infos
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    for info in infos:
        if info.learned:
            lines.append(f"\n{info.version} learned:")
            lines += [f"  {item['question'][:70]!r} -> {item['answer'][:60]!r}" for item in info.learned[:LEARNED_SHOWN]]
            if len(info.learned) > LEARNED_SHOWN:
                lines.append(f"  … and {len(info.learned) - LEARNED_SHOWN} more (council adapters --json)")
    return "\n".join(lines) + "\n"


def cli_list(argv: list[str], settings: Settings) -> int:
    """``council adapters [--json]``: list the adapter versions in ``<home>/loras``."""
    parser = argparse.ArgumentParser(prog="council adapters", description="List the LoRA adapter versions.")
    parser.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")
    args = parser.parse_args(argv)
    registry = Registry(settings.paths.loras)
    try:
        infos = registry.versions()
    except CouncilError as exc:
        sys.stderr.write(f"council adapters: {exc.message}\n")
        return FAILURE
    if args.json:
        for info in infos:
            sys.stdout.write(json.dumps(info.row()) + "\n")
        return OK
    if not infos:
        sys.stdout.write(f"no adapters in {settings.paths.loras} (the base model is served)\n")
        return OK
    sys.stdout.write(format_table(infos))
    current = registry.linked_version()
    sys.stdout.write(f"serving: {current or 'the base model'}\n")
    return OK
