"""Stored Responses-API responses (``POST /v1/responses`` with ``store``), durably, in their own SQLite file.

``responses.sqlite3`` beside the memory's ``records.sqlite3`` (``settings.paths.memory``), WAL,
``synchronous=FULL`` (``put`` is durable when it returns), ``secure_delete`` on. One table, one row per stored
response: its id, creation time (integer microseconds since the epoch, UTC), the user it answered, the record
it made, ``records`` (the ids of the records of every response in its chain, itself included: erasing any of
them erases it, since its ``items`` quote them), ``items`` (the whole conversation so far as Responses input
items: every earlier turn's input and output, then this turn's; a follow-up with ``previous_response_id``
replays them) and ``response`` (the Response object as sent).

Every stored item has an ``id`` (``msg_``, ``fc_``, ``fco_`` by its type; ``with_ids`` gives them): the one the
client sent with it, or the output item's own, when no earlier item has it; else a new one. Rows stored before
items had ids get ids derived from the response id and the item's place, the same at every read, so
``GET /v1/responses/{id}/input_items`` pages through them stably.

Erasure: ``erase_responses(path, record_ids)`` deletes every stored response whose chain holds an erased
record and truncates the write-ahead log; ``council/memory/erasure.py`` calls it for ``DELETE /v1/records/{id}``
and ``council forget --user``.

Usage::

    store = ResponseStore.open(settings.paths.memory / RESPONSES_DB)
    store.put(StoredResponse(id, user, record_id, records, items, response)); store.get(id); store.close()
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from council.core.errors import StorageError
from council.memory.sqlite import chunks, scrub_sqlite, storage

RESPONSES_DB = "responses.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, created_us INTEGER NOT NULL, user TEXT,
  record_id TEXT NOT NULL, records TEXT NOT NULL, items TEXT NOT NULL, response TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS responses_record ON responses (record_id);
"""
FIELDS = "id, created_us, user, record_id, records, items, response"
ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


@dataclass
class StoredResponse:
    id: str
    user: str | None
    record_id: str
    records: list[str]  # the record ids of the whole chain, this response's last
    items: list[dict[str, Any]]  # the conversation as input items, this response's output included
    response: dict[str, Any]
    created_us: int = field(default_factory=lambda: time.time_ns() // 1000)


def with_ids(items: list[dict[str, Any]], seed: str | None = None) -> list[dict[str, Any]]:
    """``items``, each with an ``id`` unique among them: its own if an earlier item does not have it, else a new
    one, random, or (with ``seed``) derived from ``seed`` and its place so that every call gives the same."""
    taken: set[str] = set()
    out = []
    for index, item in enumerate(items):
        given = item.get("id")
        if not isinstance(given, str) or given in taken:
            token = (hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:32] if seed is not None
                     else uuid.uuid4().hex)
            given = f"{ITEM_PREFIXES.get(item.get('type', ''), 'item')}_{token}"
        taken.add(given)
        out.append({**item, "id": given})
    return out


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA secure_delete = ON")  # erased rows' pages are zeroed
    conn.executescript(SCHEMA)
    return conn


class ResponseStore:
    """One connection, used by one thread at a time (callers on the event loop go through ``asyncio.to_thread``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> ResponseStore:
        with storage(f"open the response store {path}"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"could not create folder {path.parent}: {exc}") from exc
            return cls(path, _connect(path))

    def put(self, stored: StoredResponse) -> None:
        row = (stored.id, stored.created_us, stored.user, stored.record_id, json.dumps(stored.records),
               json.dumps(stored.items), json.dumps(stored.response))
        with self._lock, storage(f"store response {stored.id}"):
            self._conn.execute(f"INSERT INTO responses ({FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock, storage(f"read response {response_id}"):
            row = self._conn.execute(f"SELECT {FIELDS} FROM responses WHERE id = ?", (response_id,)).fetchone()
        if row is None:
            return None
        rid, created_us, user, record_id, records, items, response = row
        return StoredResponse(rid, user, record_id, json.loads(records), with_ids(json.loads(items), rid),
                              json.loads(response), created_us)

    def delete(self, response_id: str) -> bool:
        with self._lock, storage(f"delete response {response_id}"):
            deleted = self._conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
            if deleted:
                scrub_sqlite(self._conn, vacuum=False)  # the WAL still holds the row as first written
            return deleted

    def erase(self, record_ids: Iterable[str]) -> int:
        """Delete every response whose chain holds one of ``record_ids``, then truncate the write-ahead log."""
        with self._lock, storage("erase stored responses"):
            return _erase(self._conn, list(dict.fromkeys(record_ids)))

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _erase(conn: sqlite3.Connection, record_ids: list[str]) -> int:
    erased = 0
    for part in chunks(record_ids):
        marks = ",".join("?" * len(part))
        erased += conn.execute(
            f"DELETE FROM responses WHERE record_id IN ({marks}) OR EXISTS "
            f"(SELECT 1 FROM json_each(responses.records) WHERE json_each.value IN ({marks}))",
            [*part, *part]).rowcount
    if erased:
        scrub_sqlite(conn, vacuum=False)  # the WAL still holds the rows as first written
    return erased


def erase_responses(path: Path, record_ids: Iterable[str]) -> int:
    """Erase, in the store at ``path`` (if there is one), every response whose chain holds one of ``record_ids``
    (another process, the server, may have it open: SQLite's locks keep both right)."""
    ids = list(dict.fromkeys(record_ids))
    if not ids or not path.is_file():
        return 0
    with storage(f"erase stored responses in {path}"):
        conn = _connect(path)
        try:
            return _erase(conn, ids)
        finally:
            conn.close()
