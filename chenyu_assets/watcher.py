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
its ``CreateTime``, or equal to it although the listing had not shown it finished 1.5 s
after it was created (second-resolution timestamps must differ by then); or an asset the
listing missed that a ``GetAsset`` (after ``stale_after`` s unseen) finds finished.

The tick follows the observed processing time ``P``: ``P/8`` (at least ``min_interval``),
``P/24`` (at least ``starved_interval``) while creates wait for a Processing slot, never
more than ``max_interval``; nothing is sent while nothing is watched.

Processing slots and the cap-429 rule: see :mod:`chenyu_assets._slots`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

from chenyu_assets._core.logs import get_logger
from chenyu_assets._core.ratelimit import Slots
from chenyu_assets._slots import CAP_WORDS, Slot, processing_pool
from chenyu_assets._sweep import StatusAPI, Sweep, Watch
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    RateLimitError,
    RequestTimeoutError,
    WaitTimeoutError,
    is_transient,
)
from chenyu_assets.events import watcher_event
from chenyu_assets.models.ark import Asset

__all__ = ["Slot", "Watcher", "WatcherEvent", "processing_pool"]

log = get_logger("chenyu_assets.watcher")

#: ``listener(kind, fields)``: slot_taken, slot_freed, lease_expired, switched, finished.
WatcherEvent = Callable[[str, Mapping[str, Any]], None]

#: The tick bounds and sweep windows (seconds; a divisor of ``P``) a client starts with.
DEFAULT_TUNING: Final[Mapping[str, float]] = {
    "min_interval": 0.25,
    "starved_interval": 0.04,
    "starved_divisor": 24.0,
    "max_interval": 10.0,
    "lookback": 2.0,
    "stale_after": 15.0,
}

#: Finished assets remembered, so that a wait that starts after the end resolves at once.
RECENT = 4096


class Watcher:
    """The status sweep and Processing slots of one client; see the module docstring."""

    def __init__(
        self,
        client: StatusAPI,
        *,
        slots: Slots | None,
        lease: float = 3600.0,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be > 0, got {lease!r}")
        self._client = client
        self.slots = slots
        self.lease = lease
        self._watches: dict[str, Watch] = {}
        self._listeners: list[WatcherEvent] = []
        self._sweep = Sweep(
            client,
            finish=self._finish,
            live=lambda w: self._watches.get(w.asset_id) is w,
            emit=self._emit,
        )
        self.tune(**DEFAULT_TUNING)
        #: the last finished assets (``RECENT`` of them): a wait on one resolves at once
        self._recent: collections.OrderedDict[str, Asset] = collections.OrderedDict()
        self._names = itertools.count(1)
        self._waiting = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
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
        """Set the tick bounds; a bulk ingest sets its poll options for its run."""
        self.min_interval = min_interval
        self.starved_interval = starved_interval
        self.starved_divisor = starved_divisor
        self.max_interval = max_interval
        self._sweep.lookback = timedelta(seconds=lookback)
        self._sweep.stale_after = stale_after

    def tuning(self) -> dict[str, float]:
        """The current :meth:`tune` arguments (to restore them later)."""
        return {
            "min_interval": self.min_interval,
            "starved_interval": self.starved_interval,
            "starved_divisor": self.starved_divisor,
            "max_interval": self.max_interval,
            "lookback": self._sweep.lookback.total_seconds(),
            "stale_after": self._sweep.stale_after,
        }

    @property
    def mode(self) -> str:
        """``sorted`` (the cheap sweep) until a run-time check fails, then ``robust``."""
        return self._sweep.mode

    @property
    def status_calls(self) -> int:
        """ListAssets and GetAsset calls the sweep has sent."""
        return self._sweep.status_calls

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
            starved = self._sweep.p_estimate / self.starved_divisor
            return min(self.max_interval, max(self.starved_interval, starved))
        return min(self.max_interval, max(self.min_interval, self._sweep.p_estimate / 8))

    def add_listener(self, listener: WatcherEvent) -> None:
        """Receive ``(kind, fields)`` events (see :data:`WatcherEvent`)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: WatcherEvent) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, kind: str, **fields: Any) -> None:
        hooks = getattr(self._client, "hooks", None)  # the client's typed hooks
        if hooks:
            hooks.emit(watcher_event(kind, fields))
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
        self._emit("slot_taken", holder=slot.holder, in_use=pool.in_use(), limit=pool.limit)
        return slot

    async def release(self, slot: Slot | None) -> None:
        """Give ``slot`` back (a second release does nothing)."""
        if slot is None or slot.released:
            return
        slot.released = True
        await slot.pool.release(slot.holder)
        pool = slot.pool
        self._emit("slot_freed", holder=slot.holder, in_use=pool.in_use(), limit=pool.limit)

    async def create(
        self,
        send: Callable[[float | None], Awaitable[str]],
        *,
        slot: Slot | None,
        deadline: float | None,
        project: str | None,
        group_id: str | None,
        track: bool,
    ) -> str:
        """Run one CreateAsset, ``send(deadline)``, under a Processing slot (``slot``, or
        one taken here within ``deadline``); the asset is then watched with its slot."""
        own = slot is None and self.slots is not None
        if own:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with asyncio.timeout(deadline):
                    slot = await self.reserve()
            except TimeoutError:
                msg = f"CreateAsset: deadline of {deadline:g} s passed waiting for a slot"
                raise RequestTimeoutError(msg, method="POST", sent=False) from None
            if deadline is not None:
                deadline = max(1e-3, deadline - (loop.time() - started))
        try:
            asset_id = await send(deadline)
        except AmbiguousOutcomeError:
            if own and slot is not None:  # it may be Processing: hold the slot a while
                self.release_later(slot)
            raise
        except BaseException:
            if own:
                await self.release(slot)
            raise
        if track or slot is not None:
            self.created(asset_id, slot=slot, project=project, group_id=group_id)
        return asset_id

    def release_later(self, slot: Slot, delay: float | None = None) -> None:
        """Give ``slot`` back after ``delay`` s (default ``max(10 s, 3 P)``, at most the
        lease): the asset of an ambiguous create may be Processing unseen."""
        loop = asyncio.get_running_loop()
        delay = max(10.0, 3 * self._sweep.p_estimate) if delay is None else delay

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
        if any(word in text for word in CAP_WORDS):
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
    ) -> Watch:
        w = self._watches.get(asset_id)
        if w is None:
            now = asyncio.get_running_loop().time()
            w = Watch(asset_id, project, group_id, group_type, since=now, fresh=fresh)
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
            try:
                await task
            except (asyncio.CancelledError, Exception) as exc:  # a failure: the waits have it
                log.debug("status sweep ended: %r", type(exc).__name__)
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
                self.ticks += 1
                await self._sweep.tick(list(self._watches.values()), started)
            except Exception as exc:
                if is_transient(exc):
                    log.info("status sweep failed, retrying next tick: %s", exc)
                else:  # refused (401, 403...) or malformed: every wait fails with it
                    await self._fail_all(exc)
            await self._expire_leases(loop.time())
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def _drop_idle(self) -> None:
        for asset_id in [a for a, w in self._watches.items() if w.idle()]:
            del self._watches[asset_id]

    async def _finish(self, w: Watch, asset: Asset) -> None:
        if self._watches.get(w.asset_id) is not w:
            return
        del self._watches[w.asset_id]
        if w.fresh:  # smooth the processing-time estimate (EWMA)
            took = asyncio.get_running_loop().time() - w.since
            self._sweep.p_estimate = 0.8 * self._sweep.p_estimate + 0.2 * took
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
                pool = w.slot.pool
                self._emit(
                    "lease_expired",
                    asset_id=w.asset_id,
                    holder=w.slot.holder,
                    in_use=pool.in_use(),
                    limit=pool.limit,
                )
                slot, w.slot = w.slot, None
                await self.release(slot)
                if w.idle():  # nobody waits on it either
                    del self._watches[w.asset_id]

    async def _fail_all(self, exc: BaseException) -> None:
        """Every wait fails with ``exc``; a slot that cannot go back ends with its lease."""
        watches, self._watches = list(self._watches.values()), {}
        for w in watches:
            for f in w.waiters:
                if not f.done():
                    f.set_exception(exc)
        for w in watches:
            try:
                await self.release(w.slot)
            except Exception as err:  # the waits already carry it
                log.info("slot of %s not given back (%s): its lease frees it", w.asset_id, err)
