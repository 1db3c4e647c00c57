"""Harvest's files: the training JSONL pair per day and the last-run summary, all written atomically.

``training_data/harvest_YYYYMMDD.jsonl`` (YYYYMMDD = the UTC day the failed exchange happened), one line per
kept rewrite::

    {"instruction": query, "input": "", "output": rewrite, "reasoning": ..., "quality_score": 0.83,
     "record_id": ..., "votes": {"for": 2, "cast": 3, "ballots": [1, 1, 2]}, "models": [member models],
     "source": "correction" | "thumbs_down" | "low_confidence", "created_at": ISO time of the harvest,
     "tools": [...], "response_format": {...}}   # the last two only when the request had them

A line whose request offered tools is trained under the system prompt it was served with, tools included
(``training/data.py``): a corrected tool call is taught as the call the model writes (``<tool_call>...``).

A kept user correction is followed by the lines ``harvest.augment`` wrote for it, each with ``record_id``
``<record id>#<kind><n>``, ``source_record_id`` (the exchange), ``kind`` (paraphrase | statement |
reverse), ``correction`` (the user's words, what a right answer must contain) and ``held_out`` (true: not
trained on; the deploy asks it as an in-scope probe and scores validation loss on it). A statement is
the answer to one of the trained paraphrases (so every prompt has one target); the reverse question is
answered by its own sentence. When statements outnumber the trained paraphrases, the first one left over
becomes the main line's ``output``: a fact restated with its subject ("The Zorblax 3000's mascot is a
pangolin named Pim.") carries to new wordings better than the bare answer ("A pangolin named Pim").

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
from typing import TYPE_CHECKING, Any

from council.core.atomic import atomic_write_json, atomic_write_lines
from council.memory.schema import ExchangeRecord, to_iso, utcnow

if TYPE_CHECKING:
    from harvest.augment import Augmented
    from harvest.council import Outcome


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


def asked_with(record: ExchangeRecord) -> dict[str, Any]:
    """What a line keeps of the request it came from: its ``tools`` (trained as offered under tool_choice
    "auto") and ``response_format``, so the line is trained under the prompt it was asked with."""
    kept: dict[str, Any] = {}
    if record.tools:
        kept["tools"] = record.tools
    if record.response_format:
        kept["response_format"] = record.response_format
    return kept


def kept_rows(record: ExchangeRecord, source: str, query: str, bad: str, correction: str | None,
              outcome: Outcome, models: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The harvest line and the DPO line of one kept winner (texts already redacted)."""
    winner = outcome.winner
    harvest_row = {"instruction": query, "input": "", "output": winner.answer, "reasoning": winner.reasoning,
                   "quality_score": winner.quality, "record_id": record.id, "votes": outcome.votes,
                   "models": models, "source": source, "created_at": to_iso(utcnow())}
    if correction:
        harvest_row["correction"] = correction
    harvest_row.update(asked_with(record))
    dpo_row = {"prompt": query, "chosen": winner.answer, "rejected": bad, "record_id": record.id}
    return harvest_row, dpo_row


def held_out_count(paraphrases: int) -> int:
    """Paraphrases of one fact kept out of training: one from 2, two from 5 (the rest teach)."""
    return (paraphrases >= 2) + (paraphrases >= 5)


def augmented_rows(main: dict[str, Any], correction: str, extra: Augmented) -> list[dict[str, Any]]:
    """The extra lines for a kept correction whose main line is ``main`` (see the module docstring)."""
    base = {k: main[k] for k in ("input", "quality_score", "models", "source", "created_at", "tools",
                                 "response_format") if k in main}
    source_id = main["record_id"]

    def row(kind: str, n: int, question: str, answer: str, held_out: bool = False) -> dict[str, Any]:
        return {**base, "instruction": question, "output": answer, "reasoning": "", "kind": kind,
                "record_id": f"{source_id}#{kind[0]}{n}", "source_record_id": source_id,
                "correction": correction, "held_out": held_out}

    held = held_out_count(len(extra.paraphrases))
    taught = extra.paraphrases[held:]
    rows = [row("paraphrase", i, p, main["output"], held_out=True) for i, p in enumerate(extra.paraphrases[:held])]
    for j, question in enumerate(taught):
        if j < len(extra.statements):
            rows.append(row("statement", j, question, extra.statements[j]))
        else:
            rows.append(row("paraphrase", held + j, question, main["output"]))
    leftover = extra.statements[len(taught):]
    if leftover:  # no paraphrase left to take it: the original question is answered in that full sentence
        main["output"] = leftover[0]
    if extra.reverse is not None:
        rows.append(row("reverse", 0, *extra.reverse))
    return rows
