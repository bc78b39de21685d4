"""The journal on a thread of its own.

SQLite connections belong to the thread that opened them, and a durable commit (an fsync)
must not stall the event loop that paces requests: every journal call of an ingest runs on
one dedicated worker thread, in order.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from chenyu_assets.batch.journal import (
    Entry,
    ItemState,
    Journal,
    Registration,
    fingerprint_changed,
)
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.sources import BadItem, SourceItem

__all__ = ["JournalThread", "register_batch", "take"]

T = TypeVar("T")
_ASSET_MAY_EXIST = frozenset(
    {ItemState.CREATING, ItemState.CREATED, ItemState.UNKNOWN, ItemState.ACTIVE}
)


class JournalThread:
    """Runs every journal call on one dedicated thread (SQLite connections are per thread,
    and an fsync must not stall the event loop that paces requests)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chenyu-journal")
        self.journal: Journal | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        journal = self.journal
        if journal is None:
            raise RuntimeError("journal is not open")
        return await self.run(getattr(journal, method), *args, **kwargs)

    async def close(self) -> None:
        if self.journal is not None:
            await self.run(self.journal.close)
            self.journal = None
        self._pool.shutdown(wait=True)


def take(iterator: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(iterator, n))


def register_batch(
    journal: Journal | None,
    batch: list[SourceItem | BadItem],
    hashes: Mapping[str, str] | None = None,
) -> list[tuple[Entry | BadItem, SourceItem | None]]:
    """Register a batch in one transaction (runs on the journal thread). ``hashes``: the
    content hashes already known (key -> sha-256; see :mod:`.fingerprints`)."""
    hashes = hashes or {}
    if journal is None:
        raise RuntimeError("journal is not open")
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
    journal.register_many(regs)
    out: list[tuple[Entry | BadItem, SourceItem | None]] = []
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
        out.append((entry, item))
    return out
