"""The emulator's one store: asset groups, Ark assets and Chenyu uploads of every account.

Everything is scoped by account, and groups and assets also by ``ProjectName``: a lookup
outside its scope finds nothing (the caller answers NotFound). It also keeps the
per-account count of ``Processing`` assets (the in-flight cap). All methods are synchronous
and run on the event loop, so each is atomic.

The in-memory store is the source of truth while running. With a data directory, every
mutation is written through to SQLite (stdlib ``sqlite3``, WAL + ``synchronous=NORMAL``)
as one short autocommit statement, and the whole state is loaded back at start. Only the
event-loop thread touches the connection.
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from chenyu_assets.emulator.config import AuditAsset, AuditGroup, AuditUpload

__all__ = [
    "AssetRec",
    "GroupRec",
    "Persistence",
    "SqlitePersistence",
    "Store",
    "UploadRec",
    "new_ark_id",
]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_ark_id(prefix: str, now: float) -> str:
    """``<prefix>-YYYYMMDDhhmmss-xxxxx`` for the emulated UTC time ``now``."""
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d%H%M%S")
    tail = "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))
    return f"{prefix}-{stamp}-{tail}"


@dataclass(slots=True)
class GroupRec:
    """An asset group (times are emulated Unix seconds)."""

    id: str
    account: str
    project: str
    name: str
    description: str
    group_type: str
    create_time: float
    update_time: float
    created_t: float | None = None


@dataclass(slots=True)
class AssetRec:
    """An Ark asset. ``blob`` names retained content under ``blobs/``; ``source_url`` is
    what CreateAsset was given."""

    id: str
    account: str
    project: str
    group_id: str
    name: str
    source_url: str
    asset_type: str
    status: str
    error_code: str | None
    error_message: str | None
    create_time: float
    update_time: float
    blob: str | None = None
    created_t: float | None = None
    finished_t: float | None = None


@dataclass(slots=True)
class UploadRec:
    """A Chenyu upload stored as ``blobs/<stored_filename>``."""

    asset_id: str
    account: str
    stored_filename: str
    original_filename: str
    media_type: str
    mime_type: str
    size: int
    sha256: str
    purpose: str
    ttl_hours: int
    create_time: float
    expires_time: float


_MEMORY_ONLY = frozenset({"created_t", "finished_t"})


def _columns(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _MEMORY_ONLY)


_GROUP_COLS = _columns(GroupRec)
_ASSET_COLS = _columns(AssetRec)
_UPLOAD_COLS = _columns(UploadRec)

Scope = tuple[str, str]
_R = TypeVar("_R", GroupRec, AssetRec)


def _scoped(rec: _R | None, account: str, project: str) -> _R | None:
    """``rec`` if it belongs to this account and project."""
    if rec is None or rec.account != account or rec.project != project:
        return None
    return rec


_M = TypeVar("_M", AuditGroup, AuditAsset, AuditUpload)


def _view(model: type[_M], rec: object, **renamed: str) -> _M:
    """``model`` built from the record's same-named (or ``renamed``) attributes."""
    return model.model_construct(**{f: getattr(rec, renamed.get(f, f)) for f in model.model_fields})


class Store:
    """In-memory indices over groups, assets and uploads, written through to ``persist``."""

    def __init__(self, persist: Persistence) -> None:
        self._persist = persist
        self._groups: dict[str, GroupRec] = {}
        self._assets: dict[str, AssetRec] = {}
        self._uploads: dict[str, UploadRec] = {}
        self._scope_groups: dict[Scope, dict[str, None]] = {}
        self._scope_assets: dict[Scope, dict[str, None]] = {}
        self._group_assets: dict[str, dict[str, None]] = {}
        self._processing: dict[str, int] = {}
        self._meta: dict[str, str] = {}
        self._load()

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        for row in self._persist.rows("groups", _GROUP_COLS):
            self._index_group(GroupRec(*row))
        for row in self._persist.rows("assets", _ASSET_COLS):
            self._index_asset(AssetRec(*row))
        for row in self._persist.rows("uploads", _UPLOAD_COLS):
            rec = UploadRec(*row)
            self._uploads[rec.asset_id] = rec

    def _index_group(self, rec: GroupRec) -> None:
        self._groups[rec.id] = rec
        self._scope_groups.setdefault((rec.account, rec.project), {})[rec.id] = None
        self._group_assets.setdefault(rec.id, {})

    def _index_asset(self, rec: AssetRec) -> None:
        self._assets[rec.id] = rec
        self._scope_assets.setdefault((rec.account, rec.project), {})[rec.id] = None
        self._group_assets.setdefault(rec.group_id, {})[rec.id] = None
        if rec.status == "Processing":
            self._processing[rec.account] = self._processing.get(rec.account, 0) + 1

    # -- metadata ----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A metadata value (kept in memory, persisted when a data directory is used)."""
        if key not in self._meta:
            value = self._persist.get_meta(key)
            if value is None:
                return None
            self._meta[key] = value
        return self._meta[key]

    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value."""
        self._meta[key] = value
        self._persist.set_meta(key, value)

    # -- groups ------------------------------------------------------------------------------

    def group_id_taken(self, group_id: str) -> bool:
        """True when ``group_id`` exists in any scope."""
        return group_id in self._groups

    def add_group(self, rec: GroupRec) -> None:
        """Insert a new group."""
        self._index_group(rec)
        self.save_group(rec)

    def save_group(self, rec: GroupRec) -> None:
        """Persist a changed group."""
        self._persist.upsert("groups", _GROUP_COLS, self._row(rec, _GROUP_COLS))

    def get_group(self, account: str, project: str, group_id: str) -> GroupRec | None:
        """The group if it exists in this account and project."""
        return _scoped(self._groups.get(group_id), account, project)

    def groups(self, account: str, project: str) -> Iterator[GroupRec]:
        """The groups of one scope, oldest first."""
        for group_id in self._scope_groups.get((account, project), {}):
            yield self._groups[group_id]

    def delete_group(self, rec: GroupRec) -> list[AssetRec]:
        """Remove a group and all its assets; returns the removed assets."""
        removed = [self._assets[a] for a in list(self._group_assets.get(rec.id, {}))]
        for asset in removed:
            self._unindex_asset(asset)
        self._persist.delete("assets", "id", [a.id for a in removed])
        self._groups.pop(rec.id, None)
        self._scope_groups.get((rec.account, rec.project), {}).pop(rec.id, None)
        self._group_assets.pop(rec.id, None)
        self._persist.delete("groups", "id", [rec.id])
        return removed

    # -- assets ------------------------------------------------------------------------------

    def asset_id_taken(self, asset_id: str) -> bool:
        """True when ``asset_id`` exists in any scope."""
        return asset_id in self._assets

    def add_asset(self, rec: AssetRec) -> None:
        """Insert a new asset (counts toward the in-flight cap while Processing)."""
        self._index_asset(rec)
        self.save_asset(rec)

    def save_asset(self, rec: AssetRec) -> None:
        """Persist a changed asset (not its status: use :meth:`finish_asset`)."""
        self._persist.upsert("assets", _ASSET_COLS, self._row(rec, _ASSET_COLS))

    def finish_asset(
        self,
        rec: AssetRec,
        *,
        status: str,
        now: float,
        t: float,
        error_code: str | None = None,
        error_message: str | None = None,
        blob: str | None = None,
    ) -> None:
        """Move a Processing asset to Active or Failed."""
        if rec.status == "Processing":
            self._processing[rec.account] = max(0, self._processing.get(rec.account, 0) - 1)
        rec.status = status
        rec.error_code = error_code
        rec.error_message = error_message
        rec.update_time = now
        rec.finished_t = t
        if blob is not None:
            rec.blob = blob
        self.save_asset(rec)

    def get_asset(self, account: str, project: str, asset_id: str) -> AssetRec | None:
        """The asset if it exists in this account and project."""
        return _scoped(self._assets.get(asset_id), account, project)

    def asset_by_id(self, asset_id: str) -> AssetRec | None:
        """Any asset by id (internal use: processing, signed content URLs)."""
        return self._assets.get(asset_id)

    def assets(
        self, account: str, project: str, group_ids: Iterable[str] | None = None
    ) -> Iterator[AssetRec]:
        """Assets of one scope, optionally only those of ``group_ids``."""
        if group_ids is None:
            for asset_id in self._scope_assets.get((account, project), {}):
                yield self._assets[asset_id]
            return
        for group_id in dict.fromkeys(group_ids):
            if self.get_group(account, project, group_id) is None:
                continue
            for asset_id in self._group_assets.get(group_id, {}):
                yield self._assets[asset_id]

    def delete_asset(self, rec: AssetRec) -> None:
        """Remove one asset."""
        self._unindex_asset(rec)
        self._persist.delete("assets", "id", [rec.id])

    def _unindex_asset(self, rec: AssetRec) -> None:
        if self._assets.pop(rec.id, None) is None:
            return
        self._scope_assets.get((rec.account, rec.project), {}).pop(rec.id, None)
        self._group_assets.get(rec.group_id, {}).pop(rec.id, None)
        if rec.status == "Processing":
            self._processing[rec.account] = max(0, self._processing.get(rec.account, 0) - 1)

    def processing_count(self, account: str) -> int:
        """Assets of ``account`` currently Processing."""
        return self._processing.get(account, 0)

    def processing_assets(self) -> list[AssetRec]:
        """Every Processing asset (to reschedule after a restart)."""
        return [a for a in self._assets.values() if a.status == "Processing"]

    # -- uploads -----------------------------------------------------------------------------

    def add_upload(self, rec: UploadRec) -> None:
        """Record a stored upload."""
        self._uploads[rec.asset_id] = rec
        self._persist.upsert("uploads", _UPLOAD_COLS, self._row(rec, _UPLOAD_COLS))

    def upload_id_taken(self, asset_id: str) -> bool:
        """True when an upload has this id."""
        return asset_id in self._uploads

    def get_upload(self, asset_id: str) -> UploadRec | None:
        """An upload by id, in any account (callers check the owner)."""
        return self._uploads.get(asset_id)

    # -- audit -------------------------------------------------------------------------------

    def audit(self) -> tuple[list[AuditGroup], list[AuditAsset], list[AuditUpload]]:
        """The groups, assets and uploads for an audit snapshot."""
        return (
            [_view(AuditGroup, g) for g in self._groups.values()],
            [_view(AuditAsset, a, url="source_url") for a in self._assets.values()],
            [_view(AuditUpload, u) for u in self._uploads.values()],
        )

    def close(self) -> None:
        """Close the persistence backend."""
        self._persist.close()

    @staticmethod
    def _row(rec: object, cols: tuple[str, ...]) -> list[object]:
        return [getattr(rec, c) for c in cols]

    def __repr__(self) -> str:
        return (
            f"Store(groups={len(self._groups)}, assets={len(self._assets)}, "
            f"uploads={len(self._uploads)})"
        )


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
    """No-op persistence (an in-memory emulator); :class:`SqlitePersistence` writes through."""

    def upsert(self, table: str, columns: Sequence[str], values: Sequence[Any]) -> None:
        """Insert or replace one row."""

    def delete(self, table: str, key_column: str, keys: Sequence[str]) -> None:
        """Delete the rows whose ``key_column`` is in ``keys``."""

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Every row of ``table``."""
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
