"""The shared send-time window of :mod:`chenyu_assets._core.redis_limits`.

The same algorithm as :class:`~chenyu_assets._core.ratelimit.WindowLimiter`, kept in one
Redis sorted set per action on the Redis server's clock (``TIME``). Each member is one
request, scored by the moment it stops counting. A grant counts as "now, moving" from its
admission until its response is in (or for ``lease`` seconds if its process dies first);
then the stamp, sent in the background once the response is here, counts it until
``TIME + window`` where ``TIME`` is the server's clock when the stamp *arrives*: never
earlier than the response, hence never earlier than the request's arrival at the API
server, so the window holds for any jitter and no clock is mapped between machines (the
margin is not needed here; it only shortens the wait while a request is in flight).
Without that second round trip a place could only be counted from its admission, and a
late send would push a window over. Admission is one round trip (the script prunes,
counts and adds atomically; FIFO among this process's waiters). A 429 (``pause``) stops
the action and switches it to even spacing in every process: each grant's instant, on the
server's clock, at least ``(window + margin) / limit`` after the previous one's, for as
long as the action is in use (the state expires ``idle`` after the last grant).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from typing import Any, Final, Protocol

from chenyu_assets._core.logs import get_logger
from chenyu_assets._core.ratelimit import DEFAULT_LEAD, DEFAULT_MARGIN, Grant, Rate

__all__ = ["WINDOW_SCRIPT", "RedisWindow", "ScriptRunner"]

log = get_logger("chenyu_assets.redis_limits")

#: KEYS[1] sorted set (member -> µs at which it stops counting). ARGV op, member, limit,
#: span_us, lease_us, lead_us, idle_ms, pause_us (stamp: window_us), the state hash.
#: Returns {granted, µs to wait (for the grant's instant, or before asking again; -1: unknown)}.
WINDOW_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key, op, member, state = KEYS[1], ARGV[1], ARGV[2], ARGV[9]
local limit, span, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lead, idle = tonumber(ARGV[6]), tonumber(ARGV[7])
if op == 'stamp' then
  redis.call('ZADD', key, now + tonumber(ARGV[8]), member)
elseif op == 'cancel' then
  redis.call('ZREM', key, member)
elseif op == 'pause' then
  local until_ = now + tonumber(ARGV[8])
  if until_ > tonumber(redis.call('HGET', state, 'pause') or '0') then
    redis.call('HSET', state, 'pause', string.format('%.0f', until_))
  end
  redis.call('HSET', state, 'spaced', '1')
  redis.call('PEXPIRE', state, math.floor(tonumber(ARGV[8]) / 1000) + idle)
  return {0, 0}
end
if op ~= 'admit' then
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, math.floor(tonumber(last[2]) / 1000) + idle) end
  return {1, 0}
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local due = tonumber(redis.call('HGET', state, 'pause') or '0')
if due < now then due = now end
local n = redis.call('ZCARD', key)
if n >= limit then
  local e = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  local at = tonumber(e[2])
  if at > now + span then return {0, -1} end
  if at > due then due = at end
end
local spaced = redis.call('HGET', state, 'spaced')
if spaced then
  local next_ = tonumber(redis.call('HGET', state, 'last') or '0') + math.ceil(span / limit)
  if next_ > due then due = next_ end
end
if due - lead > now then return {0, due - lead - now} end
redis.call('ZADD', key, now + lease, member)
redis.call('PEXPIRE', key, math.floor(lease / 1000) + idle)
if spaced then
  redis.call('HSET', state, 'last', string.format('%.0f', due))
  redis.call('PEXPIRE', state, math.floor(span / 1000) + idle)
end
return {1, due - now}
"""


class ScriptRunner(Protocol):
    """What the shared limiters need from :class:`~.redis_limits.RedisLimits`."""

    idle_ms: int

    async def run_script(self, script: str, key: str, *args: int | str) -> Any: ...


class _RedisGrant:
    __slots__ = ("_at", "_member", "_sent", "_window")

    def __init__(self, window: RedisWindow, member: str, at: float) -> None:
        self._window: RedisWindow | None = window
        self._member = member
        self._at = at
        self._sent = False

    async def send(self) -> None:
        wait = self._at - asyncio.get_running_loop().time()
        if self._window is not None and not self._sent and wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.cancel()
                raise
        self._sent = True

    def answered(self) -> None:
        window, self._window = self._window, None
        if window is not None:
            window._later("stamp" if self._sent else "cancel", self._member)

    def cancel(self) -> None:
        if not self._sent:
            self.answered()


class RedisWindow:
    """A send-time window shared through Redis; see the module docstring."""

    __slots__ = (
        "_args",
        "_key",
        "_pending",
        "_rate",
        "_runner",
        "_state",
        "_turn",
        "_window_us",
    )

    def __init__(
        self,
        runner: ScriptRunner,
        key: str,
        rate: Rate,
        *,
        margin: float = DEFAULT_MARGIN,
        lead: float = DEFAULT_LEAD,
        lease: float = 10.0,
    ) -> None:
        self._runner = runner
        self._key = key
        self._state = f"{key}:state"
        self._rate = rate
        span_us = round((rate.window + margin) * 1e6)
        lease_us = max(span_us, round(lease * 1e6))
        self._args = (rate.limit, span_us, lease_us, round(lead * 1e6), runner.idle_ms)
        self._window_us = round(rate.window * 1e6)
        self._turn = asyncio.Lock()  # one local waiter asks Redis at a time, FIFO
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def rate(self) -> Rate:
        return self._rate

    @property
    def key(self) -> str:
        return self._key

    def __repr__(self) -> str:
        return f"<RedisWindow {self._key} {self._rate} pending={len(self._pending)}>"

    async def _run(self, op: str, member: str, extra_us: int = 0) -> tuple[int, int]:
        reply = await self._runner.run_script(
            WINDOW_SCRIPT, self._key, op, member, *self._args, extra_us, self._state
        )
        return int(reply[0]), int(reply[1])

    async def acquire(self) -> Grant:
        """Wait for a place in the account-wide window (one round trip per try)."""
        loop = asyncio.get_running_loop()
        member = f"{_OWNER}:{os.getpid()}:{next(_SEQ)}"  # unique per grant, per host
        span = (self._args[1]) / 1e6
        async with self._turn:
            while True:
                granted, wait_us = await self._run("admit", member)
                received = loop.time()
                if granted:
                    return _RedisGrant(self, member, received + wait_us / 1e6)
                # -1: only unstamped grants fill the window; they are stamped within moments
                await asyncio.sleep(wait_us / 1e6 if wait_us >= 0 else span / self._args[0])

    def _later(self, op: str, member: str) -> None:
        """Stamp or cancel in the background: the request does not wait for Redis."""
        task = asyncio.get_running_loop().create_task(self._settle(op, member))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, op: str, member: str) -> None:
        try:
            await self._run(op, member, self._window_us)
        except Exception as exc:  # the place stays "moving" until its lease ends: safe
            log.warning("shared limiter: %s of %s failed: %s", op, self._key, exc)

    async def pause(self, seconds: float) -> None:
        """Grant nothing, in any process, for ``seconds``; then space sends evenly."""
        await self._run("pause", "", int(max(0.0, seconds) * 1e6))

    async def aclose(self) -> None:
        """Wait for the stamps still on their way."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


_OWNER: Final = secrets.token_hex(6)
_SEQ: Final = itertools.count()

#: The old name.
RedisBucket = RedisWindow
