"""An in-process fake of our own client protocol (:class:`chenyu_assets._api.AssetAPI`).

Not an HTTP mock: the engine (create stage, tracker, the real status watcher) calls the
handful of methods it depends on, and :class:`FakeArk` keeps the group's assets in memory
on the running loop's clock (virtual time under ``@virtual``). Listings are real
:class:`~chenyu_assets._core.pagination.AsyncPaginator` walks over those assets.

Switchable behaviours (attributes, change them any time):

- ``ambiguous_after_create``: the next N creates create the asset, then raise
  ``AmbiguousOutcomeError`` (a read timeout after sending);
- ``ambiguous_before_create``: the next N creates raise it without creating anything;
- ``throttle_creates``: the next N creates are refused with a 429;
- ``refuse``: name -> a 400 code CreateAsset answers for that name;
- ``fail_codes``: name -> the ``Error.Code`` the asset ends ``Failed`` with;
- ``ignore_sort``: listings ignore ``SortBy``/``SortOrder`` (oldest first);
- ``frozen_update_time``: ``UpdateTime`` never moves from ``CreateTime``;
- ``gets_to_finish``: an asset stays ``Processing`` until it was read by this many
  ``GetAsset`` calls (besides ``processing`` seconds), so only a GetAsset sees it end;
- ``duplicate_names``: ``"allow"`` (the service's documented behaviour) or ``"refuse"``
  (a CreateAsset whose Name the group already holds is a 400 ``DuplicateName``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chenyu_assets._core.pagination import AsyncPaginator, Page, Paging
from chenyu_assets._core.ratelimit import SlotPool
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
)
from chenyu_assets.models.ark import Asset
from chenyu_assets.watcher import Slot, Watcher


@dataclass
class FakeAsset:
    id: str
    name: str | None
    group_id: str | None
    url: str
    created: float  # loop time
    ready_at: float  # loop time processing ends (if no GetAsset count is pending)
    fail_code: str | None = None
    gets_left: int = 0
    flipped_at: float | None = None  # loop time the last required GetAsset came


@dataclass
class FakeArk:
    """See the module docstring."""

    processing: float = 2.0
    max_processing: int = 30
    ambiguous_after_create: int = 0
    ambiguous_before_create: int = 0
    throttle_creates: int = 0
    refuse: dict[str, str] = field(default_factory=dict)
    fail_codes: dict[str, str] = field(default_factory=dict)
    ignore_sort: bool = False
    frozen_update_time: bool = False
    gets_to_finish: int = 0
    duplicate_names: str = "allow"
    project_name: str | None = None
    calls: Counter[str] = field(default_factory=Counter)
    assets: dict[str, FakeAsset] = field(default_factory=dict)
    max_processing_seen: int = 0

    def __post_init__(self) -> None:
        self.watcher = Watcher(self, slots=SlotPool(self.max_processing))
        self._ids = itertools.count(1)
        self._wall0 = time.time()
        self._loop0: float | None = None

    # -- the clock -------------------------------------------------------------------------
    def _now(self) -> float:
        now = asyncio.get_running_loop().time()
        if self._loop0 is None:
            self._loop0 = now
        return now

    def _wall(self, t: float) -> datetime:
        assert self._loop0 is not None
        return datetime.fromtimestamp(self._wall0, UTC) + timedelta(seconds=t - self._loop0)

    def status_of(self, a: FakeAsset) -> str:
        if self._now() < a.ready_at or a.gets_left > 0:
            return "Processing"
        return "Failed" if a.fail_code else "Active"

    def processing_now(self) -> int:
        return sum(self.status_of(a) == "Processing" for a in self.assets.values())

    def _model(self, a: FakeAsset) -> Asset:
        status = self.status_of(a)
        ended = max(a.ready_at, a.flipped_at or 0.0)
        updated = a.created if status == "Processing" or self.frozen_update_time else ended
        return Asset.model_validate(
            {
                "Id": a.id,
                "Name": a.name,
                "GroupId": a.group_id,
                "URL": a.url,
                "AssetType": "Image",
                "Status": status,
                "CreateTime": self._wall(a.created).isoformat(),
                "UpdateTime": self._wall(updated).isoformat(),
                "Error": {"Code": a.fail_code, "Message": "failed"} if status == "Failed" else None,
            }
        )

    def names(self) -> Counter[str | None]:
        """How many assets hold each name (a duplicate shows as a count above 1)."""
        return Counter(a.name for a in self.assets.values())

    # -- the protocol --------------------------------------------------------------------------
    async def create_asset(
        self,
        *,
        group_id: str | None,
        url: str,
        asset_type: str = "Image",
        name: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
        slot: Slot | None = None,
    ) -> str:
        async def send(deadline: float | None) -> str:
            await asyncio.sleep(0)
            self.calls["CreateAsset"] += 1
            if self.throttle_creates > 0:
                self.throttle_creates -= 1
                raise RateLimitError("too many requests", status=429, code="RateLimitExceeded")
            if self.ambiguous_before_create > 0:
                self.ambiguous_before_create -= 1
                lost = RequestTimeoutError("read timed out", method="POST", sent=True)
                raise AmbiguousOutcomeError("CreateAsset", lost)
            if name is not None and name in self.refuse:
                raise BadRequestError("refused", status=400, code=self.refuse[name])
            if self.duplicate_names == "refuse" and any(
                a.name == name and a.group_id == group_id for a in self.assets.values()
            ):
                raise BadRequestError("name taken", status=400, code="DuplicateName")
            now = self._now()
            asset_id = f"asset-{next(self._ids):04d}"
            self.assets[asset_id] = FakeAsset(
                asset_id,
                name,
                group_id,
                url,
                created=now,
                ready_at=now + self.processing,
                fail_code=self.fail_codes.get(name or ""),
                gets_left=self.gets_to_finish,
            )
            self.max_processing_seen = max(self.max_processing_seen, self.processing_now())
            if self.ambiguous_after_create > 0:
                self.ambiguous_after_create -= 1
                lost = RequestTimeoutError("read timed out", method="POST", sent=True)
                raise AmbiguousOutcomeError("CreateAsset", lost)
            return asset_id

        return await self.watcher.create(
            send, slot=slot, deadline=deadline, project=None, group_id=group_id, track=True
        )

    async def get_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> Asset:
        await asyncio.sleep(0)
        self.calls["GetAsset"] += 1
        a = self.assets.get(asset_id)
        if a is None:
            raise NotFoundError("no such asset", status=404, code="NotFound.Id")
        if a.gets_left > 0 and self._now() >= a.ready_at:
            a.gets_left -= 1
            if a.gets_left == 0:
                a.flipped_at = self._now()
        return self._model(a)

    async def delete_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> None:
        await asyncio.sleep(0)
        self.calls["DeleteAsset"] += 1
        if self.assets.pop(asset_id, None) is None:
            raise NotFoundError("no such asset", status=404, code="NotFound.Id")

    def list_assets(
        self,
        *,
        group_ids: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        name: str | None = None,
        group_type: str | None = None,
        page_size: int = 100,
        page_number: int = 1,
        sort_by: str | None = None,
        sort_order: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
        paging: Paging = "auto",
        next_token: str | None = None,
    ) -> AsyncPaginator[Asset]:
        async def fetch(number: int, seconds_left: float | None) -> Page[Asset]:
            await asyncio.sleep(0)
            self.calls["ListAssets"] += 1
            found = [
                self._model(a)
                for a in self.assets.values()
                if (not group_ids or a.group_id in group_ids)
                and (name is None or name in (a.name or ""))  # the server's match is fuzzy
            ]
            if statuses:
                found = [a for a in found if a.status in statuses]
            if sort_by == "UpdateTime" and not self.ignore_sort:
                found.sort(key=lambda a: (a.update_time, a.id), reverse=sort_order == "Desc")
            start = (number - 1) * page_size
            return Page(found[start : start + page_size], len(found), number, page_size)

        return AsyncPaginator(
            fetch, first_page=page_number, deadline=deadline, key=lambda a: a.id, name="ListAssets"
        )

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - a clear failure
        raise AttributeError(f"FakeArk has no {name!r}: the engine reached past AssetAPI")
