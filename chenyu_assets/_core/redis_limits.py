"""Account limits shared by many processes through Redis.

The published limits (30 creates/s, 100 gets/s, 30 assets Processing) hold per *account*,
so processes that share an account must share one limiter. :class:`RedisLimits` keeps the
state in a Redis server and hands out the two things the core needs:

``RedisWindow`` (a :class:`~chenyu_assets._core.ratelimit.Limiter`, in ``redis_bucket``)
    The local limiter's send-time window, kept per action in a sorted set on the Redis
    server's clock: one round trip per admission plus a stamp sent alongside the request
    (see that module). A 429 (:meth:`~RedisWindow.pause`) stops the action in every
    process and switches it to even spacing until no 429 came for ``idle_ttl``.

``RedisSlots`` (a :class:`~chenyu_assets._core.ratelimit.Slots`, in ``redis_slots``)
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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import urlsplit

from chenyu_assets._core.logs import get_logger, redact_url, register_secret
from chenyu_assets._core.ratelimit import DEFAULT_MARGIN, LimiterFactory, Rate
from chenyu_assets._core.redis_bucket import WINDOW_SCRIPT, RedisWindow
from chenyu_assets._core.redis_slots import SLOTS_SCRIPT, RedisSlots
from chenyu_assets.errors import ConfigurationError, LimiterUnavailableError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger("chenyu_assets.limits")

__all__ = [
    "RedisLimits",
    "RedisSlots",
    "RedisWindow",
    "SharedSetup",
    "account_fingerprint",
    "import_redis",
    "open_limits",
]

_SCHEMES: Final = ("redis", "rediss", "unix")


def account_fingerprint(access_key: str) -> str:
    """The account's name in Redis keys: 16 hex digits of sha256(access key)."""
    return hashlib.sha256(access_key.encode("utf-8")).hexdigest()[:16]


def import_redis(url: str, needer: str, what: str) -> tuple[Any, Any]:
    """``redis.asyncio`` and ``redis`` (for its exceptions), after checking ``url`` parses;
    ConfigurationError naming ``needer`` / ``what`` otherwise (never quoting the URL)."""
    try:
        import redis
        import redis.asyncio as aioredis
        import redis.exceptions
        from redis.asyncio.connection import parse_url
    except ImportError:
        raise ConfigurationError(
            f"{needer} needs the redis package: pip install 'chenyu-assets[redis]'"
        ) from None
    try:
        parse_url(url)
    except ValueError:  # the message may quote the URL: not shown
        raise ConfigurationError(
            f"{what} is not valid (expected redis://[:password@]host[:port][/db])"
        ) from None
    return aioredis, redis


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
        margin: float = DEFAULT_MARGIN,
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
        aioredis, redis = import_redis(url, "limits='redis://...'", "limits URL")
        register_secret(parts.password)
        self._aioredis = aioredis
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self.url = url
        self.shown_url = redact_url(url)
        self.namespace = f"{prefix}:{account_fingerprint(account)}"
        self.timeout = timeout
        self.idle_ms = int(idle_ttl * 1000)
        self.margin = margin
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._slots: list[RedisSlots] = []
        self._windows: list[RedisWindow] = []

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
        return await self._guard(self._script(script)(keys=[key], args=list(args)))

    async def _guard(self, call: Awaitable[Any]) -> Any:
        """Await one Redis call; any failure becomes LimiterUnavailableError."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await call
        except self._errors as exc:
            raise LimiterUnavailableError(
                f"shared limiter at {self.shown_url} unavailable "
                f"({type(exc).__name__}: {exc}); stopped sending rather than risk "
                "exceeding the account's limits without it"
            ) from exc

    async def ping(self) -> None:
        """Check the server answers (LimiterUnavailableError if not) and load the scripts
        (so the first admission is one EVALSHA)."""
        for text in (WINDOW_SCRIPT, SLOTS_SCRIPT):
            await self._guard(self._redis().script_load(text))

    def limiter(
        self, endpoint: str, rate: Rate | float | str, *, margin: float | None = None
    ) -> RedisWindow:
        """A shared window for ``endpoint`` (a :class:`LimiterFactory`)."""
        key = f"{self.namespace}:rate:{endpoint}"
        window = RedisWindow(self, key, Rate.parse(rate), margin=margin or self.margin)
        self._windows.append(window)
        return window

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
        """Wait for the stamps on their way, stop renewing, close the pool — bounded: a
        Redis that stopped answering never holds a close for more than ``4 × timeout``."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                for window in self._windows:
                    await window.aclose()
                for pool in self._slots:
                    await pool.aclose()
        except TimeoutError:
            log.warning("shared limiter at %s: closed with stamps unsent", self.shown_url)
        self._slots.clear()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout * 2):
                    await client.aclose()


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
