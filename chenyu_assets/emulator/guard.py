"""What the server refuses before a handler runs: requests over an account's rate (429,
:class:`RateLimiter`), and what keeps one stranger from exhausting the HTTP server.

aiohttp bounds header *size* (line, field and header count) and idle keep-alive time, but
not the time a client may take to send its headers: a peer that trickles one byte every
few seconds holds a connection for as long as it likes, and a thousand such peers take
every file descriptor (slowloris). This module adds, per connection:

* a **header timeout** — from the moment a connection is accepted, and from the first
  byte of each later request on a kept-alive connection, the request's header block must
  be complete within ``header_timeout`` seconds, else the peer gets ``408`` and the
  connection is closed;
* a **per-peer cap** — a remote address (an IPv6 ``/64``) holding ``max_connections_per_peer`` open
  connections (``max_connections_per_loopback`` for this machine's own addresses) gets
  ``503`` on the next one, which is closed before anything is read;
* **quiet, redacted server logs** — a malformed request (bad header line, oversized
  field...) is one warning line naming the error's type and the peer, never a traceback
  and never the offending bytes (they may hold an ``Authorization`` value); the 400 sent
  back does not echo them either. Every other record passes the package's redacting
  filter.

:class:`GuardedSite` is a ``TCPSite`` whose connections use :class:`GuardedHandler`
(aiohttp's ``RequestHandler`` plus the timer and the count). The handler reads three
private attributes of aiohttp's handler (``_current_request``, ``_messages``,
``_request_count``); ``tests/test_emulator_hardening.py`` fails if aiohttp changes them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from chenyu_assets._core.logs import get_logger
from chenyu_assets.limits import Rate

__all__ = [
    "HTTP_LOGGER",
    "GuardedHandler",
    "GuardedSite",
    "PeerCounter",
    "RateLimiter",
    "http_logger",
    "is_loopback",
    "peer_key",
]

#: The logger aiohttp's request handler writes to (instead of ``aiohttp.server``).
HTTP_LOGGER = "chenyu_assets.emulator.http"


def _plain_answer(status: str, text: str) -> bytes:
    body = text.encode() + b"\r\n"
    head = (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_BUSY = _plain_answer("503 Service Unavailable", "too many open connections from your address")
_SLOW = _plain_answer("408 Request Timeout", "the request headers took too long")


class _QuietBadRequests(logging.Filter):
    """A malformed request becomes one WARNING line: no traceback, no request bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed HTTP request from %s: %s (status %s)"
            record.args = (peer, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def http_logger() -> logging.Logger:
    """The quiet, redacting logger for aiohttp's request handler (idempotent)."""
    log = logging.getLogger(HTTP_LOGGER)
    if not any(isinstance(f, _QuietBadRequests) for f in log.filters):
        log.addFilter(_QuietBadRequests())  # before the redacting filter: it drops exc_info
    return get_logger(HTTP_LOGGER)


def is_loopback(address: str) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and their IPv4-mapped forms."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def peer_key(address: str) -> str:
    """Whom a connection is counted against: the IPv4 address (an IPv4-mapped IPv6 address
    counts as its IPv4 one), or the IPv6 ``/64`` (one subscriber's usual allocation)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class PeerCounter:
    """Open connections per remote address, against live caps (remote, loopback)."""

    def __init__(self, remote: Callable[[], int], loopback: Callable[[], int]) -> None:
        self._remote = remote
        self._loopback = loopback
        self._open: dict[str, int] = {}

    def admit(self, peer: str) -> bool:
        """Count one more connection from ``peer``; False (not counted) when at the cap."""
        count = self._open.get(peer, 0)
        limit = self._loopback() if is_loopback(peer) else self._remote()
        if count >= limit:
            return False
        self._open[peer] = count + 1
        return True

    def release(self, peer: str) -> None:
        """One connection of ``peer`` closed."""
        count = self._open.get(peer, 0) - 1
        if count > 0:
            self._open[peer] = count
        else:
            self._open.pop(peer, None)

    def open_connections(self, peer: str) -> int:
        """Connections ``peer`` holds now."""
        return self._open.get(peer, 0)


class GuardedHandler(RequestHandler):
    """aiohttp's request handler with a header timeout and the per-peer count."""

    def __init__(
        self,
        manager: web.Server,
        *,
        peers: PeerCounter,
        header_timeout: Callable[[], float],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._peers = peers
        self._header_timeout = header_timeout
        self._peer: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_payload: StreamReader | None = None

    # -- connection lifetime -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        peer = peer_key(str(peername[0])) if isinstance(peername, tuple) and peername else "?"
        if not self._peers.admit(peer):
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            self.force_close()
            return
        self._peer = peer
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._peer is not None:
            self._peers.release(self._peer)
            self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and data and self._awaiting_headers():
            self._arm()  # the first byte of a new request on a kept-alive connection
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a header block (or a parse error) is complete
            self._disarm()
            if self._messages:
                self._last_payload = self._messages[-1][1]

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):  # aiohttp's text quotes the request's bytes
            message = f"Bad Request: malformed HTTP request ({type(exc).__name__})"
        return super().handle_error(request, status, exc, message)

    # -- the header timer --------------------------------------------------------------------

    def _awaiting_headers(self) -> bool:
        """No request is being read, queued or handled: new bytes start a header block."""
        payload = self._last_payload
        return (
            self._current_request is None
            and not self._messages
            and (payload is None or payload.is_eof())
        )

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._header_timeout(), self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            assert isinstance(transport, asyncio.Transport)
            transport.write(_SLOW)
        self.force_close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedHandler` instances."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        peers: PeerCounter,
        header_timeout: Callable[[], float],
        handler_args: dict[str, Any],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._peers = peers
        self._timeout = header_timeout
        self._handler_args = handler_args

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def protocol() -> GuardedHandler:
            return GuardedHandler(
                server,
                peers=self._peers,
                header_timeout=self._timeout,
                loop=loop,
                **self._handler_args,
            )

        self._server = await loop.create_server(
            protocol, self._host, self._port, ssl=self._ssl_context, reuse_address=True
        )


# -- request rates per account ------------------------------------------------------------


_DEFAULT_BURST = 2


class _Sliding:
    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def try_take(self, now: float, limit: int, window: float) -> bool:
        times = self.times
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    def give_back(self) -> None:
        if self.times:
            self.times.pop()


class _Fixed:
    __slots__ = ("count", "index")

    def __init__(self) -> None:
        self.index = -1
        self.count = 0

    def try_take(self, now: float, limit: int, window: float) -> bool:
        index = math.floor(now / window)
        if index != self.index:
            self.index, self.count = index, 0
        if self.count >= limit:
            return False
        self.count += 1
        return True

    def give_back(self) -> None:
        self.count = max(0, self.count - 1)


class _Bucket:
    __slots__ = ("burst", "last", "tokens")

    def __init__(self, burst: int | None) -> None:
        self.burst = burst
        self.tokens = math.inf  # full, whatever the capacity turns out to be
        self.last = -math.inf

    def try_take(self, now: float, limit: int, window: float) -> bool:
        capacity = float(self.burst or limit)
        elapsed = max(0.0, now - self.last) if self.last > -math.inf else 0.0
        self.tokens = min(capacity, self.tokens + elapsed * limit / window)
        self.last = now
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        self.tokens += 1.0


def parse_model(text: str) -> tuple[str, int | None]:
    """``"bucket:3"`` -> ("bucket", 3); ``"token_bucket"`` -> ("bucket", None: burst = limit)."""
    name, _, burst = text.partition(":")
    if name == "token_bucket":
        return "bucket", None
    if name == "bucket":
        return "bucket", int(burst) if burst else _DEFAULT_BURST
    return name, None


class RateLimiter:
    """Accept-or-refuse decisions per ``(account, action)``.

    ``EmulatorConfig.window`` (alias ``limit_model``) picks how a real service might count:

    * ``sliding`` (default, strict): accepted only if fewer than ``limit`` requests were
      accepted in the trailing window, i.e. no window ``(t - W, t]`` ever holds more;
    * ``fixed``: at most ``limit`` per fixed window ``[k·W, (k+1)·W)`` of the emulator's clock
      (so two windows' worth can pass within ``W`` across a boundary);
    * ``bucket[:B]``: a token bucket of ``B`` tokens (default 2), refilled at ``limit / W``
      per second, starting full; ``token_bucket`` (the old name) is a bucket of ``limit`` tokens.

    A rate is ``EmulatorConfig.rates[action]``: requests per second, or ``"N/s"`` /
    ``"N/min"``; a key ``"ACCOUNT/ACTION"`` gives that account its own rate. ``time_scale``
    multiplies every limit. A refused request never consumes capacity, and nothing is queued:
    the caller answers 429 at once. :meth:`RateLimiter.refund` gives back an acceptance the
    handler later turned into a 429 (the in-flight cap, which the store counts).

    ``rates``, ``scale`` and ``strategy`` (the model) are read on every call so the limiter
    follows the live config. Actions absent from ``rates`` are not limited.
    """

    __slots__ = ("_rates", "_scale", "_states", "_strategy")

    def __init__(
        self,
        *,
        rates: Callable[[], Mapping[str, float | str]],
        scale: Callable[[], float],
        strategy: Callable[[], str],
    ) -> None:
        self._rates = rates
        self._scale = scale
        self._strategy = strategy
        self._states: dict[tuple[str, str, str], _Sliding | _Fixed | _Bucket] = {}

    def rate(self, action: str, account: str | None = None) -> Rate | None:
        """``action``'s rate for ``account`` now (scaled), or None when unlimited."""
        rates = self._rates()
        spec = rates.get(f"{account}/{action}") if account is not None else None
        if spec is None:
            spec = rates.get(action)
        if spec is None:
            return None
        rate = Rate.parse(spec)
        return Rate(max(1, math.floor(rate.limit * self._scale() + 1e-9)), rate.window)

    def capacity(self, action: str, account: str | None = None) -> int | None:
        """Requests per window for ``action`` now, or None when unlimited."""
        rate = self.rate(action, account)
        return None if rate is None else rate.limit

    def try_acquire(self, account: str, action: str, now: float) -> bool:
        """Take one place at emulator time ``now`` (seconds); False means answer 429."""
        rate = self.rate(action, account)
        if rate is None:
            return True
        model = self._strategy()
        key = (model, account, action)
        state = self._states.get(key)
        if state is None:
            name, burst = parse_model(model)
            if name == "sliding":
                state = _Sliding()
            elif name == "fixed":
                state = _Fixed()
            else:
                state = _Bucket(burst)
            self._states[key] = state
        return state.try_take(now, rate.limit, rate.window)

    def refund(self, account: str, action: str, now: float) -> None:
        """Give back the most recent acceptance (the request was refused after all)."""
        state = self._states.get((self._strategy(), account, action))
        if state is not None:
            state.give_back()

    def __repr__(self) -> str:
        return f"RateLimiter(model={self._strategy()!r}, states={len(self._states)})"
