"""The status sweep of :class:`~chenyu_assets.watcher.Watcher`: the sorted path with its
run-time checks, and the robust path (see the watcher's module docstring)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from chenyu_assets._core.logs import get_logger
from chenyu_assets.errors import NotFoundError, PaginationError
from chenyu_assets.models.ark import TERMINAL_STATUSES, Asset

if TYPE_CHECKING:
    from chenyu_assets._core.pagination import AsyncPaginator, Paging
    from chenyu_assets._slots import Slot

__all__ = ["StatusAPI", "Sweep", "Watch"]

log = get_logger("chenyu_assets.watcher")

#: GetAsset calls of one tick sent at once.
_GET_CONCURRENCY = 8
#: A frozen UpdateTime is only concluded from an asset seen processing this long after create.
_FROZEN_PROOF = 1.5


class StatusAPI(Protocol):
    """What the status sweep reads: one asset, and listings (``.pages()`` of them)."""

    async def get_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> Asset: ...

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
    ) -> AsyncPaginator[Asset]: ...


@dataclass(slots=True, eq=False)
class Watch:
    asset_id: str
    project: str | None
    group_id: str | None
    group_type: str | None
    since: float
    fresh: bool  # created by this client just now: evidence for the sorted path's checks
    slot: Slot | None = None
    lease_end: float = math.inf
    last_check: float = -math.inf
    absent_at: float | None = None  # start of the last sweep that did not find it finished
    seen_processing: bool = False
    last_status: str = "unknown"
    waiters: list[asyncio.Future[Asset]] = field(default_factory=list)

    def idle(self) -> bool:
        self.waiters = [f for f in self.waiters if not f.done()]
        return not self.waiters and self.slot is None


class Sweep:
    """Finds which watched assets left Processing; ``finish(watch, asset)`` is told of each."""

    def __init__(
        self,
        client: StatusAPI,
        *,
        finish: Callable[[Watch, Asset], Awaitable[None]],
        live: Callable[[Watch], bool],
        emit: Callable[..., None],
    ) -> None:
        self._client = client
        self._finish = finish
        self._live = live
        self._emit = emit
        self._watermarks: dict[tuple[str | None, str | None], datetime] = {}
        #: "sorted" until a run-time check fails, then "robust"
        self.mode = "sorted"
        self.status_calls = 0
        self.lookback = timedelta(seconds=2.0)
        self.stale_after = 15.0
        #: the observed processing time (EWMA), kept by the watcher
        self.p_estimate = 2.0
        #: every listing of a tick ends within this many seconds (a slow or endless server)
        self.tick_deadline = 60.0

    async def tick(self, watches: Iterable[Watch], started: float) -> None:
        """One sweep over ``watches``: one listing per (project, group type)."""
        scopes: dict[tuple[str | None, str | None], list[Watch]] = {}
        for w in watches:
            scopes.setdefault((w.project, w.group_type), []).append(w)
        for scope, watches in scopes.items():
            if self.mode == "sorted" and await self._sweep_sorted(scope, watches, started):
                await self._check_stale(watches, started)
            else:
                await self._sweep_processing(scope, watches, started)

    def _listing(
        self, scope: tuple[str | None, str | None], watches: Iterable[Watch], **kw: Any
    ) -> Any:
        groups = {w.group_id for w in watches}
        known = sorted(g for g in groups if g is not None)
        group_ids = known if None not in groups and len(known) <= 100 else None
        return self._client.list_assets(
            group_ids=group_ids,
            group_type=scope[1],
            page_size=100,
            project_name=scope[0],
            deadline=self.tick_deadline,
            **kw,
        ).pages()

    async def _sweep_sorted(
        self, scope: tuple[str | None, str | None], watches: list[Watch], started: float
    ) -> bool:
        """The cheap sweep; False (and mode "robust") when a check fails."""
        watermark = self._watermarks.get(scope)
        if watermark is None:
            watermark = datetime.now(UTC) - timedelta(minutes=10)
        by_id = {w.asset_id: w for w in watches}
        finished: list[tuple[Watch, Asset]] = []
        newest: datetime | None = None
        previous: datetime | None = None
        reason = None
        pages = self._listing(
            scope, watches, statuses=["Active", "Failed"], sort_by="UpdateTime", sort_order="Desc"
        )
        try:
            async for page in pages:
                self.status_calls += 1
                below = False
                for asset in page.items:
                    t = asset.update_time
                    if t is None:
                        continue
                    if previous is not None and t > previous:
                        reason = "ListAssets pages are not in descending UpdateTime order"
                    previous = t
                    newest = t if newest is None else max(newest, t)
                    below = below or t < watermark
                    w = by_id.get(asset.id)
                    if w is not None and asset.status in TERMINAL_STATUSES:
                        finished.append((w, asset))
                        reason = reason or _frozen(w, asset)
                if reason or below or len(finished) == len(by_id):
                    break
        except PaginationError as exc:  # pages that repeat, a TotalCount that lies
            reason = f"the status listing cannot be trusted ({exc})"
        for w, asset in finished:
            await self._finish(w, asset)
        if reason is not None:
            self._switch(reason)
            return False
        for w in by_id.values():
            if self._live(w):
                w.absent_at = started
        if newest is not None and newest - self.lookback > watermark:
            self._watermarks[scope] = newest - self.lookback
        else:
            self._watermarks.setdefault(scope, watermark)
        return True

    async def _check_stale(self, watches: list[Watch], now: float) -> None:
        """GetAsset for what the sorted listing has not shown for ``stale_after`` s; one
        found finished after its creation here means the listing missed it."""
        stale_after = max(self.stale_after, 3 * self.p_estimate)
        stale = [w for w in watches if self._live(w) and now - w.last_check > stale_after]
        for w, asset in await self._get_all(stale, now):
            w.last_status = asset.status
            if asset.status in TERMINAL_STATUSES:
                if w.fresh:
                    self._switch(f"asset {w.asset_id} finished but the sorted listing missed it")
                await self._finish(w, asset)

    async def _sweep_processing(
        self, scope: tuple[str | None, str | None], watches: list[Watch], started: float
    ) -> None:
        processing: set[str] = set()
        usable = True
        try:
            async for page in self._listing(scope, watches, statuses=["Processing"]):
                self.status_calls += 1
                processing.update(a.id for a in page.items)
        except PaginationError as exc:
            log.warning("status listing unusable (%s); checking assets one by one", exc)
            usable = False
        gone = []
        for w in watches:
            if not usable:
                if self._live(w):
                    gone.append(w)
            elif w.asset_id in processing:
                w.seen_processing = True
                w.last_status = "Processing"
                w.last_check = started
            elif w.seen_processing or not w.fresh or w.absent_at is not None:
                gone.append(w)  # left the listing (or never shown in it for a whole tick)
            else:
                w.absent_at = started
        for w, asset in await self._get_all(gone, started):
            w.last_status = asset.status
            if asset.status in TERMINAL_STATUSES:
                await self._finish(w, asset)

    async def _get_all(self, watches: list[Watch], now: float) -> list[tuple[Watch, Asset]]:
        out: list[tuple[Watch, Asset]] = []
        for i in range(0, len(watches), _GET_CONCURRENCY):
            chunk = watches[i : i + _GET_CONCURRENCY]
            assets = await asyncio.gather(*(self._get(w, now) for w in chunk))
            out.extend(zip(chunk, assets, strict=True))
        return out

    async def _get(self, w: Watch, now: float) -> Asset:
        w.last_check = now
        self.status_calls += 1
        try:
            return await self._client.get_asset(w.asset_id, project_name=w.project)
        except NotFoundError:
            return Asset.model_validate(
                {
                    "Id": w.asset_id,
                    "Status": "Failed",
                    "Error": {"Code": "NotFound.asset_id", "Message": "asset disappeared"},
                }
            )

    def _switch(self, reason: str) -> None:
        if self.mode != "robust":
            self.mode = "robust"
            log.warning("status sweep: %s; listing Processing assets from now on", reason)
            self._emit("switched", reason=reason)


def _frozen(w: Watch, asset: Asset) -> str | None:
    """Why ``asset`` shows an UpdateTime that did not move when processing ended, if so."""
    if asset.update_time is None or asset.create_time is None:
        return None
    if asset.update_time < asset.create_time:
        return f"asset {asset.id} has an UpdateTime before its CreateTime"
    if (
        asset.update_time <= asset.create_time
        and w.fresh
        and w.absent_at is not None
        and w.absent_at - w.since >= _FROZEN_PROOF
    ):
        return "UpdateTime did not move when processing ended"
    return None
