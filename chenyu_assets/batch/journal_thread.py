"""The journal of a run behind a typed async facade, on a thread of its own.

:class:`JournalFacade` is what the engine depends on: one ``async`` method per journal move,
with typed arguments (mypy sees every call; nothing is dispatched by name). A store other
than SQLite (a shared work queue, say) implements the same methods.

:class:`AsyncJournal` is the SQLite one. SQLite connections belong to the thread that opened
them, and a durable commit (an fsync) must not stall the event loop that paces requests:
every call runs on one dedicated worker thread, in order.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from chenyu_assets.batch.journal import (
    Entry,
    ItemState,
    Journal,
    Registration,
    fingerprint_changed,
)
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.sources import BadItem, SourceItem

__all__ = ["AsyncJournal", "JournalFacade", "Registered", "register_batch", "take"]

T = TypeVar("T")
P = ParamSpec("P")
_ASSET_MAY_EXIST = frozenset(
    {ItemState.CREATING, ItemState.CREATED, ItemState.UNKNOWN, ItemState.ACTIVE}
)
_RESET_WHEN_CHANGED = frozenset({ItemState.FAILED, ItemState.SKIPPED})
#: what registering a batch gives back: the row of each item (or the BadItem as it was)
Registered = list[tuple[Entry | BadItem, SourceItem | None]]


class JournalFacade(Protocol):
    """The journal moves of an ingest, awaited (see :class:`~.journal.Journal` for what
    each one does, its allowed states and its crash-safety)."""

    async def get(self, key: str) -> Entry:
        """The row of ``key`` (KeyError when there is none)."""
        ...

    async def register(
        self,
        key: str,
        *,
        name: str,
        source: str | os.PathLike[str],
        content_hash: str | None = None,
        size: int | None = None,
        asset_type: str | None = None,
        label: str | None = None,
    ) -> Entry: ...

    async def register_batch(
        self, batch: list[SourceItem | BadItem], hashes: Mapping[str, str]
    ) -> Registered: ...

    async def needs_hash(self, batch: list[SourceItem | BadItem]) -> dict[str, Path]:
        """The items whose size is the journal's but whose mtime is not (hash them)."""
        ...

    async def mark_uploaded(self, key: str, *, url: str, expires_at: float | None) -> None: ...

    async def mark_intent(self, key: str) -> None: ...

    async def mark_created(self, key: str, asset_id: str) -> None: ...

    async def adopt(self, key: str, asset_id: str) -> None: ...

    async def mark_unknown(
        self, key: str, *, error_code: str | None, message: str | None
    ) -> None: ...

    async def mark_done(
        self,
        key: str,
        state: ItemState,
        *,
        asset_id: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None: ...

    async def reset_to_pending(self, key: str) -> None: ...

    async def mark_replaced(self, key: str, *, size: int | None, mtime_ns: int | None) -> None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


class AsyncJournal:
    """A :class:`Journal` whose every call runs on one dedicated thread, in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chenyu-journal")
        self.journal: Journal | None = None

    async def open(
        self, path: str | os.PathLike[str], *, run_info: Mapping[str, str] | None = None
    ) -> None:
        self.journal = await self._run(Journal.open, Path(path), run_info=run_info)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the journal thread (checked against ``fn``'s types)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def _j(self) -> Journal:
        if self.journal is None:
            raise RuntimeError("journal is not open")
        return self.journal

    async def get(self, key: str) -> Entry:
        entry = await self._run(self._j().get, key)
        if entry is None:
            raise KeyError(key)
        return entry

    async def register(
        self,
        key: str,
        *,
        name: str,
        source: str | os.PathLike[str],
        content_hash: str | None = None,
        size: int | None = None,
        asset_type: str | None = None,
        label: str | None = None,
    ) -> Entry:
        return await self._run(
            self._j().register,
            key,
            name=name,
            source=source,
            content_hash=content_hash,
            size=size,
            asset_type=asset_type,
            label=label,
        )

    async def register_batch(
        self, batch: list[SourceItem | BadItem], hashes: Mapping[str, str]
    ) -> Registered:
        return await self._run(register_batch, self._j(), batch, hashes)

    async def needs_hash(self, batch: list[SourceItem | BadItem]) -> dict[str, Path]:
        return await self._run(_needs_hash, self._j(), batch)

    async def mark_uploaded(self, key: str, *, url: str, expires_at: float | None) -> None:
        await self._run(self._j().mark_uploaded, key, url=url, expires_at=expires_at)

    async def mark_intent(self, key: str) -> None:
        await self._run(self._j().mark_intent, key)

    async def mark_created(self, key: str, asset_id: str) -> None:
        await self._run(self._j().mark_created, key, asset_id)

    async def adopt(self, key: str, asset_id: str) -> None:
        await self._run(self._j().adopt, key, asset_id)

    async def mark_unknown(self, key: str, *, error_code: str | None, message: str | None) -> None:
        await self._run(self._j().mark_unknown, key, error_code=error_code, message=message)

    async def mark_done(
        self,
        key: str,
        state: ItemState,
        *,
        asset_id: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        await self._run(
            self._j().mark_done,
            key,
            state,
            asset_id=asset_id,
            error_code=error_code,
            message=message,
        )

    async def reset_to_pending(self, key: str) -> None:
        await self._run(self._j().reset_to_pending, key)

    async def mark_replaced(self, key: str, *, size: int | None, mtime_ns: int | None) -> None:
        await self._run(self._j().mark_replaced, key, size=size, mtime_ns=mtime_ns)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(self._j().set_meta, key, value)

    async def close(self) -> None:
        if self.journal is not None:
            await self._run(self.journal.close)
            self.journal = None
        self._pool.shutdown(wait=True)


def take(iterator: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(iterator, n))


def _needs_hash(journal: Journal, batch: list[SourceItem | BadItem]) -> dict[str, Path]:
    """Items of the staged check's stage 3 (see :mod:`.fingerprints`): a stored hash, the
    same size, another mtime."""
    out: dict[str, Path] = {}
    for item in batch:
        if isinstance(item, BadItem) or item.path is None:
            continue
        entry = journal.get(item.key)
        if entry is None or entry.content_hash is None:
            continue
        try:
            st = os.stat(item.path)
        except OSError:
            continue
        if st.st_size == entry.size and st.st_mtime_ns != entry.mtime_ns:
            out[item.key] = item.path
    return out


def register_batch(
    journal: Journal,
    batch: list[SourceItem | BadItem],
    hashes: Mapping[str, str] | None = None,
) -> Registered:
    """Register a batch in one transaction (runs on the journal thread). ``hashes``: the
    content hashes already known (key -> sha-256; see :mod:`.fingerprints`)."""
    hashes = hashes or {}
    regs: list[Registration] = []
    for item in batch:
        if isinstance(item, BadItem):
            continue
        size = mtime = None
        if item.path is not None:
            try:
                st = os.stat(item.path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                pass
        name = item.name or asset_name(item.key, label=item.label)
        source: str | os.PathLike[str] = item.path if item.path is not None else (item.url or "")
        regs.append(
            Registration(
                item.key,
                name,
                source,
                hashes.get(item.key),
                size,
                mtime,
                item.asset_type,
                item.label,
            )
        )
    stale: dict[str, str] = {}  # key -> the asset of a finished row new content resets
    for reg in regs:
        if reg.size is None:  # a URL item: no fingerprint, never "changed"
            continue
        old = journal.get(reg.key)
        if (
            old is not None
            and old.asset_id
            and old.state in _RESET_WHEN_CHANGED
            and fingerprint_changed((reg.size, reg.mtime_ns, reg.content_hash), old.fingerprint)
        ):
            stale[reg.key] = old.asset_id
    journal.register_many(regs)
    out: Registered = []
    by_key = {r.key: r for r in regs}
    for item in batch:
        if isinstance(item, BadItem):
            out.append((item, None))
            continue
        reg = by_key[item.key]
        entry = journal.get(item.key)
        if entry is None:  # pragma: no cover - just registered
            raise RuntimeError(f"journal lost {item.key!r}")
        if entry.state in _ASSET_MAY_EXIST:
            entry.changed = fingerprint_changed(
                (reg.size, reg.mtime_ns, reg.content_hash), entry.fingerprint
            )
        entry.stale_asset = stale.get(item.key)
        out.append((entry, item))
    return out
