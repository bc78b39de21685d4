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
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from .._core.logs import redact_text
from ..errors import JournalError
from .journal_files import lock, prepare
from .journal_rows import (
    _ALLOWED_FROM,
    _ASSET_EXISTS,
    _ASSET_MAY_EXIST,
    _COLUMNS,
    _ONE_STATE,
    _REFRESH_MTIME,
    _SCHEMA,
    _UPSERT,
    SCHEMA_VERSION,
    TERMINAL,
    Entry,
    ItemState,
    Registration,
    _is_bearer_url,
    fingerprint_changed,
)
from .journal_rows import ItemState as _S

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL",
    "Entry",
    "ItemState",
    "Journal",
    "Registration",
    "fingerprint_changed",
]

_PAGE: Final = 500  # rows per query when streaming
_CHUNK: Final = 5000  # rows per executemany in register_many
_SECRET_HINTS: Final = ("secret", "password", "passwd", "token", "credential", "api_key", "apikey")


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
