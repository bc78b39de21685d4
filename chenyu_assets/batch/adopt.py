"""Adoption by name: what the group already holds is adopted, never created twice.

A new journal (another directory, a CI runner, a deleted ``.chenyu/``) knows nothing of an
earlier run, but the group does: every item has a deterministic Name
(:func:`~chenyu_assets.batch.naming.asset_name`). Before the first item of a run would be
uploaded and created, the ingest walks the group once (``ListAssets`` filtered by the group
id, 100 per call: ``ceil(assets / 100)`` calls, at least one) and keeps a :class:`NameIndex`
of the names it holds; then each new item whose Name is there is *adopted* instead of
created: an ``Active`` asset is the item's result, a ``Processing`` one is watched, a
``Failed`` one is reported (or deleted and created anew when it may be retried, see
:func:`retryable`).

Names are matched exactly on the client (the server's ``Filter.Name`` is a substring
match). The index keeps an 8-byte hash per name (a 64-bit blake2b: the chance that any two
of a million names share one is about 3 in 10^8), the asset id and one byte of status:
about 55 bytes per asset, 1,000,000 assets in about 60 MB.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from hashlib import blake2b
from typing import Final

import anyio

from chenyu_assets._api import AssetAPI
from chenyu_assets.batch.types import retryable
from chenyu_assets.errors import APIError, NotFoundError, TransportError
from chenyu_assets.models.ark import Asset

__all__ = ["Adoption", "Found", "NameIndex", "delete_failed", "may_retry"]

_STATUSES: Final = ("Processing", "Active", "Failed", "")  # "": deleted by this run
#: which of two assets with one name is kept: Active before Processing before Failed
_RANK: Final = {"Active": 0, "Processing": 1, "Failed": 2}


@dataclass(frozen=True, slots=True)
class Found:
    """An asset of the group with the item's exact Name."""

    asset_id: str
    status: str
    error_code: str | None

    @classmethod
    def of(cls, asset: Asset | None) -> Found | None:
        if asset is None:
            return None
        return cls(asset.id, asset.status, asset.error.code if asset.error else None)

    def asset(self) -> Asset:
        error = {"Code": self.error_code} if self.error_code else None
        return Asset.model_validate({"Id": self.asset_id, "Status": self.status, "Error": error})


def _hash(name: str) -> int:
    digest = blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1  # 0 marks an empty slot


class NameIndex:
    """Name -> (asset id, status, error code), an open-addressing table of 8-byte hashes
    with the ids in one byte buffer: no Python object per entry."""

    def __init__(self) -> None:
        self._mask = 1023
        self._keys = array("Q", bytes(8 * (self._mask + 1)))
        self._rows = array("I", bytes(4 * (self._mask + 1)))
        self._ids = bytearray()
        self._ends = array("I")  # end offset of row i's id in _ids
        self._state = bytearray()  # per row: status index * 64 + code index (codes interned)
        self._codes: list[str | None] = [None]
        self._code_index: dict[str | None, int] = {None: 0}

    def __len__(self) -> int:
        return len(self._ends)

    def _slot(self, h: int) -> int:
        keys, mask = self._keys, self._mask
        slot = h & mask
        while keys[slot] and keys[slot] != h:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        old_keys, old_rows = self._keys, self._rows
        self._mask = self._mask * 2 + 1
        self._keys = array("Q", bytes(8 * (self._mask + 1)))
        self._rows = array("I", bytes(4 * (self._mask + 1)))
        for h, row in zip(old_keys, old_rows, strict=True):
            if h:
                slot = self._slot(h)
                self._keys[slot], self._rows[slot] = h, row

    def add(self, name: str, asset_id: str, status: str, error_code: str | None = None) -> None:
        """Record an asset; of two with one name the better (Active, Processing, Failed)
        is kept."""
        h = _hash(name)
        slot = self._slot(h)
        if self._keys[slot] == h and _RANK.get(status, 3) >= _RANK.get(
            self._status(self._rows[slot]), 3
        ):
            return
        code = self._code_index.get(error_code)
        if code is None:
            code = self._code_index[error_code] = len(self._codes)
            self._codes.append(error_code)
            if code >= 64:  # codes are a short list; past it only "some code" is kept
                code = self._code_index[error_code] = 63
        self._ids += asset_id.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._ids))
        status_i = _STATUSES.index(status) if status in _STATUSES else 0
        self._state.append(status_i * 64 + code)
        row = len(self._ends) - 1
        if self._keys[slot] == h:
            self._rows[slot] = row
            return
        self._keys[slot], self._rows[slot] = h, row
        if len(self._ends) * 2 > self._mask:
            self._grow()

    def _status(self, row: int) -> str:
        return _STATUSES[self._state[row] // 64]

    def forget(self, name: str) -> None:
        """The asset of ``name`` is gone (deleted by this run)."""
        h = _hash(name)
        slot = self._slot(h)
        if self._keys[slot] == h:
            self._state[self._rows[slot]] = 3 * 64

    def get(self, name: str) -> Found | None:
        h = _hash(name)
        slot = self._slot(h)
        if self._keys[slot] != h or not self._status(self._rows[slot]):
            return None
        row = self._rows[slot]
        start = self._ends[row - 1] if row else 0
        asset_id = self._ids[start : self._ends[row]].decode("utf-8", "surrogatepass")
        return Found(asset_id, self._status(row), self._codes[self._state[row] % 64])


class Adoption:
    """The group's names, listed once, when first asked for (see the module docstring)."""

    def __init__(self, ark: AssetAPI, group_id: str) -> None:
        self._ark = ark
        self._group_id = group_id
        self._index: NameIndex | None = None
        self._lock = anyio.Lock()

    async def find(self, name: str) -> Found | None:
        if self._index is None:
            async with self._lock:
                if self._index is None:
                    self._index = await self._build()
        return self._index.get(name)

    async def forget(self, name: str) -> None:
        """Drop ``name`` from the index (its asset was deleted), building it first."""
        await self.find(name)
        if self._index is not None:
            self._index.forget(name)

    async def _build(self) -> NameIndex:
        index = NameIndex()
        pages = self._ark.list_assets(group_ids=[self._group_id], page_size=100)
        async for asset in pages:
            if asset.name:
                code = asset.error.code if asset.error else None
                index.add(asset.name, asset.id, asset.status, code)
        return index


async def delete_failed(ark: AssetAPI, asset_id: str) -> str | None:
    """Delete a Failed asset before it is created anew (the service never retries one, and
    the Name must stay unique). None when it is gone; else why it could not be deleted."""
    try:
        await ark.delete_asset(asset_id)
    except NotFoundError:
        return None
    except (APIError, TransportError) as exc:
        return f"could not delete the Failed asset {asset_id} before retrying: {exc}"
    return None


def may_retry(code: str | None, *, retry_failed: bool) -> bool:
    """Whether a rerun creates this failed item again."""
    return retry_failed or retryable(code)
