"""The record schema migrates: a memory made by the release before versioned migrations opens on the newest
schema with its records intact, and the migration runner applies each step once."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from council.core.migrations import migrate
from council.memory import sqlite as rows_db
from council.memory.schema import ExchangeRecord
from council.memory.store import MemoryStore

# records.sqlite3 as release ca3221a (the last before migrations) created it, and one row it wrote
PREVIOUS_RELEASE = """
CREATE TABLE records (fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, query TEXT NOT NULL,
  answer TEXT NOT NULL, confidence REAL NOT NULL, success INTEGER NOT NULL, model TEXT NOT NULL,
  created_us INTEGER NOT NULL, user TEXT, session TEXT, messages TEXT NOT NULL, adapter TEXT, route TEXT NOT NULL,
  latency_ms REAL NOT NULL, context_ids TEXT NOT NULL, feedback TEXT, harvested_us INTEGER, embedding BLOB NOT NULL);
CREATE INDEX records_created ON records (created_us);
CREATE TABLE erased (fid INTEGER PRIMARY KEY);
CREATE INDEX records_corrected ON records (fid) WHERE json_extract(feedback, '$.correction') IS NOT NULL;
"""


def _old_memory(folder, dim=4):
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "records.sqlite3")
    conn.executescript(PREVIOUS_RELEASE)
    vector = np.ones(dim, "<f4") / 2
    conn.execute("INSERT INTO records VALUES (1, 'rec_old', 'What is 2+2?', '4', 0.9, 1, 'local/smollm2', "
                 "1764547200000000, 'alice', NULL, ?, NULL, '[\"agent0\"]', 12.5, '[]', ?, NULL, ?)",
                 (json.dumps([{"role": "user", "content": "What is 2+2?"}]),
                  json.dumps({"thumbs": "down", "rating": None, "correction": "Four.", "at": None}),
                  vector.tobytes()))
    conn.commit()
    conn.close()


def test_a_memory_of_the_previous_release_opens_migrated_with_its_records(tmp_path):
    _old_memory(tmp_path / "memory")
    store = MemoryStore.open(tmp_path / "memory", dim=4)
    try:
        old = store.get("rec_old")
        assert old.query == "What is 2+2?" and old.gold_answer == "Four." and old.user == "alice"
        assert old.tools == [] and old.tool_calls is None and old.response_format is None
        calls = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}]
        tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
        store.add(ExchangeRecord(query="Add 2", answer="", confidence=0.8, success=True, model="local/smollm2",
                                 id="rec_new", tools=tools, tool_calls=calls,
                                 response_format={"type": "json_object"}), np.ones(4, "f4"))
        new = store.get("rec_new")
        assert new.tools == tools and new.tool_calls == calls and new.response_format == {"type": "json_object"}
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "memory" / "records.sqlite3")
    applied = [row[0] for row in conn.execute("SELECT name FROM council_migrations ORDER BY name")]
    assert applied == [name for name, _ in rows_db.MIGRATIONS]
    MemoryStore.open(tmp_path / "memory", dim=4).close()  # opening again runs nothing and loses nothing
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 2


def test_each_migration_runs_once_and_a_failing_one_leaves_the_last_good_step(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    steps = [("0001_a", "CREATE TABLE a (x INTEGER)"), ("0002_b", "ALTER TABLE a ADD COLUMN y TEXT")]
    assert migrate(conn, steps) == ["0001_a", "0002_b"]
    assert migrate(conn, steps) == []
    broken = [*steps, ("0003_c", "ALTER TABLE a ADD COLUMN z TEXT; ALTER TABLE nope ADD COLUMN w TEXT")]
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(a)")]
    assert columns == ["x", "y"]  # 0003 rolled back whole
    with pytest.raises(ValueError):
        migrate(conn, [*steps, steps[0]])


def test_a_memory_before_supersedes_gains_the_columns_and_keeps_its_rows(tmp_path):
    folder = tmp_path / "memory"
    _old_memory(folder)
    conn = sqlite3.connect(folder / "records.sqlite3", isolation_level=None)
    assert migrate(conn, rows_db.MIGRATIONS[:2]) == ["0001_records", "0002_tools"]  # the release before 0003
    conn.close()
    store = MemoryStore.open(folder, dim=4)
    try:
        old = store.get("rec_old")
        assert old.gold_answer == "Four." and old.supersedes == [] and old.superseded_by is None
        new = ExchangeRecord(query="What is 2+2?", answer="5", confidence=0.9, success=True, model="local/smollm2",
                             id="rec_later", user="alice")
        store.add(new, np.ones(4, "f4"))
        fixed = store.apply_feedback("rec_later", correction="4", supersede_similarity=0.92)
        assert fixed.supersedes == ["rec_old"] and store.get("rec_old").superseded_by == "rec_later"
    finally:
        store.close()
    conn = sqlite3.connect(folder / "records.sqlite3")
    columns = [row[1] for row in conn.execute("PRAGMA table_info(records)")]
    assert columns[-2:] == ["supersedes", "superseded_by"] and "tool_calls" in columns
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 2
    applied = [row[0] for row in conn.execute("SELECT name FROM council_migrations ORDER BY name")]
    assert applied == ["0001_records", "0002_tools", "0003_supersedes"]
    plan = " ".join(str(row) for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT fid FROM records WHERE json_extract(feedback, '$.correction') IS NOT NULL "
        "AND superseded_by IS NULL ORDER BY fid"))
    assert "records_current_corrections" in plan  # recall reads the current corrections' ids from the index
