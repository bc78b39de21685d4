"""One status sweep per Ark client for every asset it watches, and the Processing cap.

:class:`Watcher` keeps the assets a client created (and those someone waits on) until they
leave ``Processing``. Each tick costs one listing for all of them, whatever their number:

* **sorted path** (cheap, used while the server is seen to support it):
  ``ListAssets(Statuses=[Active, Failed], SortBy=UpdateTime, SortOrder=Desc)`` read only
  down to a watermark (the newest ``UpdateTime`` seen minus ``lookback``); every watched
  asset in those pages is done.
* **robust path** (trusts only statuses): ``ListAssets(Statuses=[Processing])`` — at most
  the account's Processing cap, so one page — and one ``GetAsset`` for each watched asset
  that is no longer in it.

The sorted path depends on two things nothing documents (api-reference §6): that the sort
is honoured and that ``UpdateTime`` moves when processing ends. The watcher checks both at
run time and switches to the robust path for good when a check fails: a page (or the next
page) not in descending ``UpdateTime`` order; an asset whose ``UpdateTime`` is older than
its ``CreateTime``, or equal to it although it was seen still processing 1.5 s after it
was created (second-resolution timestamps must differ by then); or an asset the listing
missed that a ``GetAsset`` (after ``stale_after`` s unseen) finds finished.

The tick follows the observed processing time ``P``: ``P/8`` (at least ``min_interval``),
``P/24`` (at least ``starved_interval``) while creates wait for a Processing slot, never
more than ``max_interval``; nothing is sent while nothing is watched.

Slots: ``create_asset`` takes a Processing slot (:class:`~chenyu_assets._core.ratelimit.Slots`,
local or shared through Redis) before it sends and the watcher gives it back when the asset
leaves Processing. A slot is held at most ``lease`` seconds (an asset stuck Processing, or
one nobody waits on whose status the watcher cannot read); a Redis slot of a process that
dies comes back after the Redis lease. A 429 on CreateAsset while every slot is held, or
whose message names the Processing cap, is the cap, not the rate: it pauses no limiter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chenyu_assets._core.logs import get_logger
from chenyu_assets._core.ratelimit import Slots
from chenyu_assets._core.retry import Decision, classify
from chenyu_assets.errors import (
    APIError,
    NotFoundError,
    RateLimitError,
    TransportError,
    WaitTimeoutError,
)
from chenyu_assets.models.ark import TERMINAL_STATUSES, Asset

if TYPE_CHECKING:
    from chenyu_assets.ark import ArkFamilyClient

__all__ = ["Slot", "Watcher", "WatcherEvent"]

log = get_logger("chenyu_assets.watcher")

#: ``listener(kind, fields)`` for "slot_taken", "slot_freed", "lease_expired", "switched",
#: "finished", "capped".
WatcherEvent = Callable[[str, Mapping[str, Any]], None]

#: Words in a 429's message that name the service's in-flight cap, not its rate.
_CAP_WORDS = ("processing", "in-flight", "in flight", "concurrent")
#: Finished assets remembered, so that a wait that starts after the end resolves at once.
RECENT = 4096
#: GetAsset calls of one tick sent at once.
_GET_CONCURRENCY = 8
#: A frozen UpdateTime is only concluded from an asset seen processing this long after create.
_FROZEN_PROOF = 1.5


class Slot:
    """A Processing slot taken by :meth:`Watcher.reserve`; pass it to ``create_asset``."""

    __slots__ = ("holder", "pool", "released")

    def __init__(self, pool: Slots, holder: str) -> None:
        self.pool = pool
        self.holder = holder
        self.released = False

    def __repr__(self) -> str:
        return f"<Slot {self.holder}{' released' if self.released else ''}>"


@dataclass(slots=True, eq=False)
class _Watch:
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


class Watcher:
    """The status sweep and Processing slots of one client; see the module docstring."""

    def __init__(
        self,
        client: ArkFamilyClient,
        *,
        slots: Slots | None,
        lease: float = 3600.0,
        min_interval: float = 0.25,
        starved_interval: float = 0.04,
        starved_divisor: float = 24.0,
        max_interval: float = 10.0,
        lookback: float = 2.0,
        stale_after: float = 15.0,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be > 0, got {lease!r}")
        self._client = client
        self.slots = slots
        self.lease = lease
        self.tune(
            min_interval=min_interval,
            starved_interval=starved_interval,
            starved_divisor=starved_divisor,
            max_interval=max_interval,
            lookback=lookback,
            stale_after=stale_after,
        )
        #: the last finished assets (``RECENT`` of them): a wait on one resolves at once
        self._recent: collections.OrderedDict[str, Asset] = collections.OrderedDict()
        self._watches: dict[str, _Watch] = {}
        self._names = itertools.count(1)
        self._waiting = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._watermarks: dict[tuple[str | None, str | None], datetime] = {}
        self._p_estimate = 2.0
        self._listeners: list[WatcherEvent] = []
        self._background: set[asyncio.Task[None]] = set()
        #: "sorted" until a run-time check fails, then "robust"
        self.mode = "sorted"
        self.status_calls = 0
        self.ticks = 0

    def tune(
        self,
        *,
        min_interval: float,
        starved_interval: float,
        starved_divisor: float,
        max_interval: float,
        lookback: float,
        stale_after: float,
    ) -> None:
        """Set the tick bounds (seconds); the bulk ingest applies its poll options here."""
        self.min_interval = min_interval
        self.starved_interval = starved_interval
        self.starved_divisor = starved_divisor
        self.max_interval = max_interval
        self.lookback = timedelta(seconds=lookback)
        self.stale_after = stale_after

    # -- introspection ---------------------------------------------------------------------
    def in_use(self) -> int:
        """Processing slots held (account-wide for Redis slots, as last seen)."""
        return self.slots.in_use() if self.slots is not None else 0

    @property
    def waiting(self) -> int:
        """Creates waiting for a Processing slot."""
        return self._waiting

    def watched(self) -> frozenset[str]:
        """Ids of the assets being watched."""
        return frozenset(self._watches)

    @property
    def interval(self) -> float:
        if self._waiting > 0:
            starved = self._p_estimate / self.starved_divisor
            return min(self.max_interval, max(self.starved_interval, starved))
        return min(self.max_interval, max(self.min_interval, self._p_estimate / 8))

    def add_listener(self, listener: WatcherEvent) -> None:
        """Receive ``(kind, fields)`` events (see :data:`WatcherEvent`)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: WatcherEvent) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, kind: str, **fields: Any) -> None:
        for listener in self._listeners:
            try:
                listener(kind, fields)
            except Exception:  # a broken display must not break the sweep
                log.exception("watcher listener failed on %s", kind)

    def __repr__(self) -> str:
        cap = f"{self.in_use()}/{self.slots.limit}" if self.slots is not None else "off"
        return (
            f"<Watcher mode={self.mode} slots={cap} waiting={self._waiting} "
            f"watched={len(self._watches)}>"
        )

    # -- slots -------------------------------------------------------------------------------
    async def reserve(self, pool: Slots | None = None) -> Slot:
        """Wait for a Processing slot of ``pool`` (default: the client's)."""
        pool = pool or self.slots
        if pool is None:
            raise ValueError("this client keeps no Processing slots (processing_slots=None)")
        slot = Slot(pool, f"create-{next(self._names)}")
        self._waiting += 1
        try:
            await pool.acquire(slot.holder)
        finally:
            self._waiting -= 1
        self._emit("slot_taken", holder=slot.holder, in_use=pool.in_use())
        return slot

    async def release(self, slot: Slot | None) -> None:
        """Give ``slot`` back (a second release does nothing)."""
        if slot is None or slot.released:
            return
        slot.released = True
        await slot.pool.release(slot.holder)
        self._emit("slot_freed", holder=slot.holder, in_use=slot.pool.in_use())

    def release_later(self, slot: Slot, delay: float | None = None) -> None:
        """Give ``slot`` back after ``delay`` s (default ``max(10 s, 3 P)``, at most the
        lease): the asset of an ambiguous create may be Processing unseen."""
        loop = asyncio.get_running_loop()
        delay = max(10.0, 3 * self._p_estimate) if delay is None else delay

        def fire() -> None:
            task = loop.create_task(self.release(slot))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        loop.call_later(min(delay, self.lease), fire)

    def is_cap_429(self, endpoint: str, error: RateLimitError) -> bool:
        """True when a 429 on CreateAsset is the Processing cap rather than the rate."""
        if endpoint != "CreateAsset":
            return False
        text = (error.message or "").lower()
        if any(word in text for word in _CAP_WORDS):
            return True
        return self.slots is not None and self.slots.in_use() >= self.slots.limit

    # -- watching ----------------------------------------------------------------------------
    def created(
        self,
        asset_id: str,
        *,
        slot: Slot | None,
        project: str | None,
        group_id: str | None,
        group_type: str | None = None,
    ) -> None:
        """A new asset is Processing; ``slot`` is freed when it leaves Processing."""
        if slot is None and asset_id not in self._watches:
            return  # nobody waits and nothing to free: no need to watch it
        w = self._watch(asset_id, project, group_id, group_type, fresh=True)
        if slot is not None and not slot.released:
            w.slot = slot
            w.lease_end = asyncio.get_running_loop().time() + self.lease

    def watch(
        self,
        asset_id: str,
        *,
        project: str | None = None,
        group_id: str | None = None,
        group_type: str | None = None,
        timeout: float | None = None,
        slot: Slot | None = None,
    ) -> asyncio.Future[Asset]:
        """A future of the asset's terminal state (Active or Failed), resolved by the sweep;
        ``WaitTimeoutError`` after ``timeout`` s. Cancel it to stop waiting."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Asset] = loop.create_future()
        done = self._recent.get(asset_id)
        if done is not None and asset_id not in self._watches:
            fut.set_result(done)
            return fut
        w = self._watch(asset_id, project, group_id, group_type, fresh=False)
        if slot is not None and w.slot is None and not slot.released:
            w.slot, w.lease_end = slot, loop.time() + self.lease
        w.waiters.append(fut)
        if timeout is not None:

            def expire() -> None:
                if not fut.done():
                    fut.set_exception(WaitTimeoutError(self._not_reached([asset_id], timeout)))

            timer = loop.call_later(timeout, expire)
            fut.add_done_callback(lambda _: timer.cancel())
        return fut

    async def wait(
        self, asset_ids: Sequence[str], *, timeout: float, project: str | None = None
    ) -> list[Asset]:
        """The terminal state of each asset, in order; ``WaitTimeoutError`` at ``timeout``."""
        futures = [self.watch(a, project=project) for a in asset_ids]
        try:
            async with asyncio.timeout(timeout):
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            pairs = zip(asset_ids, futures, strict=True)  # gather cancelled the unfinished
            left = [a for a, f in pairs if f.cancelled() or not f.done()]
            raise WaitTimeoutError(self._not_reached(left, timeout, len(futures))) from None
        finally:
            for f in futures:
                f.cancel()

    def _not_reached(self, left: Sequence[str], timeout: float, of: int = 1) -> str:
        last = {a: w.last_status if (w := self._watches.get(a)) else "unknown" for a in left}
        shown = ", ".join(f"{a} (last: {status})" for a, status in list(last.items())[:3])
        more = f" and {len(left) - 3} more" if len(left) > 3 else ""
        which = f"asset {shown}" if of == 1 else f"{len(left)} of {of} assets: {shown}{more}"
        return f"{which}: terminal status not reached within {timeout:g} s"

    def _watch(
        self,
        asset_id: str,
        project: str | None,
        group_id: str | None,
        group_type: str | None,
        *,
        fresh: bool,
    ) -> _Watch:
        w = self._watches.get(asset_id)
        if w is None:
            now = asyncio.get_running_loop().time()
            w = _Watch(asset_id, project, group_id, group_type, since=now, fresh=fresh)
            if fresh:
                w.last_check, w.last_status = now, "Processing"
            self._watches[asset_id] = w
            self._start()
        return w

    def _start(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="chenyu-assets watcher"
            )

    async def aclose(self) -> None:
        """Stop the sweep; waiters are cancelled (slots of a local pool go with it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for w in self._watches.values():
            for f in w.waiters:
                f.cancel()
        self._watches.clear()

    # -- the sweep ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._drop_idle()
            if not self._watches:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = loop.time()
            try:
                await self._tick(started)
            except Exception as exc:
                if isinstance(exc, TransportError | APIError) and classify(exc) is Decision.RETRY:
                    log.info("status sweep failed, retrying next tick: %s", exc)
                else:  # refused (401, 403...) or malformed: every wait fails with it
                    await self._fail_all(exc)
            await self._expire_leases(loop.time())
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def _drop_idle(self) -> None:
        for asset_id in [a for a, w in self._watches.items() if w.idle()]:
            del self._watches[asset_id]

    async def _tick(self, started: float) -> None:
        self.ticks += 1
        scopes: dict[tuple[str | None, str | None], list[_Watch]] = {}
        for w in self._watches.values():
            scopes.setdefault((w.project, w.group_type), []).append(w)
        for scope, watches in scopes.items():
            if self.mode == "sorted" and await self._sweep_sorted(scope, watches, started):
                await self._check_stale(watches, started)
            else:
                await self._sweep_processing(scope, watches, started)

    def _listing(
        self, scope: tuple[str | None, str | None], watches: Iterable[_Watch], **kw: Any
    ) -> Any:
        groups = {w.group_id for w in watches}
        known = sorted(g for g in groups if g is not None)
        group_ids = known if None not in groups and len(known) <= 100 else None
        return self._client.list_assets(
            group_ids=group_ids,
            group_type=scope[1],
            page_size=100,
            project_name=scope[0],
            **kw,
        ).pages()

    async def _sweep_sorted(
        self, scope: tuple[str | None, str | None], watches: list[_Watch], started: float
    ) -> bool:
        """The cheap sweep; False (and mode "robust") when a check fails."""
        watermark = self._watermarks.get(scope)
        if watermark is None:
            watermark = datetime.now(UTC) - timedelta(minutes=10)
        by_id = {w.asset_id: w for w in watches}
        finished: list[tuple[_Watch, Asset]] = []
        newest: datetime | None = None
        previous: datetime | None = None
        reason = None
        pages = self._listing(
            scope, watches, statuses=["Active", "Failed"], sort_by="UpdateTime", sort_order="Desc"
        )
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
        for w, asset in finished:
            await self._finish(w, asset)
        if reason is not None:
            self._switch(reason)
            return False
        for w in by_id.values():
            if w.asset_id in self._watches:
                w.absent_at = started
        if newest is not None and newest - self.lookback > watermark:
            self._watermarks[scope] = newest - self.lookback
        else:
            self._watermarks.setdefault(scope, watermark)
        return True

    async def _check_stale(self, watches: list[_Watch], now: float) -> None:
        """GetAsset for what the sorted listing has not shown for ``stale_after`` s; one
        found finished after its creation here means the listing missed it."""
        stale_after = max(self.stale_after, 3 * self._p_estimate)
        stale = [
            w for w in watches if w.asset_id in self._watches and now - w.last_check > stale_after
        ]
        for w, asset in await self._get_all(stale, now):
            w.last_status = asset.status
            if asset.status in TERMINAL_STATUSES:
                if w.fresh:
                    self._switch(f"asset {w.asset_id} finished but the sorted listing missed it")
                await self._finish(w, asset)

    async def _sweep_processing(
        self, scope: tuple[str | None, str | None], watches: list[_Watch], started: float
    ) -> None:
        processing: set[str] = set()
        async for page in self._listing(scope, watches, statuses=["Processing"]):
            self.status_calls += 1
            processing.update(a.id for a in page.items)
        gone = []
        for w in watches:
            if w.asset_id in processing:
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

    async def _get_all(self, watches: list[_Watch], now: float) -> list[tuple[_Watch, Asset]]:
        out: list[tuple[_Watch, Asset]] = []
        for i in range(0, len(watches), _GET_CONCURRENCY):
            chunk = watches[i : i + _GET_CONCURRENCY]
            assets = await asyncio.gather(*(self._get(w, now) for w in chunk))
            out.extend(zip(chunk, assets, strict=True))
        return out

    async def _get(self, w: _Watch, now: float) -> Asset:
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

    async def _finish(self, w: _Watch, asset: Asset) -> None:
        if self._watches.get(w.asset_id) is not w:
            return
        del self._watches[w.asset_id]
        if w.fresh:  # smooth the processing-time estimate (EWMA)
            took = asyncio.get_running_loop().time() - w.since
            self._p_estimate = 0.8 * self._p_estimate + 0.2 * took
        self._recent[asset.id] = asset
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        for f in w.waiters:  # first: their callbacks run before the slot's next holder
            if not f.done():
                f.set_result(asset)
        await self.release(w.slot)
        self._emit("finished", asset_id=asset.id, status=asset.status)

    async def _expire_leases(self, now: float) -> None:
        for w in list(self._watches.values()):
            if w.slot is not None and now >= w.lease_end:
                log.warning("slot of %s freed after its %g s lease", w.asset_id, self.lease)
                self._emit("lease_expired", asset_id=w.asset_id)
                slot, w.slot = w.slot, None
                await self.release(slot)
                if w.idle():  # nobody waits on it either
                    del self._watches[w.asset_id]

    async def _fail_all(self, exc: BaseException) -> None:
        watches, self._watches = list(self._watches.values()), {}
        for w in watches:
            await self.release(w.slot)
            for f in w.waiters:
                if not f.done():
                    f.set_exception(exc)


def _frozen(w: _Watch, asset: Asset) -> str | None:
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
