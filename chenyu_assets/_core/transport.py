"""HTTP transport: the only module that imports aiohttp's client.

One ``aiohttp.ClientSession`` per client, created in ``open()`` inside the running loop
(constructing a ``Transport`` does no I/O) and closed in ``close()``; a caller's own
session is used as is and never closed. Timeouts are socket-level (connect, and read
*idle* time), never a total that would kill a large upload; a per-call ``deadline`` is
available on top. Every aiohttp failure becomes one of this package's
:class:`~chenyu_assets.errors.TransportError` classes, and every response is read and
released before ``request`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from chenyu_assets._core.logs import get_logger, redact_url
from chenyu_assets._version import __version__
from chenyu_assets.errors import (
    ChenyuAssetsError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    RequestTimeoutError,
    ResponseFormatError,
    TLSVerificationError,
    TransportError,
)

__all__ = ["USER_AGENT", "Response", "Timeouts", "Transport"]

USER_AGENT = f"chenyu-assets/{__version__}"
log = get_logger("chenyu_assets.http")

Body = bytes | AsyncIterable[bytes] | None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Socket-level timeouts in seconds. ``read`` is the longest silence between bytes."""

    connect: float = 10.0
    read: float = 60.0


@dataclass(slots=True)
class Response:
    """A fully read HTTP response."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    method: str
    path: str
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


class Transport:
    """A thin, safe wrapper over one ``aiohttp.ClientSession``.

    ``connection_limit`` caps open connections (``TCPConnector(limit=...)``); ``ca_bundle``
    (a PEM file) adds trusted CAs to the system's (TLS verification is always on, and
    there is no switch to turn it off); ``max_response_bytes`` bounds what is read of an
    API answer.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        connection_limit: int = 100,
        ca_bundle: str | None = None,
        max_response_bytes: int = 32 * 1024 * 1024,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self.timeouts = timeouts or Timeouts()
        self._limit = connection_limit
        self._ca_bundle = ca_bundle
        self._max_response_bytes = max_response_bytes
        self._user_agent = user_agent

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "closed"
        return f"<Transport {state} limit={self._limit} timeouts={self.timeouts}>"

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def open(self) -> None:
        if self._session is not None:
            return
        ssl_context = ssl.create_default_context()  # the system's CAs (and SSL_CERT_FILE)
        if self._ca_bundle:
            try:
                ssl_context.load_verify_locations(cafile=self._ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"ca_bundle: cannot load CA certificates from {self._ca_bundle}: {exc}"
                ) from None
        connector = aiohttp.TCPConnector(limit=self._limit, ssl=ssl_context)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.read
            ),
            trust_env=True,
            headers={"User-Agent": self._user_agent},
            auto_decompress=True,
        )
        self._owns_session = True

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Body = None,
        deadline: float | None = None,
    ) -> Response:
        """Send one request and read the whole answer (bounded). No retries here."""
        session = self._session
        if session is None or session.closed:
            raise ConfigurationError(
                "the client is not open: use it as `async with Client(...) as client:`"
            )
        path = url.split("?", 1)[0].split("://", 1)[-1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        started = asyncio.get_running_loop().time()
        payload = _payload(data)
        try:
            async with asyncio.timeout(deadline):
                async with session.request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    data=payload,
                    allow_redirects=False,
                ) as resp:
                    body = await self._read_body(resp, method, path)
                    response = Response(
                        status=resp.status,
                        headers=resp.headers,
                        body=body,
                        method=method,
                        path=path,
                        elapsed=asyncio.get_running_loop().time() - started,
                    )
        except aiohttp.ClientError as exc:  # before TimeoutError: socket timeouts are both
            await _discard(payload)
            raise _map_client_error(exc, method, path) from exc
        except TimeoutError as exc:
            await _discard(payload)
            raise RequestTimeoutError(
                f"no answer within the {deadline:g} s deadline", method=method, path=path
            ) from exc
        except BaseException:  # cancelled, or an error of our own (a file that changed)
            await _discard(payload)
            raise
        if log.isEnabledFor(logging.DEBUG):  # redact_url is not free: skip it when unused
            log.debug(
                "%s %s -> %d in %.3fs", method, redact_url(url), response.status, response.elapsed
            )
        return response

    async def _read_body(self, resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise ResponseFormatError(
                    f"answer larger than {self._max_response_bytes} bytes",
                    status=resp.status,
                    method=method,
                    path=path,
                )
            chunks.append(chunk)
        return b"".join(chunks)


class _StreamPayload(aiohttp.payload.AsyncIterablePayload):
    """A streamed body that remembers the connection it is written to (see _discard)."""

    def __init__(self, value: AsyncIterable[bytes]) -> None:
        super().__init__(value)
        self.source = value
        self.transport: Any = None
        self.sent = False

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        self.transport = getattr(writer, "transport", None)
        await super().write_with_length(writer, content_length)
        self.sent = True


class _BytesPayload(aiohttp.payload.BytesPayload):
    """A bytes body that remembers the connection it is written to (see _discard)."""

    def __init__(self, value: bytes) -> None:
        super().__init__(value)
        self.source = None
        self.transport: Any = None
        self.sent = False

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        self.transport = getattr(writer, "transport", None)
        await super().write_with_length(writer, content_length)
        self.sent = True


def _payload(data: Body) -> _StreamPayload | _BytesPayload | None:
    if data is None:
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        return _BytesPayload(bytes(data))
    return _StreamPayload(data)


async def _discard(payload: _StreamPayload | _BytesPayload | None) -> None:
    """After a failed request: abort its connection if part of the body is still unsent,
    and close a streamed body's source (the file it reads).

    aiohttp closes such a connection gracefully, and asyncio closes a socket only once its
    send buffer has drained: a peer that stopped reading (a stalled server, a 1 byte/s
    reader) would keep the socket, the half-read file and the buffer alive for as long
    as it stalls, even after the session is closed. The abort is a reset (SO_LINGER 0), so
    the kernel does not go on delivering a request that nobody will finish either."""
    if payload is None:
        return
    transport = payload.transport
    if transport is not None and (
        not payload.sent or getattr(transport, "get_write_buffer_size", lambda: 0)() > 0
    ):
        sock = transport.get_extra_info("socket")
        if sock is not None:  # RST now: the kernel must not go on sending a dead request
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    aclose = getattr(payload.source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):  # e.g. still running in aiohttp's writer task
            await asyncio.shield(aclose())


def _map_client_error(exc: aiohttp.ClientError, method: str, path: str) -> ChenyuAssetsError:
    # An error raised by our own body generator (e.g. UploadError) arrives wrapped.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ChenyuAssetsError) and not isinstance(cause, TransportError):
            return cause
        cause = cause.__cause__ or cause.__context__
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return TLSVerificationError(text, method=method, path=path)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RequestTimeoutError(text, method=method, path=path, sent=False)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return RequestTimeoutError(text, method=method, path=path, sent=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(text, method=method, path=path)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigurationError(f"invalid URL for {method} {path}")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return ConnectionLostError(text, method=method, path=path)
    return ConnectionLostError(text, method=method, path=path)


def merge_headers(*parts: Mapping[str, str] | None) -> CIMultiDict[str]:
    """Case-insensitive merge, later parts win."""
    merged: CIMultiDict[str] = CIMultiDict()
    for part in parts:
        if part:
            for k, v in part.items():
                merged[k] = v
    return merged
