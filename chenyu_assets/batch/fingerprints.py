"""Content, not mtime: the staged change check of a rerun, and ``--replace-changed``.

When a file comes back in a later run, its journal row decides what happens, and the row
only changes when the *content* did:

1. size and mtime equal to the journal's: unchanged (no read at all);
2. the size differs: changed;
3. same size, another mtime (a ``touch``, a copy that kept the bytes): the file is hashed
   (SHA-256, the pre-flight's fingerprint) and only another hash is a change. An equal hash
   records the new mtime, so the next run is back to stage 1. A row without a stored hash
   (``IngestOptions(preflight=False)`` never hashes) cannot be compared: then the mtime
   decides, as before.

Hashing happens in a worker thread, one batch at a time, and only for the rows of stage 3.

A real change of an item that is already Active is reported ``skipped`` / ``source_changed``
(the asset keeps the old content) unless the run was asked to replace it
(``IngestOptions(replace_changed=True)``, ``--replace-changed``): then the old asset is
deleted first and the item is created again under the same deterministic name, so the group
never holds two assets for one item. The delete comes before the journal forgets the old
id: a kill in between leaves the row Active with a deleted id, and the next run (the file
still differs) deletes again (NotFound counts as done) and goes on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import anyio

from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch.checks import sha256_of
from chenyu_assets.batch.journal import Entry, ItemState, Journal
from chenyu_assets.batch.journal_thread import JournalThread, register_batch
from chenyu_assets.batch.sources import BadItem, SourceItem
from chenyu_assets.errors import APIError, NotFoundError, TransportError

__all__ = ["register_items", "replace_asset"]


def _needs_hash(journal: Journal | None, batch: list[SourceItem | BadItem]) -> dict[str, Path]:
    """Items of stage 3 (journal thread): a stored hash, the same size, another mtime."""
    if journal is None:
        raise RuntimeError("journal is not open")
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


def _hash_all(paths: Mapping[str, Path]) -> dict[str, str]:
    """key -> SHA-256 (worker thread); a file that cannot be read is left out (its mtime
    then decides)."""
    out: dict[str, str] = {}
    for key, path in paths.items():
        try:
            out[key] = sha256_of(path)
        except (OSError, ValueError):
            continue
    return out


async def register_items(
    jt: JournalThread, batch: list[SourceItem | BadItem]
) -> list[tuple[Entry | BadItem, SourceItem | None]]:
    """:func:`register_batch` with the staged content check (see the module docstring)."""
    need = await jt.run(_needs_hash, jt.journal, batch)
    hashes = await anyio.to_thread.run_sync(_hash_all, need) if need else {}
    return await jt.run(register_batch, jt.journal, batch, hashes)


async def replace_asset(ark: ArkFamilyClient, jt: JournalThread, entry: Entry) -> Entry:
    """Delete the old asset of a changed Active item (NotFound: already gone), then reset its
    row to PENDING with the file's size and mtime; the fresh row. APIError/TransportError
    from the delete propagate (the row is left Active: a rerun tries again)."""
    if entry.state is not ItemState.ACTIVE or entry.asset_id is None:
        raise ValueError(f"{entry.key!r} is not an active item")
    try:
        await ark.delete_asset(entry.asset_id)
    except NotFoundError:
        pass
    except (APIError, TransportError):
        raise
    size = mtime = None
    path = entry.path
    if path is not None:
        try:
            st = await anyio.to_thread.run_sync(os.stat, path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            pass
    await jt.call("mark_replaced", entry.key, size=size, mtime_ns=mtime)
    fresh: Entry | None = await jt.call("get", entry.key)
    if fresh is None:  # pragma: no cover - the row was just updated
        raise RuntimeError(f"journal lost {entry.key!r}")
    return fresh
