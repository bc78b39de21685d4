"""Account limits shared by many processes through Redis.

The published limits (30 creates/s, 100 gets/s, 30 assets Processing) hold per *account*,
so processes that share an account must share one limiter. :class:`RedisLimits` keeps the
state in a Redis server and hands out the two things the core needs:

``RedisBucket`` (a :class:`~chenyu_assets._core.ratelimit.Limiter`)
    GCRA in one Lua script: one round trip per :meth:`~RedisBucket.acquire`, the server's
    ``TIME`` as the only clock (client clocks never matter). Each call *reserves* the next
    grant time and returns how long to wait for it, so waiters in every process are served
    in arrival order with no polling. Burst and start-empty behave like the local
    :class:`~chenyu_assets._core.ratelimit.TokenBucket` (same ``_GUARD``): a new or expired
    bucket is empty and refills at the rate up to ``burst``. :meth:`~RedisBucket.pause`
    (a 429) moves the bucket past the pause for every process; grants already handed out
    to *other* processes before the pause still go out (at most one per waiting task).

``RedisSlots`` (a :class:`~chenyu_assets._core.ratelimit.Slots`)
    A semaphore of ``limit`` named slots in a sorted set, scored by lease expiry. A live
    holder's leases are renewed in the background every ``lease / 3``; a holder that dies
    (SIGKILL, power loss) stops renewing and its slots come back when the lease runs out.
    Waiters poll every ``poll`` seconds and wake at once on a release in their own process.

Keys are ``<prefix>:<fingerprint>:rate:<endpoint>`` and ``<prefix>:<fingerprint>:slots:<name>``
where the fingerprint is the first 16 hex digits of sha256 of the account's access key: the
key itself is never stored. Every Redis failure (refused, reset, timeout, error reply)
raises :class:`~chenyu_assets.errors.LimiterUnavailableError` within ``timeout`` seconds;
nothing falls back to a local limiter, which would let the account's limit be exceeded.

``redis`` (redis-py, asyncio) is an optional dependency (``pip install 'chenyu-assets[redis]'``),
imported when a :class:`RedisLimits` is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from chenyu_assets._core.logs import get_logger, register_secret
from chenyu_assets._core.ratelimit import _GUARD, LimiterFactory
from chenyu_assets.errors import ConfigurationError, LimiterUnavailableError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "RedisBucket",
    "RedisLimits",
    "RedisSlots",
    "SharedSetup",
    "account_fingerprint",
    "open_limits",
]

log = get_logger("chenyu_assets.redis_limits")

_SCHEMES: Final = ("redis", "rediss", "unix")

#: GCRA. KEYS[1] bucket; ARGV interval_us, tau_us (= (burst - 1) * interval), pause_us
#: (< 0: acquire), idle_ms. Returns the µs to wait for the reserved grant (-1 for a pause).
_BUCKET: Final = """
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
return wait
"""

#: Leased slots. KEYS[1] sorted set (member -> lease expiry, ms of server time); ARGV op,
#: limit, lease_ms, members... Returns {granted, in use, ms until the first lease ends,
#: lost members (renew)...}.
_SLOTS: Final = """
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


def account_fingerprint(access_key: str) -> str:
    """The account's name in Redis keys: 16 hex digits of sha256(access key)."""
    return hashlib.sha256(access_key.encode("utf-8")).hexdigest()[:16]


def _shown(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisLimits:
    """Shared limiters and slot pools of one account, kept in the Redis at ``url``.

    ``account`` is the access key (or API key) the limits belong to; only its fingerprint
    is used. ``timeout`` bounds every Redis round trip (connect and read). Building one
    does no I/O; :meth:`aclose` stops the slot renewers and closes the connections.
    """

    def __init__(
        self,
        url: str,
        *,
        account: str,
        prefix: str = "chenyu-assets",
        timeout: float = 2.0,
        idle_ttl: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                "limits must be a redis://, rediss:// or unix:// URL (e.g. redis://host:6379/0)"
            )
        if not account:
            raise ConfigurationError("shared limits need the account's access key")
        if not timeout > 0:
            raise ConfigurationError("timeout must be positive")
        try:
            import redis.asyncio as aioredis
            import redis.exceptions
        except ImportError:
            raise ConfigurationError(
                "limits='redis://...' needs the redis package: pip install 'chenyu-assets[redis]'"
            ) from None
        register_secret(parts.password)
        self._aioredis = aioredis
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self.url = url
        self.shown_url = _shown(url)
        self.namespace = f"{prefix}:{account_fingerprint(account)}"
        self.timeout = timeout
        self.idle_ms = int(idle_ttl * 1000)
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._slots: list[RedisSlots] = []

    def __repr__(self) -> str:
        return f"<RedisLimits {self.shown_url} namespace={self.namespace}>"

    def _script(self, text: str) -> Any:
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = self._redis().register_script(text)
        return script

    def _redis(self) -> Redis:
        if self._client is None:
            self._scripts.clear()
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = self._aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # fail fast: the caller stops, it never guesses
            )
        return self._client

    async def run_script(self, script: str, key: str, *args: int | str) -> Any:
        """Run a Lua ``script`` on ``key``: one round trip (EVALSHA; EVAL the first time)."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await self._script(script)(keys=[key], args=list(args))
        except self._errors as exc:
            raise LimiterUnavailableError(
                f"shared limiter at {self.shown_url} unavailable "
                f"({type(exc).__name__}: {exc}); stopped sending rather than risk "
                "exceeding the account's limits without it"
            ) from exc

    async def ping(self) -> None:
        """Check the server answers (LimiterUnavailableError if not)."""
        await self.run_script("return 1", f"{self.namespace}:ping")

    def limiter(self, endpoint: str, rate: float, burst: int = 1) -> RedisBucket:
        """A shared bucket for ``endpoint`` (a :class:`LimiterFactory`)."""
        return RedisBucket(self, f"{self.namespace}:rate:{endpoint}", rate, burst=burst)

    def slots(
        self,
        limit: int,
        *,
        name: str = "processing",
        lease: float = 15.0,
        poll: float = 0.05,
    ) -> RedisSlots:
        """A shared slot pool of ``limit`` (closed by :meth:`aclose`)."""
        pool = RedisSlots(self, f"{self.namespace}:slots:{name}", limit, lease=lease, poll=poll)
        self._slots.append(pool)
        return pool

    async def aclose(self) -> None:
        for pool in self._slots:
            await pool.aclose()
        self._slots.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class RedisBucket:
    """A token bucket shared through Redis; see the module docstring."""

    __slots__ = ("_burst", "_interval_us", "_key", "_limits", "_paused_until", "_rate", "_tau_us")

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

    async def acquire(self) -> None:
        """Reserve the next grant (one round trip) and sleep until it is due."""
        loop = asyncio.get_running_loop()
        while True:
            wait_us = await self._limits.run_script(
                _BUCKET, self._key, self._interval_us, self._tau_us, -1, self._limits.idle_ms
            )
            if wait_us > 0:
                await asyncio.sleep(wait_us / 1e6)
            if loop.time() >= self._paused_until:
                return
            # this process saw a 429 while we waited: that grant fell inside the pause

    async def pause(self, seconds: float) -> None:
        """Grant nothing, in any process, for ``seconds``; then start empty."""
        loop = asyncio.get_running_loop()
        seconds = max(0.0, seconds)
        self._paused_until = max(self._paused_until, loop.time() + seconds)
        await self._limits.run_script(
            _BUCKET,
            self._key,
            self._interval_us,
            self._tau_us,
            int(seconds * 1e6),
            self._limits.idle_ms,
        )


class RedisSlots:
    """A slot pool shared through Redis, with leases; see the module docstring.

    ``in_use()`` is the account-wide count seen by the last round trip.
    """

    def __init__(
        self, limits: RedisLimits, key: str, limit: int, *, lease: float, poll: float
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
            _SLOTS,
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


class SharedSetup(NamedTuple):
    """What a client builds its limiter registry from (see :func:`open_limits`)."""

    limits: RedisLimits | None
    factory: LimiterFactory | None
    closers: list[Callable[[], Awaitable[None]]]


def open_limits(
    limits: str | RedisLimits | None,
    *,
    account: str | None,
    limiter_factory: LimiterFactory | None = None,
) -> SharedSetup:
    """Resolve a client's ``limits=`` argument. A URL is opened and owned (the client closes
    it); a :class:`RedisLimits` is used as is (its creator closes it); None keeps
    ``limiter_factory`` (None: local buckets)."""
    if limits is None:
        return SharedSetup(None, limiter_factory, [])
    if limiter_factory is not None:
        raise ConfigurationError("pass limits= or limiter_factory=, not both")
    if isinstance(limits, RedisLimits):
        return SharedSetup(limits, limits.limiter, [])
    if not isinstance(limits, str):
        raise ConfigurationError("limits must be a redis:// URL or a RedisLimits")
    if not account:
        raise ConfigurationError("shared limits need the account's access key")
    shared = RedisLimits(limits, account=account)
    return SharedSetup(shared, shared.limiter, [shared.aclose])
