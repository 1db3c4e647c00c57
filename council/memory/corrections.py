"""The corrected exchanges, searched exactly: recall's shared knowledge, kept apart from the index.

A correction may be recalled ahead of successes up to ``CORRECTION_LEAD`` more similar (``recall.py``). Looking
for it among the index's neighbours meant fetching every neighbour within the lead of the k-th success: with many
near-identical questions in the memory (one question asked a thousand times) each request read them all.
Corrections are few (people write them), so ``CorrectionSet`` keeps their query embeddings in one matrix and
scores all of them with one product: about 1 ms per 10,000 corrections.

The matrix is reloaded when the set of corrected rows changes, in this process or another (``council forget``,
a feedback through another server): a partial index on the current corrected rows makes reading their ids
cheap.

A newer correction of the same question supersedes the older ones (``supersede``, run by
``MemoryStore.apply_feedback`` in the feedback's transaction): the new record lists them in ``supersedes``,
each of them names it in ``superseded_by``, and a superseded correction is never recalled (the matrix holds
the current ones only), harvested or replayed to training. "The same question": the same words
(``same_question``), or query embeddings at least ``memory.supersede_similarity`` alike naming the same
numbers ("Zorblax 3000" is not "Zorblax 4000", 0.93 alike). Only the same user's corrections are compared
(``any_user``: everyone's, for ``memory.share = "all"``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading

import numpy as np

CORRECTED = "json_extract(feedback, '$.correction') IS NOT NULL"
INDEX_SQL = f"CREATE INDEX IF NOT EXISTS records_corrected ON records (fid) WHERE {CORRECTED}"
CURRENT = f"{CORRECTED} AND superseded_by IS NULL"  # the corrections recall and training use
CURRENT_INDEX_SQL = f"CREATE INDEX IF NOT EXISTS records_current_corrections ON records (fid) WHERE {CURRENT}"
_IDS = f"SELECT fid FROM records WHERE {CURRENT} ORDER BY fid"  # the partial index alone: ids, no rows
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def same_question(text: str) -> str:
    """``text`` as recall compares questions: case and runs of whitespace ignored."""
    return " ".join(text.casefold().split())


def supersede(conn: sqlite3.Connection, record_id: str, min_similarity: float,
              any_user: bool = False) -> list[str]:
    """Mark the current corrections of the same question as record ``record_id``'s (the module's docstring)
    superseded by it, inside the caller's transaction; the record itself becomes current. Returns its
    ``supersedes`` (those it superseded before, then the ones now, oldest first)."""
    fid, user, query, embedding, before = conn.execute(
        "SELECT fid, user, query, embedding, supersedes FROM records WHERE id = ?", (record_id,)).fetchone()
    sql = f"SELECT id, query, embedding FROM records WHERE {CURRENT} AND fid != ?"
    args: list = [fid]
    if not any_user:
        sql, args = sql + " AND user IS ?", [*args, user]
    vector, text = np.frombuffer(embedding, "<f4"), same_question(query)
    numbers = sorted(_NUMBER.findall(query))

    def same(other: str, other_vector: bytes) -> bool:
        alike = float(np.frombuffer(other_vector, "<f4") @ vector) >= min_similarity
        return same_question(other) == text or (alike and sorted(_NUMBER.findall(other)) == numbers)

    ids = [i for i, q, e in conn.execute(sql + " ORDER BY fid", args).fetchall() if same(q, e)]
    conn.executemany("UPDATE records SET superseded_by = ? WHERE id = ?", [(record_id, i) for i in ids])
    listed = list(dict.fromkeys([*(json.loads(before) if before else []), *ids]))
    conn.execute("UPDATE records SET superseded_by = NULL, supersedes = ? WHERE fid = ?",
                 (json.dumps(listed) if listed else None, fid))
    return listed


def superseded_ids(conn: sqlite3.Connection) -> set[str]:
    """The ids of every superseded record (what harvest and training leave out); none in a memory made before
    migration 0003_supersedes."""
    if "superseded_by" not in {row[1] for row in conn.execute("PRAGMA table_info(records)")}:
        return set()
    sql = f"SELECT id FROM records WHERE {CORRECTED} AND superseded_by IS NOT NULL"
    return {r[0] for r in conn.execute(sql)}


class CorrectionSet:
    """Query embeddings (unit rows) and users of the current (not superseded) corrected records, reloaded when
    they change."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._fids = np.zeros(0, np.int64)
        self._users: list[str | None] = []
        self._vectors = np.zeros((0, dim), np.float32)

    def _refresh(self, conn: sqlite3.Connection) -> None:
        ids = np.array([r[0] for r in conn.execute(_IDS)], np.int64)  # which corrected rows exist now
        if np.array_equal(ids, self._fids):
            return
        rows = conn.execute(f"SELECT fid, user, embedding FROM records WHERE {CURRENT} ORDER BY fid").fetchall()
        self._fids = np.array([r[0] for r in rows], np.int64)
        self._users = [r[1] for r in rows]
        self._vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), self.dim)

    def nearest(self, conn: sqlite3.Connection, query: np.ndarray, n: int, min_similarity: float,
                user: str | None = None, own_only: bool = False) -> list[tuple[int, float]]:
        """(fid, cosine) of the ``n`` corrected records most similar to ``query`` (a (1, dim) unit row), at or
        above ``min_similarity``, most similar first; ``own_only``: only those of ``user``. ``conn`` reads
        SQLite (any connection of the store's file)."""
        with self._lock:
            self._refresh(conn)
            fids, users, vectors = self._fids, self._users, self._vectors
        if not len(fids):
            return []
        sims = vectors @ query[0]
        keep = sims >= min_similarity
        if own_only:
            keep &= np.array([u == user for u in users], bool)
        order = [i for i in np.argsort(-sims, kind="stable") if keep[i]][:n]
        return [(int(fids[i]), float(sims[i])) for i in order]
