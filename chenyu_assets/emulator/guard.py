"""What keeps one stranger from exhausting the emulator's HTTP server.

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
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from chenyu_assets._core.logs import get_logger

__all__ = [
    "HTTP_LOGGER",
    "GuardedHandler",
    "GuardedSite",
    "PeerCounter",
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
