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

from chenyu_assets._api import AssetAPI
from chenyu_assets.batch.checks import sha256_of
from chenyu_assets.batch.journal import Entry, ItemState
from chenyu_assets.batch.journal_thread import JournalFacade, Registered
from chenyu_assets.batch.sources import BadItem, SourceItem
from chenyu_assets.errors import APIError, NotFoundError, TransportError

__all__ = ["register_items", "replace_asset"]


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


async def register_items(journal: JournalFacade, batch: list[SourceItem | BadItem]) -> Registered:
    """Register a batch with the staged content check (see the module docstring)."""
    need = await journal.needs_hash(batch)
    hashes = await anyio.to_thread.run_sync(_hash_all, need) if need else {}
    return await journal.register_batch(batch, hashes)


async def replace_asset(ark: AssetAPI, journal: JournalFacade, entry: Entry) -> Entry:
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
    await journal.mark_replaced(entry.key, size=size, mtime_ns=mtime)
    return await journal.get(entry.key)
