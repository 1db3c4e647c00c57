"""The memory's SQLite layer: the schema, one ExchangeRecord as one row, and erasing rows for good.

The schema is versioned (``MIGRATIONS``, run by ``council/core/migrations.py`` when a store opens).
``records`` holds one row per exchange (list and feedback fields as JSON, times as integer microseconds since
the epoch, UTC, the query embedding as a float32 BLOB); its integer primary key ``fid`` is the FAISS id.
``erased`` keeps the fids of erased rows, which are never reused. ``supersedes`` / ``superseded_by`` (0003) link a
correction to the older ones of the same question it replaced (``corrections.py``); erasing a row unlinks it.
``council/memory/store.py`` is the only user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from council.core.errors import InvalidRequestError, StorageError
from council.memory.corrections import CORRECTED, CURRENT_INDEX_SQL, INDEX_SQL, superseded_ids
from council.memory.schema import ExchangeRecord, Feedback

log = logging.getLogger(__name__)

DB_NAME = "records.sqlite3"  # the memory folder's database: the source of truth

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CHUNK = 500  # ids per SQL "IN (...)"
FIELDS = ("id", "query", "answer", "confidence", "success", "model", "created_us", "user", "session",
           "messages", "adapter", "route", "latency_ms", "context_ids", "feedback", "harvested_us",
           "tools", "response_format", "tool_calls", "supersedes", "superseded_by")
COLS = ", ".join(FIELDS)
INITIAL = """
CREATE TABLE IF NOT EXISTS records (fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, query TEXT NOT NULL,
  answer TEXT NOT NULL, confidence REAL NOT NULL, success INTEGER NOT NULL, model TEXT NOT NULL,
  created_us INTEGER NOT NULL, user TEXT, session TEXT, messages TEXT NOT NULL, adapter TEXT, route TEXT NOT NULL,
  latency_ms REAL NOT NULL, context_ids TEXT NOT NULL, feedback TEXT, harvested_us INTEGER, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS records_created ON records (created_us);
CREATE TABLE IF NOT EXISTS erased (fid INTEGER PRIMARY KEY);
""" + INDEX_SQL + ";"
MIGRATIONS = (  # council/core/migrations.py; append, never edit one that shipped
    ("0001_records", INITIAL),  # the schema of every release before migrations (a no-op on their files)
    ("0002_tools", "ALTER TABLE records ADD COLUMN tools TEXT; ALTER TABLE records ADD COLUMN response_format TEXT;"
                   "ALTER TABLE records ADD COLUMN tool_calls TEXT"),  # what tool and JSON requests were asked with
    ("0003_supersedes", "ALTER TABLE records ADD COLUMN supersedes TEXT; ALTER TABLE records ADD COLUMN superseded_by "
                        "TEXT; " + CURRENT_INDEX_SQL),  # a newer correction of the same question replaces older ones
)
TOP_FID = "SELECT max(coalesce((SELECT max(fid) FROM records), 0), coalesce((SELECT max(fid) FROM erased), 0))"
_CHECKPOINT_TRIES = 16  # about 5 s in all


def to_us(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"datetime {value} has no timezone; pass an aware datetime (e.g. datetime.now(UTC))")
    return (value - EPOCH) // timedelta(microseconds=1)


def from_us(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def row_values(record: ExchangeRecord) -> tuple:
    fb = json.dumps(record.feedback.to_dict()) if record.feedback else None
    harvested = to_us(record.harvested_at) if record.harvested_at else None
    return (record.id, record.query, record.answer, float(record.confidence), int(bool(record.success)),
            record.model, to_us(record.created_at), record.user, record.session, json.dumps(record.messages),
            record.adapter, json.dumps(record.route), float(record.latency_ms), json.dumps(record.context_ids),
            fb, harvested, json.dumps(record.tools) if record.tools else None,
            json.dumps(record.response_format) if record.response_format else None,
            json.dumps(record.tool_calls) if record.tool_calls else None,
            json.dumps(record.supersedes) if record.supersedes else None, record.superseded_by)


def record_of(row: tuple) -> ExchangeRecord:
    d = dict(zip(FIELDS, row, strict=True))
    return ExchangeRecord(
        query=d["query"], answer=d["answer"], confidence=d["confidence"], success=bool(d["success"]),
        model=d["model"], id=d["id"], created_at=from_us(d["created_us"]), user=d["user"], session=d["session"],
        messages=json.loads(d["messages"]), adapter=d["adapter"], route=json.loads(d["route"]),
        latency_ms=d["latency_ms"], context_ids=json.loads(d["context_ids"]),
        feedback=Feedback.from_dict(json.loads(d["feedback"])) if d["feedback"] else None,
        harvested_at=from_us(d["harvested_us"]), tools=json.loads(d["tools"]) if d["tools"] else [],
        response_format=json.loads(d["response_format"]) if d["response_format"] else None,
        tool_calls=json.loads(d["tool_calls"]) if d["tool_calls"] else None,
        supersedes=json.loads(d["supersedes"]) if d["supersedes"] else [], superseded_by=d["superseded_by"])


def chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextlib.contextmanager
def storage(action: str) -> Iterator[None]:
    """Turn SQLite failures (disk full, read-only, I/O error) into StorageError (HTTP 507)."""
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise  # misuse (e.g. a closed store), not a storage failure
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" not in str(exc):
            raise  # a record that breaks the schema is a bug upstream, not the client's duplicate
        raise InvalidRequestError(f"could not {action}: {exc}", code="duplicate_record") from exc
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"could not {action}: {exc}") from exc


def delete_rows(conn: sqlite3.Connection, columns: str, record_ids: list[str] | None,
                user: str | None) -> list[tuple]:
    """Delete records by id, or every record of ``user``, inside the caller's transaction, and keep their integer
    ids in ``erased`` (never reused). Returns the deleted rows as ``(fid, *columns)``."""
    if user is not None:
        rows = conn.execute(f"SELECT fid, {columns} FROM records WHERE user = ?", (user,)).fetchall()
    else:
        ids, rows = list(dict.fromkeys(record_ids or [])), []
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            rows += conn.execute(f"SELECT fid, {columns} FROM records WHERE id IN ({','.join('?' * len(part))})",
                                 part).fetchall()
    fids = [(row[0],) for row in rows]
    gone = [r[0] for part in chunks([f for f, in fids]) for r in conn.execute(
        f"SELECT id FROM records WHERE fid IN ({','.join('?' * len(part))})", part)]
    conn.executemany("DELETE FROM records WHERE fid = ?", fids)
    conn.executemany("INSERT OR IGNORE INTO erased (fid) VALUES (?)", fids)
    forget_supersedes(conn, set(gone))
    return rows


def forget_supersedes(conn: sqlite3.Connection, gone: set[str]) -> None:
    """Erased ids leave the other rows' ``supersedes`` and ``superseded_by``: a correction that only an erased one
    superseded is current again (the question's newest correction still standing answers it)."""
    if not gone:
        return
    for part in chunks(sorted(gone)):
        conn.execute(f"UPDATE records SET superseded_by = NULL WHERE {CORRECTED} AND superseded_by IN "
                     f"({','.join('?' * len(part))})", part)  # only corrections supersede or are superseded:
    listing = f"SELECT fid, supersedes FROM records WHERE {CORRECTED} AND supersedes IS NOT NULL"  # their index
    for fid, listed in conn.execute(listing).fetchall():
        kept = [i for i in json.loads(listed) if i not in gone]
        if len(kept) < len(json.loads(listed)):
            conn.execute("UPDATE records SET supersedes = ? WHERE fid = ?", (json.dumps(kept) if kept else None, fid))


def scrub_sqlite(conn: sqlite3.Connection, vacuum: bool) -> None:
    """After a delete made with ``secure_delete`` on (outside a transaction): ``vacuum`` rewrites the file without
    free pages; then the WAL, which still holds the pages as first written, is copied into the file and truncated."""
    if vacuum:
        conn.execute("VACUUM")
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 250")  # the caller holds the write lock: wait for readers in short steps
    try:
        for _ in range(_CHECKPOINT_TRIES):
            if not conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                return
            time.sleep(0.05)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    log.warning("the write-ahead log could not be truncated (readers kept it busy); the next checkpoint rewrites it")


def superseded_records(folder: Path) -> set[str]:
    """The ids of the superseded records in the memory at ``folder``, read-only (no memory there: none)."""
    path = Path(folder) / DB_NAME
    if not path.is_file():
        return set()
    with storage(f"read {path}"), contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return superseded_ids(db)


def present_records(folder: Path, ids: set[str]) -> set[str]:
    """Which of ``ids`` the memory at ``folder`` holds, read-only (no memory there: none)."""
    path = Path(folder) / DB_NAME
    if not ids or not path.is_file():
        return set()
    with storage(f"read {path}"), contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        wanted = sorted(ids)
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            found |= {row[0] for row in db.execute(
                f"SELECT id FROM records WHERE id IN ({','.join('?' * len(chunk))})", chunk)}
        return found
