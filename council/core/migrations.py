"""Versioned schema changes: each database remembers which named migrations it has run, and runs the rest in order.

A migration is a name and the SQL that brings the schema one step forward. ``migrate(conn, migrations)`` keeps
the names already applied in a ``council_migrations`` table (as simonw/llm keeps ``_llm_migrations``) and runs the
missing ones in order, each in its own transaction with its record, so a database made by any earlier release
opens on the newest schema and a crash mid-way leaves it at a step. Append new migrations; never edit one that
has shipped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

TABLE = "council_migrations"


def migrate(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]]) -> list[str]:
    """Apply the ``(name, sql)`` pairs not yet recorded on ``conn`` (autocommit mode); returns the names run."""
    names = [name for name, _ in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"migration names must be unique: {names}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_us INTEGER NOT NULL)")
    done = {row[0] for row in conn.execute(f"SELECT name FROM {TABLE}")}
    ran = []
    for name, sql in migrations:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute(f"SELECT 1 FROM {TABLE} WHERE name = ?", (name,)).fetchone() is None:  # another process?
                for statement in (s.strip() for s in sql.split(";")):
                    if statement:
                        conn.execute(statement)
                conn.execute(f"INSERT INTO {TABLE} (name, applied_us) VALUES (?, ?)", (name, time.time_ns() // 1000))
                ran.append(name)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return ran
