"""SQLite persistence for the emulator's metadata (stdlib ``sqlite3``, WAL).

The in-memory store is the source of truth while running; every mutation is written
through here as one short autocommit statement (WAL + ``synchronous=NORMAL``: a few tens of
microseconds each, fine for thousands of assets). At start the whole state is loaded back.
Only the event-loop thread touches the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Persistence", "SqlitePersistence"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, project TEXT NOT NULL, name TEXT NOT NULL,
    description TEXT NOT NULL, group_type TEXT NOT NULL,
    create_time REAL NOT NULL, update_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, project TEXT NOT NULL, group_id TEXT NOT NULL,
    name TEXT NOT NULL, source_url TEXT NOT NULL, asset_type TEXT NOT NULL,
    status TEXT NOT NULL, error_code TEXT, error_message TEXT,
    create_time REAL NOT NULL, update_time REAL NOT NULL, blob TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    asset_id TEXT PRIMARY KEY, account TEXT NOT NULL, stored_filename TEXT NOT NULL,
    original_filename TEXT NOT NULL, media_type TEXT NOT NULL, mime_type TEXT NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, purpose TEXT NOT NULL,
    ttl_hours INTEGER NOT NULL, create_time REAL NOT NULL, expires_time REAL NOT NULL
);
"""


class Persistence:
    """No-op persistence (in-memory emulator). Subclassed by :class:`SqlitePersistence`."""

    def upsert(self, table: str, columns: Sequence[str], values: Sequence[Any]) -> None:
        """Insert or replace one row."""

    def delete(self, table: str, key_column: str, keys: Sequence[str]) -> None:
        """Delete the rows whose ``key_column`` is in ``keys``."""

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Every row of ``table`` (nothing for the in-memory variant)."""
        return iter(())

    def get_meta(self, key: str) -> str | None:
        """A stored metadata value."""
        return None

    def set_meta(self, key: str, value: str) -> None:
        """Store a metadata value."""

    def close(self) -> None:
        """Release the database."""


class SqlitePersistence(Persistence):
    """Write-through SQLite file at ``path``."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def upsert(self, table: str, columns: Sequence[str], values: Sequence[Any]) -> None:
        marks = ",".join("?" * len(columns))
        sql = f"INSERT OR REPLACE INTO {table} ({','.join(columns)}) VALUES ({marks})"  # noqa: S608 - fixed identifiers
        self._db.execute(sql, tuple(values))

    def delete(self, table: str, key_column: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        if len(keys) == 1:
            self._db.execute(f"DELETE FROM {table} WHERE {key_column} = ?", (keys[0],))  # noqa: S608
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                f"DELETE FROM {table} WHERE {key_column} = ?",  # noqa: S608
                [(k,) for k in keys],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        cursor = self._db.execute(f"SELECT {','.join(columns)} FROM {table}")  # noqa: S608
        yield from cursor

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self._db.close()
