"""The rows of the ingest journal: states, the moves between them (as data), the SQL schema
and upsert, and the row types (see :mod:`.journal` for the state diagram and crash safety)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from .types import Outcome

__all__ = [
    "OUTCOME_OF",
    "SCHEMA_VERSION",
    "STATE_OF",
    "TERMINAL",
    "Entry",
    "Fingerprint",
    "ItemState",
    "Registration",
    "fingerprint_changed",
]

SCHEMA_VERSION: Final = 1


class ItemState(StrEnum):
    """Where an item is; stored as its value."""

    PENDING = "pending"  # registered; nothing sent
    UPLOADED = "uploaded"  # a local file has a signed URL (upload_url, upload_expires_at)
    CREATING = "creating"  # intent committed; the CreateAsset may or may not have been sent
    CREATED = "created"  # asset id known, Processing
    UNKNOWN = "unknown"  # sent, outcome ambiguous: reconcile before any re-create
    ACTIVE = "active"
    FAILED = "failed"
    SKIPPED = "skipped"


_S = ItemState
TERMINAL: Final = frozenset({_S.ACTIVE, _S.FAILED, _S.SKIPPED})
#: a terminal state as the outcome it records (the same string values), and back
OUTCOME_OF: Final[Mapping[ItemState, Outcome]] = {
    _S.ACTIVE: Outcome.ACTIVE,
    _S.FAILED: Outcome.FAILED,
    _S.SKIPPED: Outcome.SKIPPED,
}
STATE_OF: Final[Mapping[Outcome, ItemState]] = {o: s for s, o in OUTCOME_OF.items()}
_ASSET_MAY_EXIST: Final = frozenset({_S.CREATING, _S.CREATED, _S.UNKNOWN, _S.ACTIVE})
#: once the asset exists, the signed upload URL it was created from is dropped
_ASSET_EXISTS: Final = frozenset({_S.CREATED, _S.ACTIVE})
#: target state -> the states it may be entered from (the diagram above, as data).
_ALLOWED_FROM: Final[Mapping[ItemState, frozenset[ItemState]]] = {
    _S.UPLOADED: frozenset({_S.PENDING, _S.UPLOADED}),
    _S.CREATING: frozenset({_S.PENDING, _S.UPLOADED}),
    _S.UNKNOWN: frozenset({_S.CREATING, _S.UNKNOWN}),
    _S.CREATED: frozenset({_S.CREATING, _S.UNKNOWN, _S.CREATED}),
    _S.ACTIVE: frozenset({_S.CREATING, _S.CREATED, _S.UNKNOWN, _S.ACTIVE}),
    _S.FAILED: frozenset({_S.PENDING, _S.UPLOADED, _S.CREATING, _S.CREATED, _S.UNKNOWN, _S.FAILED}),
    _S.SKIPPED: frozenset({_S.PENDING, _S.UPLOADED, _S.SKIPPED}),
    _S.PENDING: frozenset(
        {_S.PENDING, _S.UPLOADED, _S.CREATING, _S.UNKNOWN, _S.FAILED, _S.SKIPPED}
    ),
}

_SCHEMA: Final = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL, source_bytes BLOB,
    content_hash TEXT, size INTEGER, mtime_ns INTEGER,
    name TEXT NOT NULL, asset_type TEXT, label TEXT,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s}'" for s in _S)})),
    asset_id TEXT, upload_url TEXT, upload_expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, error_code TEXT, error_message TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX items_state ON items (state);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_COLUMNS: Final = (
    "key, source, source_bytes, content_hash, size, mtime_ns, name, asset_type, label, state, "
    "asset_id, upload_url, upload_expires_at, attempts, error_code, error_message, updated_at"
)
# Fingerprint "changed", staged (the SQL twin of :func:`fingerprint_changed`): the sizes
# differ, or both hashes are known and differ, or -- only when a hash is missing -- the mtimes
# differ. A value counts only when old and new are known (`!=` is NULL, i.e. false, if either
# is NULL), so equal hashes make an mtime-only change (``touch``) no change at all. A
# PENDING/UPLOADED row takes the new registration (nothing was sent yet), reset to PENDING if
# changed; a FAILED/SKIPPED row only if changed; other rows are never touched.
_CHANGED: Final = (
    "(excluded.size != items.size OR excluded.content_hash != items.content_hash"
    " OR (excluded.mtime_ns != items.mtime_ns"
    " AND (excluded.content_hash IS NULL OR items.content_hash IS NULL)))"
)
# Every SQL text here is built from this module's constants only, never from input (S608).
_UPSERT: Final = f"""
INSERT INTO items (key, source, source_bytes, content_hash, size, mtime_ns, name, asset_type,
                   label, state, attempts, updated_at)
VALUES (:key, :source, :source_bytes, :content_hash, :size, :mtime_ns, :name, :asset_type,
        :label, 'pending', 0, :now)
ON CONFLICT (key) DO UPDATE SET
    source = excluded.source, source_bytes = excluded.source_bytes,
    content_hash = COALESCE(excluded.content_hash, items.content_hash),
    size = COALESCE(excluded.size, items.size),
    mtime_ns = COALESCE(excluded.mtime_ns, items.mtime_ns),
    name = excluded.name, asset_type = excluded.asset_type, label = excluded.label,
    state = CASE WHEN {_CHANGED} THEN 'pending' ELSE items.state END,
    asset_id = CASE WHEN {_CHANGED} THEN NULL ELSE items.asset_id END,
    upload_url = CASE WHEN {_CHANGED} THEN NULL ELSE items.upload_url END,
    upload_expires_at = CASE WHEN {_CHANGED} THEN NULL ELSE items.upload_expires_at END,
    attempts = CASE WHEN {_CHANGED} THEN 0 ELSE items.attempts END,
    error_code = CASE WHEN {_CHANGED} THEN NULL ELSE items.error_code END,
    error_message = CASE WHEN {_CHANGED} THEN NULL ELSE items.error_message END,
    updated_at = excluded.updated_at
WHERE items.state IN ('pending', 'uploaded')
   OR (items.state IN ('failed', 'skipped') AND {_CHANGED})
"""  # noqa: S608
# A registration whose hash equals the stored one keeps the row but records the new mtime,
# so the next run's cheap size+mtime check holds again without hashing.
_REFRESH_MTIME: Final = (
    "UPDATE items SET mtime_ns = :mtime_ns WHERE key = :key AND content_hash = :content_hash"
    " AND (size IS NULL OR :size IS NULL OR size = :size) AND mtime_ns IS NOT :mtime_ns"
)
_ONE_STATE: Final = (
    f"SELECT * FROM (SELECT id, {_COLUMNS} FROM items WHERE state = ? AND id > ? "  # noqa: S608
    "ORDER BY id LIMIT ?)"
)


@dataclass(frozen=True, slots=True)
class Registration:
    """What :meth:`Journal.register_many` takes per item (the arguments of ``register``).

    ``source`` is a local path (stored as raw bytes too, so non-UTF-8 names round-trip) or
    a URL string.
    """

    key: str
    name: str
    source: str | os.PathLike[str]
    content_hash: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    asset_type: str | None = None
    label: str | None = None

    def params(self, now: float) -> dict[str, Any]:
        """The named parameters of the upsert."""
        values = {f: getattr(self, f) for f in self.__slots__ if f != "source"}  # the fields
        raw = os.fsencode(self.source) if isinstance(self.source, os.PathLike) else None
        shown = raw.decode("utf-8", "backslashreplace") if raw is not None else self.source
        return values | {"source": shown, "source_bytes": raw, "now": now}


@dataclass(slots=True)
class Entry:
    """One journal row. ``changed`` is not stored: :meth:`Journal.register` sets it when the
    content changed after an asset may already exist (the row itself is left alone)."""

    key: str
    source: str
    source_bytes: bytes | None
    content_hash: str | None
    size: int | None
    mtime_ns: int | None
    name: str
    asset_type: str | None
    label: str | None
    state: ItemState
    asset_id: str | None
    upload_url: str | None
    upload_expires_at: float | None
    attempts: int
    error_code: str | None
    error_message: str | None
    updated_at: float
    changed: bool = False
    #: not stored either: the asset of a FAILED/SKIPPED row that registering just reset to
    #: PENDING for new content (the group may still hold it under the item's Name)
    stale_asset: str | None = None

    @property
    def fingerprint(self) -> tuple[int | None, int | None, str | None]:
        """``(size, mtime_ns, content_hash)``: what decides whether the content changed."""
        return self.size, self.mtime_ns, self.content_hash

    @property
    def path(self) -> Path | None:
        """The local file (from the raw bytes), or None for a URL item."""
        return None if self.source_bytes is None else Path(os.fsdecode(self.source_bytes))

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> Entry:
        entry = cls(*row)
        entry.state = ItemState(entry.state)
        return entry


Fingerprint = tuple[int | None, int | None, str | None]


def fingerprint_changed(new: Fingerprint, old: Fingerprint) -> bool:
    """Whether ``(size, mtime_ns, content_hash)`` ``new`` is other content than ``old``.

    Staged: different sizes are a change; with both hashes known, only the hashes decide (a
    ``touch`` is no change); without them, different mtimes are a change. A value counts only
    when both sides know it.
    """
    (new_size, new_mtime, new_hash), (old_size, old_mtime, old_hash) = new, old
    if new_size is not None and old_size is not None and new_size != old_size:
        return True
    if new_hash is not None and old_hash is not None:
        return new_hash != old_hash
    return new_mtime is not None and old_mtime is not None and new_mtime != old_mtime


def _is_bearer_url(url: str | None) -> bool:
    """A URL that lets whoever holds it fetch the object (signed http/https)."""
    return url is not None and url.startswith(("http://", "https://"))
