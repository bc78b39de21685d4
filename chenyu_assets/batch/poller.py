"""Cheap status tracking for many assets at once.

Instead of one GetAsset per asset every few seconds, one ``ListAssets`` per tick asks the
group for assets that *finished* recently (``Statuses=[Active, Failed]``, sorted by
``UpdateTime`` descending), reading pages only down to a watermark: the newest update
time seen on the previous tick minus ``lookback``. Every tracked asset in those pages is
done. With at most 30 assets processing, one 100-item page covers a tick.

The tick interval follows the observed processing time ``P`` (``P / 8``, clamped), so the
median detection latency stays near ``P / 16`` while the calls per asset stay near
``P / (30 · P/8) ≈ 0.27`` whatever ``P`` is. While creates wait for a processing slot the
tick halves (``P / 16``, about 0.53 calls per asset): then detection lag is lost
throughput. An asset not seen for ``stale_after`` seconds
(list lag, a restart, a server that drops it from lists) is checked once with GetAsset.

Every tick's listing is bounded (``tick_deadline`` seconds, and the listing's page checks):
a listing that cannot end (``PaginationError``: pages that repeat, a lying ``TotalCount``)
leaves that tick to the one-by-one GetAsset checks instead of stopping the run.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio

from chenyu_assets._core.logs import get_logger
from chenyu_assets._core.retry import Decision, classify
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.errors import APIError, NotFoundError, PaginationError, TransportError
from chenyu_assets.models.ark import TERMINAL_STATUSES, Asset

__all__ = ["Poller", "Tracked"]

log = get_logger("chenyu_assets.batch")


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


@dataclass(slots=True)
class Tracked:
    key: str
    name: str
    asset_id: str
    since: float = field(default_factory=_loop_time)
    last_check: float = field(default_factory=_loop_time)


class Poller:
    """Tracks assets until they are terminal; calls ``on_done(tracked, asset, timed_out)``
    once for each (``timed_out``: still Processing after ``processing_timeout``)."""

    def __init__(
        self,
        client: ArkFamilyClient,
        *,
        group_id: str,
        on_done: Callable[[Tracked, Asset, bool], Awaitable[None]],
        min_interval: float = 0.25,
        max_interval: float = 10.0,
        lookback: float = 2.0,
        stale_after: float = 15.0,
        processing_timeout: float = 3600.0,
        project_name: str | None = None,
        hungry: Callable[[], bool] | None = None,
        hungry_min_interval: float = 0.1,
        tick_deadline: float = 60.0,
    ) -> None:
        self._client = client
        self._tick_deadline = tick_deadline
        self._hungry = hungry
        self._hungry_min = hungry_min_interval
        self._group_id = group_id
        self._on_done = on_done
        self._min = min_interval
        self._max = max_interval
        self._lookback = timedelta(seconds=lookback)
        self._stale_after = stale_after
        self._timeout = processing_timeout
        self._project = project_name
        self._tracked: dict[str, Tracked] = {}
        self._wake = anyio.Event()
        self._empty = anyio.Event()
        self._empty.set()
        self._watermark: datetime | None = None
        self._p_estimate = 2.0
        self.status_calls = 0
        self.detected = 0
        self.latencies: list[float] = []

    def __len__(self) -> int:
        return len(self._tracked)

    @property
    def interval(self) -> float:
        """``P/8`` clamped; ``P/16`` (floor ``hungry_min_interval``) while work waits for a
        processing slot, because then every tick of detection lag is lost throughput."""
        if self._hungry is not None and self._hungry():
            return min(self._max, max(self._hungry_min, self._p_estimate / 16))
        return min(self._max, max(self._min, self._p_estimate / 8))

    def track(self, key: str, name: str, asset_id: str, *, check_now: bool = False) -> None:
        tracked = Tracked(key, name, asset_id)
        if check_now:  # resumed from a journal: its completion may be older than any watermark
            tracked.last_check = -math.inf
        self._tracked[asset_id] = tracked
        if self._empty.is_set():
            self._empty = anyio.Event()
        if self._watermark is None or check_now:
            self._watermark = datetime.now(UTC) - timedelta(minutes=10)
        self._wake.set()

    async def wait_empty(self) -> None:
        """Return once nothing is tracked."""
        while self._tracked:
            await self._empty.wait()

    async def run(self) -> None:
        """Poll until cancelled. Transport errors are retried on the next tick."""
        while True:
            if not self._tracked:
                self._wake = anyio.Event()
                await self._wake.wait()
            started = asyncio.get_running_loop().time()
            try:
                await self._tick()
            except (TransportError, APIError) as exc:
                if not _transient(exc):
                    raise
            elapsed = asyncio.get_running_loop().time() - started
            await anyio.sleep(max(0.0, self.interval - elapsed))

    async def _tick(self) -> None:
        finished: list[Asset] = []
        newest: datetime | None = None
        watermark = self._watermark
        pages = self._client.list_assets(
            group_ids=[self._group_id],
            statuses=["Active", "Failed"],
            sort_by="UpdateTime",
            sort_order="Desc",
            page_size=100,
            project_name=self._project,
            deadline=self._tick_deadline,
        ).pages()
        try:
            async for page in pages:
                self.status_calls += 1
                below = False
                for asset in page.items:
                    if asset.update_time is not None:
                        newest = (
                            asset.update_time if newest is None else max(newest, asset.update_time)
                        )
                        if watermark is not None and asset.update_time < watermark:
                            below = True
                    if asset.id in self._tracked:
                        finished.append(asset)
                if below or not self._tracked.keys() - {a.id for a in finished}:
                    break
        except PaginationError as exc:  # the listing cannot be trusted: one by one instead
            log.warning("status listing unusable (%s); checking assets one by one", exc)
            newest = None
            for tracked in self._tracked.values():
                tracked.last_check = -math.inf
        if newest is not None:
            candidate = newest - self._lookback
            if self._watermark is None or candidate > self._watermark:
                self._watermark = candidate
        for asset in finished:
            await self._finish(asset)
        await self._check_stale()

    async def _check_stale(self) -> None:
        now = asyncio.get_running_loop().time()
        stale_after = max(self._stale_after, 3 * self._p_estimate)
        for tracked in [t for t in self._tracked.values() if now - t.last_check > stale_after]:
            tracked.last_check = now
            self.status_calls += 1
            try:
                asset = await self._client.get_asset(tracked.asset_id, project_name=self._project)
            except NotFoundError:
                asset = Asset.model_validate(
                    {
                        "Id": tracked.asset_id,
                        "Status": "Failed",
                        "Error": {"Code": "NotFound.asset_id", "Message": "asset disappeared"},
                    }
                )
            if asset.status in TERMINAL_STATUSES:
                await self._finish(asset)
            elif now - tracked.since > self._timeout:
                await self._finish(asset, timed_out=True)

    async def _finish(self, asset: Asset, *, timed_out: bool = False) -> None:
        tracked = self._tracked.pop(asset.id, None)
        if tracked is None:
            return
        took = asyncio.get_running_loop().time() - tracked.since
        self.detected += 1
        self.latencies.append(took)
        if not timed_out:  # smooth the processing-time estimate (EWMA)
            self._p_estimate = 0.8 * self._p_estimate + 0.2 * took
        try:
            await self._on_done(tracked, asset, timed_out)
        finally:
            if not self._tracked:  # only now: the last report must not be cut off
                self._empty.set()


def _transient(exc: BaseException) -> bool:
    return classify(exc) is Decision.RETRY
