"""HTTP transport: the only module that imports aiohttp's client.

One ``aiohttp.ClientSession`` per client, created in ``open()`` inside the running loop
(constructing a ``Transport`` does no I/O) and closed in ``close()``; a caller's own
session is used as is and never closed. Every attempt is bounded in each of its phases
(:class:`Timeouts`): connecting, sending the body (an *idle* bound, so an upload of any
size is fine while it progresses), waiting for the answer's headers, and reading the whole
answer; a per-call ``deadline`` is available on top. Every aiohttp failure becomes one of
this package's errors, without chaining aiohttp's exception (it holds the request's
headers, credentials included), and every response is read and released before
``request`` returns. Redirects are never followed (:class:`~chenyu_assets.errors.
RedirectError`); an answer over ``max_response_bytes`` or in an encoding we did not offer
is refused (``ResponseFormatError``, not retried).

Proxies: the standard variables are read once, when the session opens
(:mod:`~chenyu_assets._core.proxies`); a caller's own session keeps its own settings.
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
from typing import Any, cast

import aiohttp
from multidict import CIMultiDictProxy

from chenyu_assets._core.logs import get_logger, redact_url
from chenyu_assets._core.proxies import ProxyTable
from chenyu_assets._core.timeouts import Clock, Timeouts
from chenyu_assets._version import __version__
from chenyu_assets.errors import (
    ChenyuAssetsError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    RedirectError,
    RequestTimeoutError,
    ResponseFormatError,
    TLSVerificationError,
    TransportError,
)

__all__ = ["USER_AGENT", "Response", "Timeouts", "Transport"]

USER_AGENT = f"chenyu-assets/{__version__}"
log = get_logger("chenyu_assets.http")

Body = bytes | AsyncIterable[bytes | bytearray] | None


#: The largest API answer read, in bytes. The biggest answers these APIs give are list pages
#: (100 items, about 100 KB) and Chenyu upload answers are well under 1 KB: 4 MiB is 40 times
#: the largest honest answer, and small enough that a hostile one cannot eat memory.
MAX_RESPONSE_BYTES: int = 4 * 1024 * 1024

#: Content-Encodings we offer (aiohttp's ``Accept-Encoding``) and can decode; any other is
#: refused rather than handed on undecoded.
_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
#: A body is written in slices of this size: its idle bound sees progress, and the
#: transport's buffer (aiohttp drains it past 64 KiB) never holds a copy of a whole chunk.
_SLICE = 64 * 1024


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
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self.timeouts = timeouts or Timeouts()
        self._limit = connection_limit
        self._ca_bundle = ca_bundle
        self._max_response_bytes = max_response_bytes
        self._user_agent = user_agent
        self._proxies = ProxyTable()

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "closed"
        return f"<Transport {state} limit={self._limit} timeouts={self.timeouts}>"

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
            trust_env=False,  # the proxy variables are read once, below
            headers={"User-Agent": self._user_agent},
            auto_decompress=True,
        )
        self._owns_session = True
        self._proxies.load()

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
        rest = url.split("?", 1)[0].split("://", 1)[-1]
        host, _, tail = rest.partition("/")
        host = host.rsplit("@", 1)[-1]
        path = "/" + tail
        started = asyncio.get_running_loop().time()
        payload = _payload(data)
        bound = asyncio.timeout(None)  # the Clock moves it (phases and the deadline)
        clock = Clock(bound, self.timeouts, deadline)
        failure: ChenyuAssetsError | None = None
        try:
            async with bound:
                if payload is None:
                    clock.sent()
                else:
                    clock.start_sending()
                    payload.clock = clock
                async with session.request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    data=payload,
                    allow_redirects=False,
                    proxy=self._proxies.for_url(url)
                    if self._proxies and self._owns_session
                    else None,
                ) as resp:
                    clock.answered()
                    if self._check_head(resp, method, host, path):
                        body = await resp.read()  # its declared length, checked: bounded
                    else:
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
            failure = _map_client_error(exc, method, host, path)
        except TimeoutError:
            if clock.expired_by == "phase":
                failure = RequestTimeoutError(
                    clock.describe(), method=method, path=path, host=host, sent=True
                )
            else:
                failure = RequestTimeoutError(
                    f"no answer within the call's remaining {deadline:.3g} s"
                    " (deadline= or RetryPolicy.max_elapsed)",
                    method=method,
                    path=path,
                    host=host,
                )
        except BaseException:  # cancelled, or an error of our own (a file that changed)
            clock.done()
            await _discard(payload)
            raise
        clock.done()
        if failure is not None:  # raised here, outside the handler: nothing chained
            await _discard(payload)
            raise failure
        if log.isEnabledFor(logging.DEBUG):  # redact_url is not free: skip it when unused
            log.debug(
                "%s %s -> %d in %.3fs", method, redact_url(url), response.status, response.elapsed
            )
        return response

    def _check_head(self, resp: aiohttp.ClientResponse, method: str, host: str, path: str) -> bool:
        """Refuse, before reading the body: a redirect, an encoding we did not offer, a
        declared length over the cap. True when the body is bounded by its declared length
        (identity encoding, Content-Length within the cap): it can be read in one go."""
        if 300 <= resp.status < 400:
            location = redact_url(resp.headers.get("Location", ""), every_query_value=True)
            raise RedirectError(
                f"HTTP {resp.status} redirect to {location or 'nowhere'}: redirects are never"
                " followed (check base_url)",
                status=resp.status,
                method=method,
                path=path,
                location=location or None,
            )
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            raise ResponseFormatError(
                f"unsupported Content-Encoding {encoding[:40]!r}",
                status=resp.status,
                method=method,
                path=path,
                retryable=False,
            )
        declared = resp.content_length
        if declared is not None and declared > self._max_response_bytes:
            raise ResponseFormatError(
                f"answer of {declared} bytes (Content-Length) is over the "
                f"{self._max_response_bytes} byte cap",
                status=resp.status,
                method=method,
                path=path,
                retryable=False,
            )
        return declared is not None and encoding in ("", "identity")

    async def _read_body(self, resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise ResponseFormatError(
                    f"answer larger than the {self._max_response_bytes} byte cap",
                    status=resp.status,
                    method=method,
                    path=path,
                    retryable=False,
                )
            chunks.append(chunk)
        return b"".join(chunks)


class _StreamPayload(aiohttp.payload.AsyncIterablePayload):
    """A streamed body that remembers the connection it is written to (see _discard) and
    reports its progress to the attempt's clock.

    Memory: one chunk of the source at a time. Each chunk is written in ``_SLICE`` pieces
    (aiohttp drains the connection once more than 64 KiB is pending), so the transport's
    buffer holds at most about two slices and never a copy of a whole chunk; the chunk is
    let go before the next one is asked for (aiohttp's own loop keeps the previous chunk
    alive while the next one is read: two chunks per upload)."""

    def __init__(self, value: AsyncIterable[bytes | bytearray]) -> None:
        super().__init__(cast(AsyncIterable[bytes], value))  # iterated by our write only
        self.source = value
        self.transport: Any = None
        self.sent = False
        self.clock: Clock | None = None

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        self.transport = getattr(writer, "transport", None)
        source, self._iter = self._iter, None
        if source is None:  # already written once: nothing left to send
            return
        self._consumed = True
        remaining = content_length
        while True:
            try:
                chunk = await anext(source)
            except StopAsyncIteration:
                break
            if remaining is not None:  # bytes past the declared length are not sent
                if len(chunk) > remaining:
                    chunk = chunk[:remaining]
                remaining -= len(chunk)
            await _write_sliced(writer, chunk, self.clock, copy=True)
            chunk = b""  # let it go before the source reads the next one
        self.sent = True
        if self.clock is not None:
            self.clock.sent()


async def _write_sliced(
    writer: Any, data: bytes | bytearray, clock: Clock | None, *, copy: bool = False
) -> None:
    """``data`` written in ``_SLICE`` pieces, each reported to ``clock`` (the idle bound).

    ``copy``: each piece is written as a copy, so nothing the transport keeps pins ``data``
    (from Python 3.12 a transport buffers the objects it is given, not copies: a view of a
    chunk left unsent would keep the whole chunk alive while the next one is read)."""
    if len(data) <= _SLICE:
        if clock is not None:
            clock.progress()
        if data:
            await writer.write(bytes(data) if copy else data)
        return
    view = memoryview(data)
    for offset in range(0, len(view), _SLICE):
        if clock is not None:
            clock.progress()
        piece = view[offset : offset + _SLICE]
        await writer.write(piece.tobytes() if copy else piece)


class _BytesPayload(aiohttp.payload.BytesPayload):
    """A bytes body that remembers the connection it is written to (see _discard),
    written in slices that each report progress to the attempt's clock."""

    def __init__(self, value: bytes) -> None:
        super().__init__(value)
        self.source = None
        self.transport: Any = None
        self.sent = False
        self.clock: Clock | None = None

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        self.transport = getattr(writer, "transport", None)
        value = self._value
        if content_length is not None and content_length < len(value):
            value = value[:content_length]
        await _write_sliced(writer, value, self.clock)
        self.sent = True
        if self.clock is not None:
            self.clock.sent()


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


def _map_client_error(
    exc: aiohttp.ClientError, method: str, host: str, path: str
) -> ChenyuAssetsError:
    """Our error for an aiohttp failure. aiohttp's exception is not chained (its
    ``request_info`` holds the request's headers): the safe facts are attributes, and its
    text is redacted."""
    # An error raised by our own body generator (e.g. UploadError) arrives wrapped.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ChenyuAssetsError) and not isinstance(cause, TransportError):
            return cause
        cause = cause.__cause__ or cause.__context__
    name = type(exc).__name__
    # str() of a ClientResponseError repeats the URL: its message is enough
    detail = exc.message if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
    text = f"{name}: {detail}"
    where: dict[str, Any] = {"method": method, "path": path, "host": host, "cause_name": name}
    inner = f"{detail} {exc.__cause__ or ''}".lower()
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError) and (
        "content-encoding" in inner
    ):
        return ResponseFormatError(
            f"cannot decode the answer: {text}", method=method, path=path, retryable=False
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return TLSVerificationError(text, **where)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RequestTimeoutError(text, sent=False, **where)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return RequestTimeoutError(text, sent=True, **where)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(text, **where)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigurationError(f"invalid URL for {method} {path}")
    return ConnectionLostError(text, **where)
