"""Council's memory: every exchange in SQLite, with a FAISS index over the query embeddings.

Files (``settings.paths.memory``): ``records.sqlite3`` is the source of truth (``council/memory/sqlite.py``; WAL,
``synchronous=FULL``: ``add`` is durable when it returns). ``index.faiss`` (sign bits scanned, then an exact
re-rank on unit vectors = cosine, in an IndexIDMap2, ``council/memory/index.py``) is a cache, saved atomically on ``close()`` and every ``save_every`` adds,
reconciled with SQLite on ``open`` (which also migrates the schema): a crash at any moment leaves a store that
opens. Erased rows' vectors are masked from search until ``compact`` rebuilds the index.

Only negative feedback (thumbs down, rating <= 2, a correction) changes ``success``, only to False; ``search`` reads
it from SQLite, current when another process changed it. One process adds; others read, give feedback, harvest.

Usage::
    store = MemoryStore.open(settings.paths.memory); store.add(record, embedder.embed([record.query])[0])
    hits = store.search(vector, k=3, min_similarity=0.6)   # [(ExchangeRecord, cosine), ...]
    hits = store.search(vector, 3, 0.6, share="corrections", user="alice"); store.close()  # alice's recall
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from council.core.errors import NotFoundError, StorageError
from council.core.migrations import migrate
from council.memory import sqlite as rows_db
from council.memory.corrections import CorrectionSet, supersede
from council.memory.index import REFINE_FACTOR, LiveIndex, add_rows, new_index
from council.memory.recall import CORRECTION_LEAD, RECALL, ranked, same_question
from council.memory.schema import ExchangeRecord, Feedback, check_feedback, utcnow
from council.memory.sqlite import DB_NAME, superseded_records  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

INDEX_NAME = "index.faiss"
MAX_FETCH = 1024  # index neighbours one search reads at most while looking for records it may recall


class MemoryStore:
    """Exchange records (SQLite, durable) + nearest-neighbour search over query embeddings (FAISS)."""

    def __init__(self, folder: Path, dim: int, save_every: int, refine_factor: int) -> None:
        self.folder, self.dim, self.save_every = Path(folder), dim, save_every
        self.db_path, self.index_path = self.folder / DB_NAME, self.folder / INDEX_NAME
        self._write_lock = threading.RLock()  # one writer at a time: SQLite writes, FAISS adds, index saves
        self._local = threading.local()  # per-thread read-only connections (WAL readers never block)
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._live = LiveIndex(self.index_path, dim, refine_factor, save_every, rebuild=self.compact)
        self._compact_lock = threading.Lock()
        self._corrections = CorrectionSet(dim)
        self._closed = False
        self._writer = self._connect(readonly=False)

    @classmethod
    def open(cls, folder: Path, dim: int = 384, *, save_every: int = 256, refine_factor: int = REFINE_FACTOR,
             index: bool = True) -> MemoryStore:
        """Open (or create) the store and bring ``index.faiss`` in line with SQLite (``index=False``: don't)."""
        if save_every < 1 or refine_factor < 1 or dim < 1:
            raise ValueError("dim, save_every and refine_factor must be >= 1 (defaults: 384, 256, 32)")
        with rows_db.storage(f"open the memory store in {folder}"):
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"could not create memory folder {folder}: {exc}") from exc
            store = cls(Path(folder), dim, save_every, refine_factor)
            try:
                migrate(store._writer, rows_db.MIGRATIONS)
                if index:  # bring the index file in line with SQLite: its rows, and the erased ones
                    ids = (store._writer.execute(f"SELECT fid FROM {table} ORDER BY fid").fetchall()
                           for table in ("records", "erased"))
                    store._live.reconcile(*(np.array(i, np.int64).reshape(-1) for i in ids), store._embeddings)
            except BaseException:
                store.close()
                raise
        return store

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")  # freed space (updated or erased rows) is zeroed
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(readonly=True)
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _embeddings(self, fids: list[int], conn: sqlite3.Connection | None = None) -> np.ndarray:
        rows: dict[int, bytes] = {}
        for part in rows_db.chunks(fids):
            sql = f"SELECT fid, embedding FROM records WHERE fid IN ({','.join('?' * len(part))})"
            rows.update((conn or self._writer).execute(sql, part))
        return np.frombuffer(b"".join(rows[f] for f in fids), dtype="<f4").reshape(len(fids), self.dim)

    def _unit(self, vector: np.ndarray) -> np.ndarray:
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vec))
        if vec.shape != (self.dim,) or not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"expected a finite non-zero vector of {self.dim} numbers, got shape {np.shape(vector)}")
        return vec / norm

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._write_lock, rows_db.storage(action):
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the original error is what matters
                        conn.execute("ROLLBACK")
                raise

    def add(self, record: ExchangeRecord, vector: np.ndarray) -> None:
        """Store one record; durable (fsynced) when it returns."""
        self.add_many([(record, vector)])

    def add_many(self, items: list[tuple[ExchangeRecord, np.ndarray]]) -> None:
        """Store records in ONE transaction: all of them or (on error) none."""
        if not items:
            return
        vectors = np.stack([self._unit(v) for _, v in items])
        rows = [(*rows_db.row_values(rec), vec.astype("<f4").tobytes()) for (rec, _), vec in zip(items, vectors, strict=True)]
        sql = f"INSERT INTO records (fid, {rows_db.COLS}, embedding) VALUES ({','.join('?' * (len(rows_db.FIELDS) + 2))})"
        with self._write_lock:
            with self._transaction(f"store {len(rows)} record(s)") as conn:
                top = conn.execute(rows_db.TOP_FID).fetchone()[0]  # past erased ids too: an id is never reused
                fids = [conn.execute(sql, (top + n, *row)).lastrowid for n, row in enumerate(rows, 1)]
            try:  # the records are committed: an index failure must not fail (or repeat) them
                self._live.add(vectors, fids)
            except (RuntimeError, MemoryError) as exc:
                log.warning("could not index %d record(s) (%s); rebuilding the index from SQLite", len(fids), exc)
                self._live.resync()

    def apply_feedback(self, record_id: str, thumbs: str | None = None, rating: int | None = None,
                       correction: str | None = None, *, supersede_similarity: float | None = None,
                       any_user: bool = False) -> ExchangeRecord:
        """Merge feedback into the record (later non-None fields win); negative feedback sets success=False. With
        ``supersede_similarity`` a correction supersedes the current ones of the same question (``corrections.py``)."""
        check_feedback(thumbs, rating, correction)
        with self._transaction(f"save feedback for {record_id}") as conn:
            row = conn.execute(f"SELECT {rows_db.COLS} FROM records WHERE id = ?", (record_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no record with id {record_id!r}", param="record_id", code="record_not_found")
            record = rows_db.record_of(row)
            old = record.feedback or Feedback()
            record.feedback = Feedback(thumbs if thumbs is not None else old.thumbs,
                                       rating if rating is not None else old.rating,
                                       correction if correction is not None else old.correction, utcnow())
            record.success = record.success and not record.feedback.is_negative
            conn.execute("UPDATE records SET feedback = ?, success = ? WHERE id = ?",
                         (json.dumps(record.feedback.to_dict()), int(record.success), record_id))
            if correction is not None and supersede_similarity is not None:
                record.supersedes = supersede(conn, record_id, supersede_similarity, any_user)
                record.superseded_by = None
        return record

    def mark_harvested(self, record_ids: list[str], when: datetime) -> None:
        """Set harvested_at on every id (all or nothing; an unknown id raises NotFoundError)."""
        ids = list(dict.fromkeys(record_ids))
        when_us = rows_db.to_us(when)
        with self._transaction(f"mark {len(ids)} record(s) harvested") as conn:
            changed = 0
            for part in rows_db.chunks(ids):
                marks = ",".join("?" * len(part))
                changed += conn.execute(f"UPDATE records SET harvested_us = ? WHERE id IN ({marks})",
                                        [when_us, *part]).rowcount
            if changed != len(ids):
                raise NotFoundError(f"{len(ids) - changed} of {len(ids)} record ids are unknown; nothing marked")

    def get(self, record_id: str) -> ExchangeRecord | None:
        with rows_db.storage(f"read record {record_id}"):
            row = self._reader().execute(f"SELECT {rows_db.COLS} FROM records WHERE id = ?", (record_id,)).fetchone()
        return rows_db.record_of(row) if row else None

    def search(self, vector: np.ndarray, k: int, min_similarity: float, success_only: bool = True, *,
               share: str | None = None, user: str | None = None) -> list[tuple[ExchangeRecord, float]]:
        """Up to k successes with cosine >= min_similarity, most similar first; with ``share`` (``memory.share``), what
        ``user`` may recall: the nearest successes it may see and corrections (exact, ``corrections.py``), in
        recall order (``recall.py``)."""
        if k <= 0:
            return []
        query = self._unit(vector)[None, :]
        if not share:
            return self._nearest(query, k, min_similarity, "success = 1" if success_only else "1", [])
        cond, n_args = RECALL[share]
        with rows_db.storage("search the memory"):
            fixed = self._corrections.nearest(self._reader(), query, k, min_similarity, user, own_only=share == "none")
            corrections = self._rows(fixed, "1", [])
        superseded = {same_question(r.query) for r, _ in corrections}
        successes = self._nearest(query, k, min_similarity, f"success = 1 AND {cond}", [user] * n_args,
                                  lambda r: same_question(r.query) not in superseded)
        return ranked(corrections + successes, CORRECTION_LEAD)[:k]

    def _rows(self, found: list[tuple[int, float]], cond: str, args: list) -> list[tuple[ExchangeRecord | None, float]]:
        """The records of ``found`` (fid, cosine), in order; None for those failing ``cond``. Ids SQLite no longer
        has (erased by another process, e.g. council forget) are masked in the index and left out."""
        if not found:
            return []
        rows: dict[int, ExchangeRecord | None] = {}
        for row in self._reader().execute(f"SELECT fid, ({cond}), {rows_db.COLS} FROM records WHERE fid IN "
                                          f"({','.join('?' * len(found))})", [*args, *(i for i, _ in found)]):
            rows[row[0]] = rows_db.record_of(row[2:]) if row[1] else None
        if len(rows) < len(found):
            self._live.mask([i for i, _ in found if i not in rows])
        return [(rows[i], s) for i, s in found if i in rows]

    def _nearest(self, query: np.ndarray, k: int, min_similarity: float, cond: str, args: list,
                 keep: Callable[[ExchangeRecord], bool] = bool) -> list[tuple[ExchangeRecord, float]]:
        """Up to ``k`` records meeting ``cond`` and ``keep``, most similar first: fetches 2k neighbours, 4x more while
        fewer than k qualify, up to MAX_FETCH (a bound on one request), or 8k when only ``keep`` dropped them."""
        fetch = min(2 * k, MAX_FETCH)
        while True:
            found, near, total = self._live.search(query, fetch, min_similarity)
            with rows_db.storage("search the memory"):
                rows = [(r, s) for r, s in self._rows(found, cond, args) if r is not None]
            hits = [(r, s) for r, s in rows if keep(r)]
            superseded_only = len(rows) >= k and fetch >= 8 * k  # superseded copies widen the search up to 8k
            if len(hits) >= k or superseded_only or fetch >= min(total, MAX_FETCH) or near < min(fetch, total):
                return hits[:k]
            fetch = min(fetch * 4, MAX_FETCH)

    def window(self, since: datetime, until: datetime, success: bool | None = None,
               harvested: bool | None = None) -> list[ExchangeRecord]:
        """Records with created_at in [since, until), oldest first, optionally filtered by success/harvested."""
        sql, args = f"SELECT {rows_db.COLS} FROM records WHERE created_us >= ? AND created_us < ?", [rows_db.to_us(since),
                                                                                          rows_db.to_us(until)]
        if success is not None:
            sql, args = sql + " AND success = ?", [*args, int(success)]
        if harvested is not None:
            sql += " AND harvested_us IS NOT NULL" if harvested else " AND harvested_us IS NULL"
        with rows_db.storage("read the memory window"):
            return [rows_db.record_of(row) for row in self._reader().execute(sql + " ORDER BY created_us, fid", args)]

    def page(self, limit: int = 20, after: str | None = None, success: bool | None = None,
             since: datetime | None = None, user: str | None = None) -> tuple[list[ExchangeRecord], bool]:
        """Newest records first, at most ``limit``, older than record ``after`` (a cursor), optionally only
        failures / successes, from ``since``, of ``user``. Returns (records, whether more follow).
        Raises NotFoundError for an unknown cursor."""
        sql, args = f"SELECT {rows_db.COLS} FROM records WHERE 1", []
        if after is not None:
            with rows_db.storage("read the cursor record"):
                row = self._reader().execute("SELECT fid FROM records WHERE id = ?", (after,)).fetchone()
            if row is None:
                raise NotFoundError(f"no record {after!r} to page after", param="after", code="record_not_found")
            sql, args = sql + " AND fid < ?", [*args, row[0]]
        for clause, value in (("success = ?", None if success is None else int(success)),
                              ("created_us >= ?", None if since is None else rows_db.to_us(since)), ("user = ?", user)):
            if value is not None:
                sql, args = f"{sql} AND {clause}", [*args, value]
        with rows_db.storage("list records"):
            rows = self._reader().execute(sql + " ORDER BY fid DESC LIMIT ?", [*args, limit + 1]).fetchall()
        return [rows_db.record_of(row) for row in rows[:limit]], len(rows) > limit

    def vectors(self, record_ids: list[str]) -> np.ndarray:
        """Stored query embeddings, (len(record_ids), dim) float32 in the order asked; unknown id: NotFoundError."""
        found: dict[str, bytes] = {}
        with rows_db.storage("read embeddings"):
            for part in rows_db.chunks(list(dict.fromkeys(record_ids))):
                marks = ",".join("?" * len(part))
                found.update(self._reader().execute(f"SELECT id, embedding FROM records WHERE id IN ({marks})", part))
        missing = [i for i in record_ids if i not in found]
        if missing:
            raise NotFoundError(f"unknown record ids: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        data = b"".join(found[i] for i in record_ids)
        return np.frombuffer(data, dtype="<f4").reshape(len(record_ids), self.dim).astype(np.float32)

    def count(self) -> int:
        """Records in the store, without a query: the index holds one vector per record (records are never
        added by another process) plus the masked erased ones, so this is safe on an event loop."""
        return self._live.count()

    def delete(self, record_ids: list[str] | None = None, *, user: str | None = None, vacuum: bool = False,
               compact: bool = True) -> list[ExchangeRecord]:
        """Erase records ``record_ids`` (or all of ``user``) for good, return them; ``vacuum``: rewrite the file.
        Their vectors are masked, then compacted away in a background thread (``compact=False``: by ``compact``)."""
        if (record_ids is None) == (user is None):
            raise ValueError("delete takes record ids or a user, not both")
        with self._write_lock:
            with self._transaction("erase records") as conn:
                gone = rows_db.delete_rows(conn, rows_db.COLS, record_ids, user)
            if gone:
                with rows_db.storage("erase records from the database file"):
                    rows_db.scrub_sqlite(self._writer, vacuum)
                self._live.mask([fid for fid, *_ in gone], compact=compact)
        return [rows_db.record_of(row) for _, *row in gone]

    def compact(self) -> None:
        """Rebuild the index from SQLite, without erased vectors, and save it; adds and searches go on meanwhile."""
        with self._compact_lock, rows_db.storage("compact the memory index"):
            with contextlib.closing(self._connect(True)) as db:  # one snapshot for the ids and their embeddings,
                db.execute("BEGIN")  # ended before the write lock (a delete holding it waits for readers)
                fids = [r[0] for r in db.execute("SELECT fid FROM records ORDER BY fid")]
                index = add_rows(new_index(self.dim, self._live.refine_factor), fids, lambda ids: self._embeddings(ids, db))
            with self._write_lock:  # rows added during the rebuild join it before the swap
                late = [r[0] for r in self._writer.execute("SELECT fid FROM records WHERE fid > ? ORDER BY fid",
                                                           (max(fids, default=0),))]
                self._live.swap(add_rows(index, late, self._embeddings), {*fids, *late})
        self._live.save()

    def close(self) -> None:
        """Save the index if it has unsaved adds and close every connection. Safe to call twice."""
        self._live.stop()  # first: a running compaction needs the write lock to finish
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._live.unsaved:
                self._live.save()
            for conn in [*self._readers, self._writer]:
                conn.close()
            self._readers.clear()
