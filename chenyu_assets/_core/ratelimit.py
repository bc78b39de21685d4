"""Client-side pacing on send times, a per-endpoint registry, and an in-flight cap.

:class:`WindowLimiter` remembers when its last ``limit`` requests were handed to the
transport (the engine stamps each one with :meth:`Grant.send` right before
``transport.request``) and admits a request only while fewer than ``limit`` sends fall in
the trailing ``window + margin``. A grant holds its place as "now, moving" until its
response is in (:meth:`Grant.answered`); then it counts from its send, or from ``margin``
before the response if that is later: the server's arrival lies between the two, so a
request that took longer than the margin can never have arrived later than it is counted
(see ``DEFAULT_MARGIN``). So any delay between grant, send and arrival can never push a
window over, and capacity left unused in the last window is usable at once (nothing to
refill, nothing lost to a late timer). FIFO waiters, one timer, cancellation-safe: a waiter
cancelled before its grant takes nothing; a grant cancelled before it is sent gives its place
back.

A 429 (:meth:`WindowLimiter.pause`) stops the action for every task. The window never
holds more than ``limit`` sends, so a 429 is one the window count cannot explain: the
server counts differently (fixed windows, a token bucket with a small burst, other
clients of the account). From then on the limiter also spaces sends evenly, at most one per
``(window + margin) / limit`` with at most one grant unsent: a server of any of those
models accepts that, and the steady rate is the same as the window's.

``SlotPool`` caps work in flight that outlives one request (assets ``Processing``): a slot is
taken before CreateAsset and given back when polling sees a terminal status.

``Limiter``, ``Grant`` and ``Slots`` are the protocols a shared backend (Redis) implements.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
from collections.abc import Mapping
from typing import Final, Protocol, runtime_checkable

from chenyu_assets._core.rates import Rate

#: The margin added to every window. The server counts *arrival* times: two sends stamped
#: ``W + m`` apart here arrive ``W + m + (d2 - d1)`` apart there, where ``d`` is each
#: request's delay from our stamp to the server's clock (connection pick-up, the write,
#: the network, the server's accept loop). A server window of ``W`` therefore never sees
#: ``limit + 1`` of them as long as ``m`` covers the spread ``d1 - d2`` of that delay (the
#: arrival jitter). On loopback or a LAN that spread is a few milliseconds even on a busy
#: host; 20 ms covers it with room, at a cost of 2 % of a one-second window (0.03 % of a
#: minute). A request whose response comes later than ``m`` after its stamp is counted from
#: ``m`` before its response instead (its arrival cannot be later than that response), so
#: even a stall beyond the margin costs only throughput, never a 429.
DEFAULT_MARGIN: Final = 0.020

#: A grant is handed out up to this long before its place frees, and its ``send()`` waits
#: for that instant: building and signing the request, and a timer that fires late on a
#: busy loop, then cost no throughput. (A send later than its instant costs only that
#: request's lateness, never the bound: the window counts the stamp.)
DEFAULT_LEAD: Final = 0.020

__all__ = [
    "DEFAULT_LEAD",
    "DEFAULT_MARGIN",
    "Grant",
    "Limiter",
    "LimiterRegistry",
    "Rate",
    "SlotPool",
    "Slots",
    "WindowLimiter",
]


@runtime_checkable
class Grant(Protocol):
    """The right to send one request: :meth:`send` when handing it over, then
    :meth:`answered`; or :meth:`cancel`."""

    async def send(self) -> None:
        """Wait for the instant the grant is for (if it came early), then stamp it: the
        request is being handed to the transport now."""

    def answered(self) -> None:
        """The response (or the failure) is here: the place now counts from the send, or
        from ``margin`` before now if that is later (see :class:`WindowLimiter`)."""

    def cancel(self) -> None:
        """The request will not be sent: free its place (no-op once sent)."""


@runtime_checkable
class Limiter(Protocol):
    """What the request engine needs from a rate limiter."""

    async def acquire(self) -> Grant:
        """Wait until one request may be sent."""

    async def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a 429 was received)."""


@runtime_checkable
class Slots(Protocol):
    """A cap on work in flight, held by named holders (an item key or asset name)."""

    @property
    def limit(self) -> int: ...

    async def acquire(self, holder: str) -> None:
        """Wait for a free slot and record ``holder`` as its owner."""

    async def release(self, holder: str) -> None:
        """Free the slot ``holder`` owns; releasing an unknown holder does nothing."""

    def in_use(self) -> int:
        """Slots currently held (as last known, for progress displays)."""


class _Grant:
    __slots__ = ("_at", "_limiter", "_sent")

    def __init__(self, limiter: WindowLimiter, at: float) -> None:
        self._limiter: WindowLimiter | None = limiter
        self._at = at
        self._sent: float | None = None

    async def send(self) -> None:
        if self._limiter is None or self._sent is not None:
            return
        loop = asyncio.get_running_loop()
        limiter = self._limiter
        # wait for the grant's instant, and out any pause (a 429) that began since the grant
        while (wait := max(self._at, limiter._paused_until) - loop.time()) > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.cancel()
                raise
        self._sent = loop.time()
        self._limiter._unsent -= 1
        self._limiter._last_sent = self._sent
        self._limiter._arm(loop)

    def answered(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            if self._sent is None:  # never sent: nothing to count
                limiter._settle(None)
            else:
                limiter._settle(max(self._sent, limiter._now() - limiter.margin))

    def cancel(self) -> None:
        if self._sent is None and self._limiter is not None:
            self._limiter._unsent -= 1
            self.answered()


class WindowLimiter:
    """At most ``rate.limit`` sends in any ``rate.window + margin``; see the module docstring."""

    __slots__ = (
        "_last_sent",
        "_lead",
        "_limit",
        "_moving",
        "_paused_until",
        "_rate",
        "_sends",
        "_span",
        "_timer",
        "_unsent",
        "_waiters",
        "spaced",
    )

    def __init__(
        self, rate: Rate, *, margin: float = DEFAULT_MARGIN, lead: float = DEFAULT_LEAD
    ) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        if not lead >= 0:
            raise ValueError(f"lead must be >= 0, got {lead!r}")
        self._rate = rate
        self._lead = lead
        self._limit = rate.limit
        self._span = rate.window + margin
        self._sends: collections.deque[float] = collections.deque()  # stamped, ascending
        self._moving = 0  # granted, not yet answered: each counts as "now"
        self._unsent = 0  # granted, not yet sent
        self._last_sent = -math.inf
        self._paused_until = -math.inf
        self._waiters: collections.deque[asyncio.Future[float]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        #: True once a 429 switched this limiter to even spacing (see the module docstring)
        self.spaced = False

    @property
    def rate(self) -> Rate:
        return self._rate

    @property
    def margin(self) -> float:
        return self._span - self._rate.window

    def __repr__(self) -> str:
        mode = " spaced" if self.spaced else ""
        return (
            f"<WindowLimiter {self._rate} margin={self.margin * 1000:g}ms{mode} "
            f"sent={len(self._sends)} moving={self._moving} waiters={len(self._waiters)}>"
        )

    def _due(self, now: float) -> float | None:
        """The earliest time the next grant may be made (None: when a grant is settled)."""
        sends, span = self._sends, self._span
        while sends and sends[0] <= now - span:
            sends.popleft()
        due = max(now, self._paused_until)
        full = len(sends) + self._moving - self._limit
        if full >= len(sends) or (self.spaced and self._unsent):
            return None
        if full >= 0:
            due = max(due, sends[full] + span)
        if self.spaced:
            due = max(due, self._last_sent + span / self._limit)
        return due

    async def acquire(self) -> Grant:
        """Wait for a place in the window. FIFO; cancellation-safe."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = None if self._waiters else self._due(now)
        if due is not None and due - self._lead <= now:
            self._moving += 1
            self._unsent += 1
            return _Grant(self, due)
        fut: asyncio.Future[float] = loop.create_future()
        self._waiters.append(fut)
        self._arm(loop)
        try:
            at = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted and cancelled at once
                self._unsent -= 1
                self._settle(None)
            raise
        return _Grant(self, at)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _settle(self, stamp: float | None) -> None:
        self._moving -= 1
        if stamp is not None:
            bisect.insort(self._sends, stamp)
        self._arm(asyncio.get_running_loop())

    async def pause(self, seconds: float) -> None:
        """A 429: grant nothing for ``seconds``, then space sends evenly from now on."""
        loop = asyncio.get_running_loop()
        self.spaced = True
        self._paused_until = max(self._paused_until, loop.time() + max(0.0, seconds))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Grant what is due now to the head waiters; arm the one timer for the next."""
        waiters = self._waiters
        while waiters:
            if waiters[0].done():  # cancelled while waiting: it took nothing
                waiters.popleft()
                continue
            now = loop.time()
            due = self._due(now)
            if due is None:
                return  # a stamp or a cancel will call again
            if due - self._lead > now:
                when = due - self._lead
                if self._timer is None or self._timer.when() > when:
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer = loop.call_at(when, self._wake, loop)
                return
            self._moving += 1
            self._unsent += 1
            waiters.popleft().set_result(due)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._arm(loop)


class LimiterFactory(Protocol):
    def __call__(self, endpoint: str, rate: Rate, *, margin: float) -> Limiter: ...


class LimiterRegistry:
    """One limiter per endpoint (Ark action), created on first use.

    ``rates`` maps endpoint -> :class:`Rate` (or requests per second, or ``"120/min"``);
    ``overrides`` replaces entries; an endpoint in neither gets ``default_rate``. A shared
    backend is plugged in with ``factory``. ``headroom`` (deprecated) paces at that fraction
    of every rate by widening its window.
    """

    __slots__ = ("_default", "_factory", "_limiters", "_margin", "_rates")

    def __init__(
        self,
        rates: Mapping[str, Rate | float | str],
        *,
        overrides: Mapping[str, Rate | float | str] | None = None,
        default_rate: Rate | float = 10.0,
        margin: float = DEFAULT_MARGIN,
        headroom: float | None = None,
        factory: LimiterFactory | None = None,
    ) -> None:
        if headroom is not None and not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        merged = {**rates, **(overrides or {})}
        stretch = 1.0 if headroom is None else 1.0 / headroom
        self._rates = {k: _stretch(Rate.parse(v), stretch) for k, v in merged.items()}
        self._default = _stretch(Rate.parse(default_rate), stretch)
        self._margin = margin
        self._factory = factory
        self._limiters: dict[str, Limiter] = {}

    def rate_for(self, endpoint: str) -> Rate:
        """The rate ``endpoint`` is paced at."""
        return self._rates.get(endpoint, self._default)

    def get(self, endpoint: str) -> Limiter:
        limiter = self._limiters.get(endpoint)
        if limiter is None:
            rate = self.rate_for(endpoint)
            if self._factory is not None:
                limiter = self._factory(endpoint, rate, margin=self._margin)
            else:
                limiter = WindowLimiter(rate, margin=self._margin)
            self._limiters[endpoint] = limiter
        return limiter

    async def acquire(self, endpoint: str) -> Grant:
        return await self.get(endpoint).acquire()

    async def pause(self, endpoint: str, seconds: float) -> None:
        """Stop ``endpoint`` for every task sharing this registry."""
        await self.get(endpoint).pause(seconds)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(self._limiters.items()))
        return f"<LimiterRegistry {inner}>"


def _stretch(rate: Rate, factor: float) -> Rate:
    return rate if factor == 1.0 else Rate(rate.limit, rate.window * factor)


class SlotPool:
    """A local in-flight cap: at most ``limit`` holders at once, FIFO waiters.

    Unlike a semaphore, slots are owned by name so that the task that releases (a poller)
    need not be the one that acquired (a creator), and a double release is harmless.
    """

    __slots__ = ("_held", "_limit", "_waiters")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self._limit = limit
        self._held: set[str] = set()
        self._waiters: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()

    @property
    def limit(self) -> int:
        return self._limit

    def in_use(self) -> int:
        return len(self._held)

    def holders(self) -> frozenset[str]:
        return frozenset(self._held)

    def __repr__(self) -> str:
        return f"<SlotPool {len(self._held)}/{self._limit} waiters={len(self._waiters)}>"

    async def acquire(self, holder: str) -> None:
        if holder in self._held:
            return
        if not self._waiters and len(self._held) < self._limit:
            self._held.add(holder)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((holder, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._held.discard(holder)
                self._hand_over()
            raise

    async def release(self, holder: str) -> None:
        self.release_nowait(holder)

    def release_nowait(self, holder: str) -> None:
        if holder in self._held:
            self._held.discard(holder)
            self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and len(self._held) < self._limit:
            holder, fut = self._waiters.popleft()
            if fut.done():
                continue
            self._held.add(holder)
            fut.set_result(None)
