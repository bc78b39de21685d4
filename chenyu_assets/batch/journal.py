"""The ingest journal: one SQLite (WAL) file that makes a bulk ingest resumable and crash-safe.

Each item is a row keyed by its source key, moving through these states::

    register ─> PENDING ──mark_uploaded──> UPLOADED      (a local file got a signed URL)
                   └───────────┬──────────────┘
                               │ mark_intent           (committed BEFORE CreateAsset is sent)
                               v
                           CREATING ──mark_unknown──> UNKNOWN   (sent, outcome ambiguous)
                               │   reconcile CREATING/UNKNOWN: list the group for the Name
                  mark_created │     absent  -> reset_to_pending -> PENDING (create again)
                               v     present -> mark_created / mark_done
                           CREATED ──mark_done──> ACTIVE | FAILED

    SKIPPED: the pre-flight refused the item (from PENDING/UPLOADED).
    FAILED:  a definite failure, from any state that is not terminal.
    adopt:   PENDING/UPLOADED → CREATED when the group already holds the item's Name.

Illegal moves raise ValueError (e.g. ``mark_intent`` from ``UNKNOWN``: an ambiguous create
must be reconciled, then ``reset_to_pending``, before it may be sent again). An unknown key is
a KeyError.

Crash safety. Every ``mark_*`` is one transaction, committed before it returns, with
``synchronous=FULL``: in WAL mode the log is fsynced at each commit, so what a call wrote
survives a SIGKILL (and an OS crash, as far as the disk honours fsync) once it returns.
SQLite's WAL checksums make a torn last transaction invisible, so a kill at any instant
leaves the journal at the last completed call. The dangerous instants:

- killed before ``mark_intent`` returned: the row is PENDING/UPLOADED and nothing was sent,
  so resume sends it normally;
- killed after ``mark_intent`` (before, during or after the CreateAsset, before
  ``mark_created``): the row is CREATING. The send may or may not have happened, so resume
  must not re-send blindly: it lists the group for the item's deterministic Name
  (:func:`~chenyu_assets.batch.naming.asset_name`); found → ``mark_created``/``mark_done``,
  absent → ``reset_to_pending`` and create again;
- a timeout or reset after sending (``mark_unknown``): UNKNOWN, handled like CREATING;
- killed after ``mark_created``: CREATED with the asset id; resume only polls it;
- killed inside ``register_many``: the whole batch rolls back; rerunning registers it again.

Resuming costs no request for finished items: ``register`` returns an existing row as it is
unless its content fingerprint changed (see :meth:`Journal.register`).

One run at a time: :meth:`Journal.open` takes an exclusive ``flock`` on ``<journal>.lock``
(the holder's pid written inside). The kernel drops it when the process exits, even by
SIGKILL, so a crash never leaves a stale lock. The lock file itself is left in place.

``meta`` holds run information (group id, endpoint, an account *fingerprint*); it must never
hold credentials, and keys that look like one (``secret``, ``token``, ``password``...) are
refused. Error messages (server text) are stored redacted; the signed upload URL (a bearer
credential) is dropped once the asset exists (CREATED, ACTIVE, or any row with an asset id);
the files are 0600 (see :mod:`.journal_files`). A Journal is not thread-safe: use it from
the thread that opened it (the event loop's, or one dedicated journal thread); SQLite's
``check_same_thread`` enforces it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from .._core.logs import redact_text
from ..errors import JournalError
from .journal_files import lock, prepare

__all__ = ["TERMINAL", "Entry", "ItemState", "Journal", "Registration", "fingerprint_changed"]

SCHEMA_VERSION: Final = 1
_PAGE: Final = 500  # rows per query when streaming
_CHUNK: Final = 5000  # rows per executemany in register_many
_SECRET_HINTS: Final = ("secret", "password", "passwd", "token", "credential", "api_key", "apikey")


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


class Journal:
    """The journal of one ingest into one group. Open with :meth:`open`; use as a context
    manager or call :meth:`close`."""

    def __init__(
        self, conn: sqlite3.Connection, lock_fd: int, path: Path, clock: Callable[[], float]
    ) -> None:
        self._conn = conn
        self._lock_fd: int | None = lock_fd
        self.path = path
        self._clock = clock

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        run_info: Mapping[str, str] | None = None,
        pinned: Collection[str] = ("group_id",),
        clock: Callable[[], float] = time.time,
    ) -> Journal:
        """Lock, open (creating it and its directory if needed) and check the journal.

        JournalLockedError if another process (or another open Journal) holds it.
        ``run_info`` is stored in ``meta``; a ``pinned`` key whose stored value differs
        (another group in the same journal: a user error) is a JournalError (a ValueError),
        the others are updated. A folder, a file that is not SQLite, or a journal from a
        newer schema is a JournalError too. The file and its lock are created 0600.
        """
        path = Path(path)
        prepare(path)  # before the lock: a folder or a stray file gets no .lock beside it
        lock_fd = lock(path)
        try:
            prepare(path)  # again, now that no other run can create or swap it
            conn = sqlite3.connect(path, isolation_level=None)
        except BaseException:
            os.close(lock_fd)
            raise
        journal = cls(conn, lock_fd, path, clock)
        try:
            journal._setup(run_info or {}, pinned)
        except sqlite3.DatabaseError as exc:
            journal.close()
            raise JournalError(f"journal {path} cannot be used: {exc}") from None
        except BaseException:
            journal.close()
            raise
        return journal

    def _setup(self, run_info: Mapping[str, str], pinned: Collection[str]) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalError(f"journal {self.path}: cannot use WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        with self._tx():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):  # not executescript: it would COMMIT
                    conn.execute(statement)
            elif version != SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.path} has schema version {version}; this version of "
                    f"chenyu-assets reads {SCHEMA_VERSION}"
                )
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            for key, value in run_info.items():
                if any(hint in key.lower() for hint in _SECRET_HINTS):
                    raise ValueError(f"refusing to store {key!r} in the journal: credentials")
                if key in pinned and key in stored and stored[key] != value:
                    raise JournalError(
                        f"journal {self.path} belongs to {key}={stored[key]!r}, not {value!r}; "
                        "use another journal path for another group"
                    )
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(run_info.items()),
            )

    def close(self) -> None:
        """Close the database, then release the lock. Idempotent."""
        if self._lock_fd is None:
            return
        try:
            self._conn.close()
        finally:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}{'' if self._lock_fd is not None else ' closed'}>"

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:  # SQLite may have rolled back already (disk full)
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- reading -----------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """The stored run information."""
        return dict(self._conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        """Store one ``meta`` value (e.g. ``last_run``, the record ``chenyu-assets status``
        shows); credential-like keys are refused as in :meth:`open`."""
        if any(hint in key.lower() for hint in _SECRET_HINTS):
            raise ValueError(f"refusing to store {key!r} in the journal: credentials")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, redact_text(value)),
            )

    def get(self, key: str) -> Entry | None:
        """The row of ``key``, or None."""
        sql = f"SELECT {_COLUMNS} FROM items WHERE key = ?"  # noqa: S608
        row = self._conn.execute(sql, (key,)).fetchone()
        return None if row is None else Entry._from_row(row)

    def counts(self) -> dict[str, int]:
        """Rows per state, every state present (zero when empty)."""
        found = dict(self._conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
        return {s.value: found.get(s.value, 0) for s in _S}

    def iter_state(self, *states: ItemState) -> Iterator[Entry]:
        """Rows in any of ``states``, by insertion order (rowid), read a page at a time.

        Pages are separate queries, so the caller may update rows while iterating: a row
        is never yielded twice, and a row moved into a wanted state ahead of the position
        reached is yielded when reached.
        """
        wanted = list(dict.fromkeys(ItemState(state).value for state in states))
        if not wanted:
            return iter(())
        # One index range per state, merged by rowid: cheap even for a rare state in 1M rows.
        union = " UNION ALL ".join([_ONE_STATE] * len(wanted))
        sql = f"SELECT * FROM ({union}) ORDER BY id LIMIT ?"  # noqa: S608
        return self._paged(
            sql, lambda last: [*(a for w in wanted for a in (w, last, _PAGE)), _PAGE]
        )

    def iter_all(self) -> Iterator[Entry]:
        """Every row by insertion order, read a page at a time."""
        sql = f"SELECT id, {_COLUMNS} FROM items WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608
        return self._paged(sql, lambda last: (last, _PAGE))

    def _paged(self, sql: str, args: Callable[[int], Sequence[Any]]) -> Iterator[Entry]:
        """Rows ``(id, *columns)`` of ``sql``, one page per query, resuming after the last id."""
        last = 0
        while True:
            rows = self._conn.execute(sql, args(last)).fetchall()
            for row in rows:
                last = row[0]
                yield Entry._from_row(row[1:])
            if len(rows) < _PAGE:
                return

    def integrity_ok(self) -> bool:
        """True when ``PRAGMA integrity_check`` says ``ok``."""
        return bool(self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    # --- registering -------------------------------------------------------------------------

    def register(
        self,
        key: str,
        *,
        name: str,
        source: str | os.PathLike[str],
        content_hash: str | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        asset_type: str | None = None,
        label: str | None = None,
    ) -> Entry:
        """Insert ``key`` as PENDING if new, and return its row.

        For an existing row the content fingerprint (``size``, ``mtime_ns``,
        ``content_hash``) decides, staged (:func:`fingerprint_changed`: another size is a
        change; with both hashes known only they decide, so a ``touch`` is none, and the new
        mtime is recorded; without them the mtime decides):

        - unchanged: the row is returned as it is (a PENDING/UPLOADED row takes the new
          name, label, type and source: nothing was sent yet);
        - changed while PENDING, UPLOADED, FAILED or SKIPPED: reset to PENDING with the new
          fingerprint and name (upload URL, asset id, errors and attempts cleared);
        - changed while CREATING, CREATED, UNKNOWN or ACTIVE (an asset may exist): the row
          is left alone and returned with ``changed=True``; the caller decides (report it,
          or ingest the new content under another key).
        """
        reg = Registration(key, name, source, content_hash, size, mtime_ns, asset_type, label)
        with self._tx() as conn:
            params = reg.params(self._clock())
            conn.execute(_UPSERT, params)
            if content_hash is not None and mtime_ns is not None:
                conn.execute(_REFRESH_MTIME, params)
            entry = self.get(key)
        assert entry is not None  # just inserted or updated in this transaction
        changed = fingerprint_changed((size, mtime_ns, content_hash), entry.fingerprint)
        entry.changed = changed and entry.state in _ASSET_MAY_EXIST
        return entry

    def register_many(self, items: Iterable[Registration]) -> None:
        """``register`` every item in one transaction (executemany, chunked; the iterable is
        consumed lazily). Same rules as :meth:`register`; ``changed`` rows are only visible
        through :meth:`get`/:meth:`register`."""
        it = iter(items)
        with self._tx() as conn:
            while chunk := list(itertools.islice(it, _CHUNK)):
                now = self._clock()
                params = [reg.params(now) for reg in chunk]
                conn.executemany(_UPSERT, params)
                hashed = [p for p in params if p["content_hash"] and p["mtime_ns"] is not None]
                if hashed:
                    conn.executemany(_REFRESH_MTIME, hashed)

    # --- transitions -------------------------------------------------------------------------

    def _move(
        self,
        key: str,
        to: ItemState,
        *,
        bump: bool = False,
        allowed: frozenset[ItemState] | None = None,
        **values: Any,
    ) -> None:
        """In one transaction: check the move is allowed (and that a given asset id agrees
        with a stored one), then set the state ``to`` and the given columns."""
        with self._tx() as conn:
            entry = self.get(key)
            if entry is None:
                raise KeyError(key)
            allowed = _ALLOWED_FROM[to] if allowed is None else allowed
            if entry.state not in allowed:
                raise ValueError(
                    f"journal item {key!r}: cannot go from {entry.state} to {to} "
                    f"(only from {', '.join(sorted(allowed))})"
                )
            new_id = values.get("asset_id")
            if new_id is not None and entry.asset_id not in (None, new_id):
                raise ValueError(f"journal item {key!r} has asset {entry.asset_id}, not {new_id}")
            if to is _S.ACTIVE and new_id is None and entry.asset_id is None:
                raise ValueError(f"journal item {key!r}: an active item needs an asset id")
            exists = to in _ASSET_EXISTS or values.get("asset_id") or entry.asset_id
            if exists and _is_bearer_url(entry.upload_url):
                # a signed http(s) URL is a credential; an s3:// location is not (clean-up
                # and the next run's HEAD still need it)
                values |= {"upload_url": None, "upload_expires_at": None}
            if values.get("error_message"):  # server text may echo a credential
                values["error_message"] = redact_text(values["error_message"])
            values |= {"state": to.value, "updated_at": self._clock()}
            sets = [f"{column} = :{column}" for column in values]
            sets += ["attempts = attempts + 1"] if bump else []
            sql = f"UPDATE items SET {', '.join(sets)} WHERE key = :key"  # noqa: S608 (our columns)
            conn.execute(sql, {**values, "key": key})

    def mark_uploaded(self, key: str, *, url: str, expires_at: float | None) -> None:
        """PENDING/UPLOADED → UPLOADED with the signed URL and its expiry (unix time)."""
        self._move(key, _S.UPLOADED, upload_url=url, upload_expires_at=expires_at)

    def mark_intent(self, key: str) -> None:
        """PENDING/UPLOADED → CREATING, ``attempts`` + 1, durable when this returns. Call it
        right before sending CreateAsset, never after."""
        self._move(key, _S.CREATING, bump=True)

    def mark_created(self, key: str, asset_id: str) -> None:
        """CREATING/UNKNOWN → CREATED with the asset id (also when a reconciliation found it).
        Repeating it with the same id is allowed; another id is a ValueError."""
        self._move(key, _S.CREATED, asset_id=asset_id, error_code=None, error_message=None)

    def adopt(self, key: str, asset_id: str) -> None:
        """PENDING/UPLOADED → CREATED with the id of an asset the group already holds under
        the item's Name (made by another journal): nothing is sent for it."""
        self._move(
            key,
            _S.CREATED,
            allowed=frozenset({_S.PENDING, _S.UPLOADED}),
            asset_id=asset_id,
            error_code=None,
            error_message=None,
        )

    def mark_unknown(self, key: str, *, error_code: str | None, message: str | None) -> None:
        """CREATING → UNKNOWN: the send happened and its outcome is not known."""
        self._move(key, _S.UNKNOWN, error_code=error_code, error_message=message)

    def mark_done(
        self,
        key: str,
        state: ItemState,
        *,
        asset_id: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Finish an item: ACTIVE (from CREATING, CREATED, UNKNOWN; the asset id given or
        already stored), FAILED (from any state that is not terminal) or SKIPPED (from
        PENDING/UPLOADED: the pre-flight refused it)."""
        state = ItemState(state)
        if state not in TERMINAL:
            raise ValueError(f"mark_done takes active, failed or skipped, not {state}")
        values: dict[str, Any] = {} if asset_id is None else {"asset_id": asset_id}
        self._move(key, state, error_code=error_code, error_message=message, **values)

    def reset_to_pending(self, key: str) -> None:
        """Back to PENDING once it is proven no asset exists (reconciliation found nothing),
        or to retry a FAILED/SKIPPED item. Clears the asset id and error; keeps ``attempts``
        and the upload URL (reusable until ``upload_expires_at``). ValueError from CREATED
        or ACTIVE."""
        self._move(key, _S.PENDING, asset_id=None, error_code=None, error_message=None)

    def mark_replaced(self, key: str, *, size: int | None, mtime_ns: int | None) -> None:
        """ACTIVE → PENDING for new content, once its old asset was deleted (``--replace-changed``):
        asset id, hash, upload URL, errors and attempts cleared, the new size and mtime kept
        (the pre-flight hashes the new content). ValueError from any other state."""
        with self._tx() as conn:
            entry = self.get(key)
            if entry is None:
                raise KeyError(key)
            if entry.state is not _S.ACTIVE:
                raise ValueError(f"journal item {key!r}: only an active item is replaced")
            conn.execute(
                "UPDATE items SET state = 'pending', asset_id = NULL, content_hash = NULL,"
                " upload_url = NULL, upload_expires_at = NULL, attempts = 0, error_code = NULL,"
                " error_message = NULL, size = ?, mtime_ns = ?, updated_at = ? WHERE key = ?",
                (size, mtime_ns, self._clock(), key),
            )
