"""The corrected exchanges, searched exactly: recall's shared knowledge, kept apart from the index.

A correction may be recalled ahead of successes up to ``CORRECTION_LEAD`` more similar (``recall.py``). Looking
for it among the index's neighbours meant fetching every neighbour within the lead of the k-th success: with many
near-identical questions in the memory (one question asked a thousand times) each request read them all.
Corrections are few (people write them), so ``CorrectionSet`` keeps their query embeddings in one matrix and
scores all of them with one product: about 1 ms per 10,000 corrections.

The matrix is reloaded when the set of corrected rows changes, in this process or another (``council forget``,
a feedback through another server): a partial index on the corrected rows makes reading their ids cheap.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np

CORRECTED = "json_extract(feedback, '$.correction') IS NOT NULL"
INDEX_SQL = f"CREATE INDEX IF NOT EXISTS records_corrected ON records (fid) WHERE {CORRECTED}"
_IDS = f"SELECT fid FROM records WHERE {CORRECTED} ORDER BY fid"  # the partial index alone: ids, no rows


class CorrectionSet:
    """Query embeddings (unit rows) and users of the corrected records, reloaded when they change."""

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
        rows = conn.execute(f"SELECT fid, user, embedding FROM records WHERE {CORRECTED} ORDER BY fid").fetchall()
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
