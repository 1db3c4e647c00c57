"""Harvest's files: the training JSONL pair per day and the last-run summary, all written atomically.

``training_data/harvest_YYYYMMDD.jsonl`` (YYYYMMDD = the UTC day the failed exchange happened), one line per
kept rewrite::

    {"instruction": query, "input": "", "output": rewrite, "reasoning": ..., "quality_score": 0.83,
     "record_id": ..., "votes": {"for": 2, "cast": 3, "ballots": [1, 1, 2]}, "models": [member models],
     "source": "correction" | "thumbs_down" | "low_confidence", "created_at": ISO time of the harvest}

``training_data/dpo_YYYYMMDD.jsonl``: TRL preference format ``{"prompt", "chosen", "rejected"}`` plus
``record_id`` (for de-duplication; TRL ignores extra columns).

``append_jsonl`` reads the existing file, adds only rows whose ``record_id`` is new, writes everything to a
temp file in the same folder, fsyncs it and ``os.replace``s it over the old one, so a crash leaves either
the old or the new file. The dpo file is written before the harvest file: a record counts as written once
its line is in the harvest file.
"""

from __future__ import annotations

import itertools
import json
from datetime import date
from pathlib import Path
from typing import Any

from council.atomic import atomic_write_json, atomic_write_lines


def harvest_path(folder: Path, day: date) -> Path:
    return folder / f"harvest_{day:%Y%m%d}.jsonl"


def dpo_path(folder: Path, day: date) -> Path:
    return folder / f"dpo_{day:%Y%m%d}.jsonl"


def _existing(path: Path) -> tuple[list[str], set[str]]:
    """Lines of ``path`` (kept verbatim) and the record ids they carry."""
    if not path.exists():
        return [], set()
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids: set[str] = set()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("record_id"), str):
            ids.add(row["record_id"])
    return lines, ids


def written_ids(path: Path) -> set[str]:
    return _existing(path)[1]


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    """Add the rows whose ``record_id`` is not in ``path`` yet; return how many were added."""
    lines, ids = _existing(path)
    new: list[dict[str, Any]] = []
    for row in rows:
        if row["record_id"] not in ids:
            ids.add(row["record_id"])
            new.append(row)
    if not new:
        return 0
    atomic_write_lines(path, itertools.chain(lines, (json.dumps(row, ensure_ascii=False, allow_nan=False)
                                                    for row in new)))
    return len(new)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data)
