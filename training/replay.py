"""Which earlier nights' lines a night trains on again beside its own: a bounded sample, forgetting first.

Continuing an adapter on new facts alone makes a small model forget the old ones (Zucchet et al., COLM 2025),
so a continuing night replays earlier nights' harvest lines. Replaying all of them makes a night's cost grow
with history (after a year of 50 corrections a night, ~18,000 facts' lines every night; issue 28), so a night
replays at most ``TrainConfig.replay_ratio`` × its own training lines (default 0.5: with rehearsal the same
every night, night k trains at most ~1.5× night 1's lines), chosen **record by record** (whole records; the
last one chosen may be cut short to fit, its correction line first):

1. records whose held-out probe the live adapter, or the last candidate, got wrong in the last deploy's
   retention gate (``logs/deploy_summary.json``, ``deploy/retention.py``): what is being forgotten comes back
   first (a candidate refused for forgetting shows what continuing the same parent loses);
2. then the records replayed longest ago (never replayed first; then the oldest night's), so every earlier
   record comes back at least once every ceil(records / budget) nights — spaced rehearsal, the schedule of
   experience replay's "reservoir" made deterministic (Rolnick et al., NeurIPS 2019, CLEAR).

Within a record its lines go in a fixed order (the user's correction first, then the council's paraphrases,
statements and reverse question). Training a tainted parent's replacement from the base model
(``council/memory/unlearning.py``) replays every line left: no adapter knows them yet, so nothing is bounded
there (``--fresh`` trains on the new lines alone, as before).
``replay_ratio`` 0 (or below 0: "all") keeps the old behaviour for comparison (``bench/nights_bench.py``).

State: ``training_data/replay.json`` ``{"night": n, "records": {record_id: night last replayed}}``, written
when the version is published (under the erasure lock, without records erased meanwhile); erasing a record
drops its entry (``council/memory/erasure.py`` scrubs the file like the logs).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from council.core.atomic import atomic_write_json
from council.core.paths import StatePaths
from council.memory.erasure import REPLAY_STATE
from council.memory.scope_files import SCOPE_MAP
from training.data import HarvestData, consumed_files, read_harvest, record_of

log = logging.getLogger(__name__)


@dataclass
class Replay:
    """Tonight's replayed lines, the records the memory held as they were read (``scope_cuts.held_records``),
    and the replay state to write once the version is published (``save_state``)."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    held: set[str] = field(default_factory=set)
    state: dict[str, Any] | None = None


def learned_by(parent: Path | None) -> set[str]:
    """The records the adapter in ``parent`` was trained on, its ancestors' included (its ``scope.json``
    names each row's records; none for the base model or a folder without the map)."""
    if parent is None:
        return set()
    try:
        rows = json.loads((parent / SCOPE_MAP).read_text(encoding="utf-8")).get("rows")
    except (OSError, ValueError, AttributeError):
        return set()
    return {record_of({"record_id": r}) for row in rows if isinstance(row, dict)
            for r in row.get("records") or [] if isinstance(r, str)} if isinstance(rows, list) else set()


def superseded(paths: StatePaths) -> set[str]:
    """The records a newer correction of the same question replaced (never trained: they teach the old value)."""
    from council.memory.store import superseded_records

    return superseded_records(paths.memory)


def replay_examples(paths: StatePaths, data: HarvestData, min_quality: float, ratio: float, new_lines: int,
                    continuing: bool, learned_before: list[dict[str, Any]] | None = None,
                    replaced: set[str] | None = None) -> Replay:
    """Training lines of the harvest files earlier nights consumed (not held out, not in ``data``), bounded
    as the module docstring says. Lines of a superseded correction (a newer correction of the same question
    replaced their record: ``council/memory/corrections.py``) are left out: they would teach the old value.
    Read under the erasure lock, with the records the memory holds (an erasure from then on is applied when the
    version is published: ``council/memory/scope_cuts.py``). ``learned_before``: lines of tonight's files the
    live adapter already learned (a day's file that grew after a night consumed it); they join the pool.
    ``replaced``: the superseded records when the caller has read them (``superseded``), else read here."""
    from council.memory.erasure import erasure_lock
    from council.memory.scope_cuts import held_records
    new_files = {Path(f.path).name for f in data.files}
    again = [e for e in learned_before or [] if e.get("held_out") is not True]
    with erasure_lock(paths):
        files = [p for p in consumed_files(paths.training_data) if p.name not in new_files]
        if not files and not again:
            return Replay()
        ids = {e["record_id"] for e in data.examples}
        replaced = superseded(paths) if replaced is None else replaced
        old = [e for e in read_harvest(files, min_quality).examples if e.get("held_out") is not True
               and e["record_id"] not in ids and record_of(e) not in replaced] if files else []
        held = held_records(paths, [e["record_id"] for e in old])
    old += again  # their records were noted as held when tonight's files were read (training/main.py)
    live = paths.current_adapter.resolve().name if paths.current_adapter.is_symlink() else None
    lines, state = bounded(old, new_lines, ratio, paths.training_data, paths.logs, live, continuing)
    log.info("replaying %d line(s) beside the new ones (%d earlier file(s), %d line(s) of tonight's files the live "
             "adapter already learned)", len(lines), len(files), len(again))
    return Replay(lines, held & {record_of(line) for line in lines}, state)


def read_state(training_data: Path) -> dict[str, Any]:
    """``{"night", "records"}``; a missing or malformed file (or entry) is an empty state, never an error."""
    try:
        data = json.loads((training_data / REPLAY_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    data = data if isinstance(data, dict) else {}
    night = data.get("night") if isinstance(data.get("night"), int) else 0
    records = data.get("records") if isinstance(data.get("records"), dict) else {}
    return {"night": night, "records": {str(k): v for k, v in records.items() if isinstance(v, int)}}


def save_state(training_data: Path, state: dict[str, Any] | None, erased: set[str]) -> None:
    """Write ``state`` (from ``bounded``) without the ``erased`` records; under the erasure lock, at publish."""
    if state is not None:
        records = {k: v for k, v in state["records"].items() if k not in erased}
        atomic_write_json(training_data / REPLAY_STATE, {"night": state["night"], "records": records})


def forgotten_records(logs: Path, live: str | None) -> set[str]:
    """Records whose retention probe (``deploy/retention.py``) was answered wrong at the last deploy by the
    adapter serving now (``live``) or by the candidate — a refused candidate trained from the same parent shows
    what continuing it tends to forget, so those records come back first tonight."""
    try:
        summary = json.loads((logs / "deploy_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    retention = summary.get("retention") if isinstance(summary, dict) else None
    if not isinstance(retention, dict):
        return set()
    out: set[str] = set()
    for side in ("candidate", "baseline"):
        result = retention.get(side)
        for case in (result.get("cases") if isinstance(result, dict) else None) or []:
            if not isinstance(case, dict) or case.get("right") or not case.get("record"):
                continue
            if side == "candidate" or (live is not None and case.get("adapter") == live):
                out.add(str(case["record"]))
    return out


def _line_order(line: dict[str, Any]) -> tuple[int, str]:
    kinds = {None: 0, "paraphrase": 1, "statement": 2, "reverse": 3}
    return kinds.get(line.get("kind"), 4), str(line.get("instruction", ""))


def choose(old: list[dict[str, Any]], budget: int, forgotten: set[str],
           last_replayed: dict[str, int]) -> list[dict[str, Any]]:
    """Up to ``budget`` lines of ``old`` (every earlier night's usable lines, oldest file first), whole records
    in the order the module docstring gives; a record that does not fit whole gives its first lines."""
    by_record: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for position, line in enumerate(old):
        by_record[record_of(line)].append({**line, "_position": position})
    first_seen = {record: lines[0]["_position"] for record, lines in by_record.items()}
    order = sorted(by_record, key=lambda r: (r not in forgotten, last_replayed.get(r, -1), first_seen[r]))
    chosen: list[dict[str, Any]] = []
    for record in order:
        if len(chosen) >= budget:
            break
        lines = sorted(by_record[record], key=_line_order)
        chosen += lines[: budget - len(chosen)]
    return [{k: v for k, v in line.items() if k != "_position"} for line in chosen]


def bounded(old: list[dict[str, Any]], new_lines: int, ratio: float, paths_training_data: Path, logs: Path,
            live: str | None, continuing: bool) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The lines to replay tonight and the replay state after it (to ``save_state`` once published); every
    line when not ``continuing`` or ``ratio`` <= 0."""
    if not old:
        return [], None
    state = read_state(paths_training_data)
    if continuing and ratio > 0:
        budget = max(1, math.ceil(ratio * new_lines))
        forgotten = forgotten_records(logs, live)
        lines = choose(old, budget, forgotten, state["records"])
        log.info("replaying %d of %d earlier line(s) (budget %d = %.2f x %d new; %d record(s) the live adapter "
                 "forgot first)", len(lines), len(old), budget, ratio, new_lines, len(forgotten & {record_of(x) for x in old}))
    else:
        lines = old
    night = state["night"] + 1
    records = {str(k): int(v) for k, v in state["records"].items()}
    records.update({record_of(line): night for line in lines})
    return lines, {"night": night, "records": records}
