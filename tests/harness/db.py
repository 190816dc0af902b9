"""Reading and writing a store straight, not through the code under test, so a test sees (and
sets up) what is really there."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from campaign.store import Store


def read_rows(db: Path, query: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(query, params).fetchall()


def dump_tables(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table (and the schema), to prove a command changed nothing."""
    with sqlite3.connect(db) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        dump = {
            "sqlite_master": conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
        }
        for name in names:
            dump[name] = conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
    return dump


def integrity(db: Path) -> str:
    """SQLite's own verdict on the file: "ok" when no page is damaged."""
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


@dataclass
class Db:
    url: str
    folder: Path

    def run(self, sql: str, **params: Any) -> list[Any]:
        """Straight SQL on the database, committed; not through the code under test."""
        store = Store.open(self.url, create=False)
        try:
            with store.db.engine.begin() as conn:
                result = conn.execute(text(sql), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            store.close()
