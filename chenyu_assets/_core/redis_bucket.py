"""The shared token bucket of :mod:`chenyu_assets._core.redis_limits`: GCRA in one Lua
script, and the map from the Redis server's clock to this process's clock.

Every grant time is decided by the script from ``redis.call('TIME')``; each process only
has to *wait until* that instant. It maps server time onto its event loop's clock with
:class:`ServerClock` (offset from the fastest round trip seen, so the error is a fraction
of a millisecond and always on the late side), which makes the wake-up independent of how
long this particular answer took to arrive. A process that still wakes more than
``max_late`` after its turn (a stalled event loop or host) gives the turn up and takes a
new one: sent late, it would bunch with the following grants inside one second.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final

from chenyu_assets._core.ratelimit import Grant

_GUARD: Final = 1e-4

if TYPE_CHECKING:
    from chenyu_assets._core.redis_limits import RedisLimits

__all__ = ["BUCKET_SCRIPT", "TIME_SCRIPT", "RedisBucket", "ServerClock"]

#: How fast the server's and our clocks may drift apart (100 ppm, generous).
_DRIFT: Final = 1e-4

#: GCRA. KEYS[1] bucket; ARGV interval_us, tau_us (= (burst - 1) * interval), pause_us
#: (< 0: acquire), idle_ms. Returns {µs to wait for the reserved grant (-1 for a pause),
#: the server's time in µs}.
BUCKET_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local pause = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil then tat = now + interval + tau end
local wait = -1
if pause >= 0 then
  tat = math.max(tat, now + pause + interval + tau)
else
  wait = math.max(0, tat - tau - now)
  tat = math.max(tat, now) + interval
end
local ttl = math.floor((tat - now) / 1000) + tonumber(ARGV[4])
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
return {wait, now}
"""

#: The server's time in µs.
TIME_SCRIPT: Final = """
local t = redis.call('TIME')
return tonumber(t[1]) * 1000000 + tonumber(t[2])
"""


class ServerClock:
    """Maps Redis ``TIME`` onto the event loop's clock.

    The offset comes from the fastest round trip seen (the server read its clock somewhere
    inside it, so the error is half of it), aged by :data:`_DRIFT` per second; a faster or
    fresher sample replaces it. :meth:`local` errs late, never early.
    """

    __slots__ = ("_at", "_error", "_offset", "synced")

    def __init__(self) -> None:
        self._offset = 0.0
        self._error = math.inf
        self._at = 0.0
        self.synced = False

    def sample(self, server: float, sent: float, received: float) -> None:
        error = (received - sent) / 2
        if error <= self._error + (received - self._at) * _DRIFT:
            self._offset = server - (sent + received) / 2
            self._error = error
            self._at = received

    def local(self, server: float, now: float) -> float:
        """The latest loop time at which server time ``server`` can be reached."""
        return server - self._offset + self._error + (now - self._at) * _DRIFT


class RedisBucket:
    """A token bucket shared through Redis; see the module docstring."""

    __slots__ = (
        "_burst",
        "_interval_us",
        "_key",
        "_limits",
        "_paused_until",
        "_rate",
        "_tau_us",
        "late",
    )

    def __init__(self, limits: RedisLimits, key: str, rate: float, *, burst: int = 1) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self._limits = limits
        self._key = key
        self._rate = float(rate)
        self._burst = int(burst)
        # whole microseconds, rounded up: never faster than the (guarded) rate
        self._interval_us = math.ceil(1e6 / (self._rate * (1.0 - _GUARD)))
        self._tau_us = (self._burst - 1) * self._interval_us
        self._paused_until = -math.inf
        #: grants given up because this process woke too late to use them (see module doc)
        self.late = 0

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def key(self) -> str:
        return self._key

    def __repr__(self) -> str:
        return f"<RedisBucket {self._key} rate={self._rate:g}/s burst={self._burst}>"

    async def acquire(self) -> Grant:
        """Reserve the next grant (one round trip) and sleep until it is due."""
        loop = asyncio.get_running_loop()
        limits = self._limits
        if not limits.clock.synced:
            await limits.sync_clock(once=True)
        while True:
            sent = loop.time()
            wait_us, now_us = await limits.run_script(
                BUCKET_SCRIPT, self._key, self._interval_us, self._tau_us, -1, limits.idle_ms
            )
            received = loop.time()
            limits.clock.sample(now_us / 1e6, sent, received)
            due = limits.clock.local((now_us + wait_us) / 1e6, received)
            if due > received:
                await asyncio.sleep(due - received)
            woke = loop.time()
            if woke < self._paused_until:
                continue  # this process saw a 429 meanwhile: the grant fell inside the pause
            if woke - due <= limits.max_late:
                return _Sent()
            # Woken too late (a busy loop or host): sent now, this grant would bunch with the
            # next ones in some one-second window. Give it up and take a new one.
            self.late += 1

    async def pause(self, seconds: float) -> None:
        """Grant nothing, in any process, for ``seconds``; then start empty."""
        loop = asyncio.get_running_loop()
        seconds = max(0.0, seconds)
        self._paused_until = max(self._paused_until, loop.time() + seconds)
        await self._limits.run_script(
            BUCKET_SCRIPT,
            self._key,
            self._interval_us,
            self._tau_us,
            int(seconds * 1e6),
            self._limits.idle_ms,
        )


class _Sent:
    async def send(self) -> None:
        pass

    def cancel(self) -> None:
        pass
