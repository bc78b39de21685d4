"""Client-side pacing: a precise token bucket, a per-endpoint registry, and an in-flight cap.

``TokenBucket`` grants at most ``rate`` acquisitions per second with at most ``burst``
back to back. It starts **empty**, so the very first second sends no more than the rate:
a strict server that counts requests in any sliding one-second window never sees more
than ``rate + burst - 1`` (with the default ``burst=1``: never more than ``rate``; see
``_GUARD``). It runs on the event loop's clock, wakes waiters with one
timer at the exact instant a token is due (no polling), serves waiters first-in first-out,
and is cancellation-safe: a waiter cancelled before its grant takes nothing; one cancelled
after its grant gives the token back.

With ``burst=1`` a timer that fires late would lose that time for good (the bucket is
full), and on a busy loop that adds up (at 200/s, 1 ms of lateness per grant is 20 %).
After a 429 (``pause``) a bucket also paces 2 % slower per 429, down to 90 %, and recovers
after 30 s without one (multiplicative decrease): send jitter it cannot see settles it just
below the point where a strict server refuses it, instead of paying a pause again and again.

``slack`` lets the bucket keep a fraction of a token as *lateness credit* so the next grant
comes sooner; the window bound becomes ``burst + slack + rate`` grants per second.

``LimiterRegistry`` holds one limiter per endpoint (Ark action), with defaults from the
published table in :mod:`chenyu_assets.limits`, paced at ``headroom`` × the limit (default
0.99: a strict window counts arrival times, and 1 % absorbs the milliseconds by which
scheduling can bunch two requests) and given the lateness credit the headroom leaves. A
429 pauses an endpoint for every task via :meth:`LimiterRegistry.pause`.

``SlotPool`` caps work in flight that outlives one request (assets ``Processing``): a slot is
taken before CreateAsset and given back when polling sees a terminal status.

``Limiter`` and ``Slots`` are the protocols a shared backend (Redis) implements.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

#: Fractions of a token this close to 1 count as a whole token. Without it, a deficit
#: smaller than the clock's resolution re-arms the timer at "now" forever (a busy spin).
_EPS = 1e-9

#: The bucket refills this fraction below its nominal rate, so that ``rate + 1`` grants always
#: span strictly more than one second: a strict server counting any closed one-second window
#: never sees more than ``rate``, even after float rounding. Costs 0.01 % of throughput.
_GUARD = 1e-4

#: After a 429 a bucket paces this much slower (multiplicative decrease), down to
#: ``_FLOOR`` × its rate, and returns to its rate after ``_RECOVER_AFTER`` seconds without
#: another 429: a client whose requests arrive unevenly (send jitter a token bucket cannot
#: see) settles just below the point where a strict server refuses it.
_DECREASE = 0.98
_FLOOR = 0.90
_RECOVER_AFTER = 30.0

__all__ = [
    "Limiter",
    "LimiterRegistry",
    "SlotPool",
    "Slots",
    "TokenBucket",
]


@runtime_checkable
class Limiter(Protocol):
    """What the request engine needs from a rate limiter."""

    async def acquire(self) -> None:
        """Wait until one request may be sent."""

    async def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a 429 was received); afterwards start empty."""


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


class TokenBucket:
    """A token bucket with explicit burst that starts empty; see the module docstring."""

    __slots__ = (
        "_burst",
        "_capacity",
        "_fill",
        "_last",
        "_last_429",
        "_paused_until",
        "_rate",
        "_timer",
        "_tokens",
        "_waiters",
    )

    def __init__(self, rate: float, *, burst: int = 1, slack: float = 0.0) -> None:
        """``slack`` (0 <= slack < 1) is lateness credit: a fraction of a token the bucket
        may hold beyond ``burst``, so that a timer firing late by up to ``slack / rate``
        seconds costs no throughput (the next grant comes that much sooner). It loosens the
        window bound to ``burst + slack + rate`` grants per second: keep it below the gap
        between the server's limit and ``rate`` (:class:`LimiterRegistry` does)."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if not 0.0 <= slack < 1.0:
            raise ValueError(f"slack must be in [0, 1), got {slack!r}")
        self._rate = float(rate)
        self._fill = self._rate * (1.0 - _GUARD)
        self._burst = int(burst)
        self._capacity = self._burst + float(slack)
        self._last_429 = float("-inf")
        self._tokens = 0.0
        self._last: float | None = None
        self._paused_until = float("-inf")
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    def __repr__(self) -> str:
        return (
            f"<TokenBucket rate={self._rate:g}/s burst={self._burst} "
            f"slack={self._capacity - self._burst:.2f} "
            f"tokens={self._tokens:.3f} waiters={len(self._waiters)}>"
        )

    @property
    def pace(self) -> float:
        """The rate granted now: ``rate``, or less for a while after a 429."""
        return self._fill / (1.0 - _GUARD)

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
        if now - self._last_429 > _RECOVER_AFTER:
            self._fill = self._rate * (1.0 - _GUARD)
        if now < self._paused_until:
            self._tokens = 0.0
            self._last = self._paused_until
            return
        if now > self._last:
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._fill)
            self._last = now

    async def acquire(self) -> None:
        """Wait for a token. FIFO; cancellation-safe."""
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if not self._waiters and self._tokens >= 1.0 - _EPS:
            self._tokens = max(0.0, self._tokens - 1.0)
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self._schedule(loop)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The grant arrived together with the cancellation: hand the token back.
                self._tokens = min(self._capacity, self._tokens + 1.0)
                self._schedule(loop)
            raise

    def pause_until(self, when: float) -> None:
        """Grant nothing before loop time ``when``; the bucket is empty at ``when``."""
        if when <= self._paused_until:
            return
        self._paused_until = when
        self._tokens = 0.0
        self._last = when
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._schedule(loop)

    async def pause(self, seconds: float) -> None:
        """A 429 arrived: grant nothing for ``seconds``, then pace a little slower (see
        ``_DECREASE``) until no 429 has come for ``_RECOVER_AFTER`` seconds."""
        now = asyncio.get_running_loop().time()
        self._fill = max(self._rate * _FLOOR * (1.0 - _GUARD), self._fill * _DECREASE)
        self._last_429 = now
        self.pause_until(now + max(0.0, seconds))

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm the single timer for the instant the head waiter's token is due."""
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
        if not self._waiters or self._timer is not None:
            return
        now = loop.time()
        self._refill(now)
        if now < self._paused_until:
            when = self._paused_until + 1.0 / self._fill
        else:
            when = now + max(1e-6, (1.0 - self._tokens) / self._fill)
        self._timer = loop.call_at(when, self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        while self._waiters and self._tokens >= 1.0 - _EPS:
            fut = self._waiters.popleft()
            if fut.done():  # cancelled while waiting: it took nothing
                continue
            self._tokens = max(0.0, self._tokens - 1.0)
            fut.set_result(None)
        self._schedule(loop)


class LimiterRegistry:
    """One limiter per endpoint, created on first use from the defaults table.

    ``rates`` maps endpoint -> requests per second (the published table); ``overrides``
    replaces entries; an endpoint in neither gets ``default_rate``. Every limiter has the
    same ``burst``. A shared backend can be plugged in with ``factory``.
    """

    __slots__ = ("_burst", "_default_rate", "_factory", "_headroom", "_limiters", "_rates")

    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        overrides: Mapping[str, float] | None = None,
        default_rate: float = 10.0,
        burst: int = 1,
        headroom: float = 0.99,
        factory: LimiterFactory | None = None,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        self._rates = dict(rates)
        if overrides:
            self._rates.update(overrides)
        self._default_rate = default_rate
        self._burst = burst
        self._headroom = headroom
        self._factory = factory
        self._limiters: dict[str, Limiter] = {}

    def rate_for(self, endpoint: str) -> float:
        """The pacing rate (published rate × headroom) used for ``endpoint``."""
        return self._rates.get(endpoint, self._default_rate) * self._headroom

    def slack_for(self, endpoint: str) -> float:
        """Lateness credit for ``endpoint``'s bucket. The gap the headroom leaves below the
        published limit serves two needs: a quarter of it (at most 0.9 of a token) lets
        timers that fire late on a busy loop cost no throughput; the other three quarters
        stay for arrival jitter, so the server still sees at most the published limit in
        every one-second window when requests travel unevenly (about 7.5 ms)."""
        published = self._rates.get(endpoint, self._default_rate)
        gap = published - self.rate_for(endpoint)
        return max(0.0, min(0.9, gap / 4))

    def get(self, endpoint: str) -> Limiter:
        limiter = self._limiters.get(endpoint)
        if limiter is None:
            rate = self.rate_for(endpoint)
            if self._factory is not None:
                limiter = self._factory(endpoint, rate, self._burst)
            else:
                limiter = TokenBucket(rate, burst=self._burst, slack=self.slack_for(endpoint))
            self._limiters[endpoint] = limiter
        return limiter

    async def acquire(self, endpoint: str) -> None:
        await self.get(endpoint).acquire()

    async def pause(self, endpoint: str, seconds: float) -> None:
        """Stop ``endpoint`` for every task sharing this registry."""
        await self.get(endpoint).pause(seconds)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(self._limiters.items()))
        return f"<LimiterRegistry headroom={self._headroom} {inner}>"


class LimiterFactory(Protocol):
    def __call__(self, endpoint: str, rate: float, burst: int) -> Limiter: ...


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
