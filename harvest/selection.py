"""Which failures one harvest run rewrites.

1. Records with ``success = false`` created in ``[since, until)`` (UTC), not yet harvested and not superseded
   (a correction a newer one of the same question replaced, ``council/memory/corrections.py``: never taught).
2. Ordered by priority: user correction, then thumbs-down or a low rating, then low confidence; within
   a class the lowest confidence first, then the oldest, then by id (deterministic).
3. Near-duplicate queries are collapsed: walking that order, a record whose stored query embedding has a
   cosine similarity >= ``dedupe_similarity`` with an earlier group's lead joins that group. Only the lead is
   rewritten; the others are marked harvested together with it.
4. At most ``max_records`` groups are taken; the rest stay for a later run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from council.memory.schema import ExchangeRecord

PRIORITY = {"correction": 0, "thumbs_down": 1, "low_rating": 1, "low_confidence": 2}
SOURCE_LABEL = {"correction": "correction", "thumbs_down": "thumbs_down", "low_rating": "thumbs_down",
                "low_confidence": "low_confidence"}


def source_label(record: ExchangeRecord) -> str:
    """JSONL ``source``: correction / thumbs_down (a failing 1-5 rating counts as thumbs-down) / low_confidence."""
    return SOURCE_LABEL[record.failure_source or "low_confidence"]


def priority_key(record: ExchangeRecord) -> tuple:
    return (PRIORITY[record.failure_source or "low_confidence"], record.confidence, record.created_at, record.id)


@dataclass
class Group:
    """One query to rewrite (``lead``) and its near-duplicates (marked harvested with it)."""

    lead: ExchangeRecord
    duplicates: list[ExchangeRecord] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [self.lead.id] + [r.id for r in self.duplicates]


@dataclass
class Selection:
    found: int  # un-harvested failures in the window
    groups: list[Group]  # what this run rewrites, best first
    deferred: int  # groups left for a later run (over max_records)

    @property
    def collapsed(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)


def collapse(records: list[ExchangeRecord], vectors: np.ndarray, threshold: float) -> list[Group]:
    """Group ``records`` (already in priority order; row i of ``vectors`` is record i's unit embedding)."""
    groups: list[Group] = []
    leads: list[int] = []
    for i, record in enumerate(records):
        if leads:
            similarities = vectors[leads] @ vectors[i]
            best = int(np.argmax(similarities))
            if similarities[best] >= threshold:
                groups[best].duplicates.append(record)
                continue
        leads.append(i)
        groups.append(Group(record))
    return groups


def select(store, since: datetime, until: datetime, max_records: int, dedupe_similarity: float) -> Selection:
    """Read the window from ``store`` (a ``council.memory.store.MemoryStore``) and pick this run's groups."""
    records = sorted((r for r in store.window(since, until, success=False, harvested=False) if not r.superseded_by),
                     key=priority_key)
    if not records:
        return Selection(0, [], 0)
    vectors = np.asarray(store.vectors([r.id for r in records]), dtype=np.float32)
    groups = collapse(records, vectors, dedupe_similarity)
    return Selection(len(records), groups[:max_records], max(0, len(groups) - max_records))


def parse_when(text: str) -> datetime:
    """``2026-11-22`` (midnight UTC) or an ISO date-time; naive times are UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO date or date-time; use e.g. 2026-11-22 or 2026-11-22T06:00") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_window(now: datetime) -> tuple[datetime, datetime]:
    """Every failure not yet harvested, up to ``now``: [1970-01-01, now). Harvested records are marked, so
    the marks, not the window, keep a night from repeating work."""
    return EPOCH, now


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
