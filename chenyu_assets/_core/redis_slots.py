"""The shared slot pool of :mod:`chenyu_assets._core.redis_limits`: leased slots in a
sorted set, renewed in the background while their holder lives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from typing import Any, Final

from chenyu_assets._core.logs import get_logger
from chenyu_assets._core.redis_bucket import ScriptRunner
from chenyu_assets.errors import LimiterUnavailableError

__all__ = ["SLOTS_SCRIPT", "RedisSlots"]

log = get_logger("chenyu_assets.redis_limits")

#: Leased slots. KEYS[1] sorted set (member -> lease expiry, ms of server time); ARGV op,
#: limit, lease_ms, members... Returns {granted, in use, ms until the first lease ends,
#: lost members (renew)...}.
SLOTS_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, op, lease = KEYS[1], ARGV[1], tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local out = {0, 0, 0}
if op == 'acquire' then
  local n = redis.call('ZCARD', key)
  if redis.call('ZSCORE', key, ARGV[4]) or n < tonumber(ARGV[2]) then
    redis.call('ZADD', key, now + lease, ARGV[4])
    out[1] = 1
  else
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    out[3] = tonumber(first[2]) - now
  end
elseif op == 'renew' then
  out[1] = 1
  for i = 4, #ARGV do
    if redis.call('ZSCORE', key, ARGV[i]) then
      redis.call('ZADD', key, now + lease, ARGV[i])
    else
      table.insert(out, ARGV[i])
    end
  end
elseif op == 'release' then
  out[1] = 1
  for i = 4, #ARGV do redis.call('ZREM', key, ARGV[i]) end
end
out[2] = redis.call('ZCARD', key)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', key, tonumber(last[2]) + 1000) end
return out
"""


class RedisSlots:
    """A slot pool shared through Redis, with leases; see the module docstring.

    ``in_use()`` is the account-wide count seen by the last round trip.
    """

    def __init__(
        self, limits: ScriptRunner, key: str, limit: int, *, lease: float, poll: float
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        if not lease > 0:
            raise ValueError(f"lease must be > 0, got {lease!r}")
        self._limits = limits
        self.key = key
        self._limit = limit
        self._lease_ms = max(1, int(lease * 1000))
        self._renew_every = lease / 3
        self._poll = poll
        #: names this process's leases: host, pid and a random part
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: set[str] = set()
        self._count = 0
        self._turn = asyncio.Lock()
        self._released = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._last_renewed = time.monotonic()
        self._broken: LimiterUnavailableError | None = None

    @property
    def limit(self) -> int:
        return self._limit

    def in_use(self) -> int:
        return self._count

    def holders(self) -> frozenset[str]:
        """The holders this process owns."""
        return frozenset(self._held)

    def __repr__(self) -> str:
        return f"<RedisSlots {self.key} {self._count}/{self._limit} mine={len(self._held)}>"

    def _member(self, holder: str) -> str:
        return f"{self.owner}|{holder}"

    async def _run(self, op: str, holders: list[str]) -> list[Any]:
        if self._broken is not None:
            raise self._broken
        reply = await self._limits.run_script(
            SLOTS_SCRIPT,
            self.key,
            op,
            self._limit,
            self._lease_ms,
            *(self._member(h) for h in holders),
        )
        result = list(reply)
        self._count = int(result[1])
        return result

    async def acquire(self, holder: str) -> None:
        """Wait for a free slot (account-wide) and lease it to ``holder``."""
        if holder in self._held:
            return
        async with self._turn:  # one local waiter asks Redis at a time, FIFO
            while True:
                self._released.clear()
                granted, _count, wait_ms = (await self._run("acquire", [holder]))[:3]
                if granted:
                    self._held.add(holder)
                    self._start_renewer()
                    return
                wait = min(self._poll, max(0.001, int(wait_ms) / 1000))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._released.wait()

    async def release(self, holder: str) -> None:
        """Give ``holder``'s slot back; a holder this process does not hold is a no-op."""
        if holder not in self._held:
            return
        self._held.discard(holder)
        self._released.set()
        await self._run("release", [holder])

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._last_renewed = time.monotonic()
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name=f"renew {self.key}"
            )

    async def _renew_forever(self) -> None:
        lease = self._lease_ms / 1000
        while True:
            await asyncio.sleep(self._renew_every)
            held = sorted(self._held)
            if not held:
                self._last_renewed = time.monotonic()
                continue
            try:
                lost = (await self._run("renew", held))[3:]
            except LimiterUnavailableError as exc:
                if time.monotonic() - self._last_renewed + self._renew_every < lease:
                    log.warning("renewing slot leases failed, will retry: %s", exc)
                    continue
                log.error("slot leases can no longer be renewed: %s", exc)
                self._broken = exc
                return
            self._last_renewed = time.monotonic()
            for member in lost:
                holder = str(member, "utf-8") if isinstance(member, bytes) else str(member)
                holder = holder.split("|", 1)[-1]
                if holder in self._held:
                    self._held.discard(holder)
                    log.warning("the lease of slot %s expired before it was renewed", holder)

    async def aclose(self) -> None:
        """Stop renewing. Slots still held expire after the lease (their work may still be
        running on the service, so they are not handed back early)."""
        task, self._renewer = self._renewer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
