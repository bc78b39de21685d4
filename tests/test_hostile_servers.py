"""Issue 14, the SDK side: every client against small hostile servers on 127.0.0.1.

Each server is raw ``asyncio.start_server`` code, so it can send what no framework would:
a malformed header line, a lying ``Content-Length``, an encoding nobody offered, JSON nested
1,000 deep, headers or a body trickled a byte at a time, a 3xx, the request's own
credentials echoed in an error message. For every case and every client family the tests
assert the typed error, whether it was retried (connections counted at the server), and that
no credential appears anywhere in the error: ``str``, ``repr``, the formatted traceback and
every exception in its ``__cause__`` / ``__context__`` chain (with their attributes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chenyu_assets import (
    AmbiguousOutcomeError,
    ArkClient,
    AuthenticationError,
    ChenyuAssetsError,
    ChenyuClient,
    ConfigurationError,
    ConnectionLostError,
    PaginationError,
    PrivateAvatarClient,
    RedirectError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    Timeouts,
)
from chenyu_assets.batch import IngestOptions, SourceItem, ingest

# Canaries, shaped like nothing the redaction patterns know: only "registered and masked"
# or "never put in an error" keeps them out.
AK = "AKCANARYHOSTILEACCESS93F1"
SK = "CanaryHostileSecret+7e2a/9Q=="
TOKEN = "CanaryHostileSTS.4d7c9e1f"
BEARER = "CanaryHostileBearer-5f4e3d2c"
CHENYU_KEY = "CanaryHostileChenyu-0a1b2c3d"
AVATAR_KEY = "CanaryHostileAvatar-9z8y7x6w"
LOCATION_SECRET = "CanaryLocationSig-77aa"
URL_PASSWORD = "CanaryUrlPassword-3e3e"
CANARIES = (AK, SK, TOKEN, BEARER, CHENYU_KEY, AVATAR_KEY, LOCATION_SECRET)

RETRY3 = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, max_elapsed=20.0)
FAMILIES = ("official", "gateway", "chenyu", "avatar")
ASSET_ID = "asset-20260101000000-abcde"


@dataclass
class Hostile:
    """A raw HTTP/1.1 server: ``answer(head, body)`` writes whatever it likes."""

    answer: Callable[[asyncio.StreamWriter, str, bytes], Awaitable[None]]
    connections: int = 0
    heads: list[str] = field(default_factory=list)
    url: str = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # keep-alive: one connection may carry several requests
                raw = await reader.readuntil(b"\r\n\r\n")
                head = raw.decode("latin-1")
                self.heads.append(head)
                length = re.search(r"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                await self.answer(writer, head, body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def secrets(self) -> list[str]:
        """The canaries and every credential header value the server received."""
        found = list(CANARIES)
        for head in self.heads:
            found += re.findall(r"(?im)^(?:authorization|x-security-token):\s*(.+?)\r$", head)
            found += re.findall(r"Signature=([0-9a-f]{16,})", head)
        return found


@contextlib.asynccontextmanager
async def hostile(
    answer: Callable[[asyncio.StreamWriter, str, bytes], Awaitable[None]],
) -> AsyncIterator[Hostile]:
    server = Hostile(answer)
    srv = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        srv.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await srv.wait_closed()


def client(family: str, url: str, **kw: Any) -> Any:
    kw.setdefault("retry", RETRY3)
    if family == "official":
        return ArkClient(access_key=AK, secret_key=SK, session_token=TOKEN, base_url=url, **kw)
    if family == "gateway":
        return ArkClient(api_key=BEARER, base_url=url, **kw)
    if family == "chenyu":
        return ChenyuClient(api_key=CHENYU_KEY, base_url=url, **kw)
    return PrivateAvatarClient(api_key=AVATAR_KEY, base_url=url, **kw)


async def read_call(family: str, c: Any) -> Any:
    if family == "chenyu":
        return await c.get("asset_" + "0" * 32)
    return await c.get_asset(ASSET_ID)


def envelope(family: str, result: Any) -> bytes:
    """A success answer of ``family`` carrying ``result`` (any JSON value)."""
    if family == "chenyu":
        return json.dumps({"code": 0, "msg": "ok", "data": result}).encode()
    if family == "gateway":
        inner = result if isinstance(result, dict) else {"Result": result}
        return json.dumps({**inner, "base_resp": {"status_code": 0}}).encode()
    return json.dumps({"ResponseMetadata": {"RequestId": "r1"}, "Result": result}).encode()


def http(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def assert_clean(exc: BaseException, server: Hostile) -> None:
    """No credential in any way the error shows itself, its whole chain included."""
    texts = ["".join(traceback.format_exception(exc))]
    for e in chain(exc):
        texts += [str(e), repr(e), repr(vars(e))]
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            texts += [str(cause), repr(cause), repr(vars(cause))]
    everything = "\n".join(texts)
    leaked = [s for s in server.secrets() if s and s in everything]
    assert not leaked, (leaked, everything[:2000])
    for e in chain(exc):  # nothing of aiohttp's (its request_info holds the headers)
        assert not type(e).__module__.startswith(("aiohttp", "json", "pydantic")), type(e)


async def failure(family: str, server: Hostile, **kw: Any) -> BaseException:
    async with asyncio.timeout(20):  # hang guard only
        async with client(family, server.url, **kw) as c:
            try:
                await read_call(family, c)
            except Exception as exc:
                return exc
    raise AssertionError("the call succeeded")


def fixed(raw: bytes, *, close: bool = False) -> Callable[..., Awaitable[None]]:
    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        writer.write(raw)
        if close:
            await writer.drain()
            writer.close()

    return answer


# -- typed, never retried where it must not be ----------------------------------------------

DEEP = b'{"a":' * 1000 + b"1" + b"}" * 1000


def _case_body(family: str, case: str) -> bytes:
    if case == "deep":
        return DEEP
    if case == "nested40":  # parses, but deeper than any honest answer
        deep = json.loads(b"[" * 40 + b"]" * 40)
        if family == "chenyu":
            return envelope(family, {"asset_id": "asset_" + "0" * 32, "x": deep})
        return envelope(family, {"Id": ASSET_ID, "x": deep})
    if case == "badutf8":
        return b'{"code": 0, "data": {"asset_id": "\xff\xfe"}, "Result": "\xff"}'
    # wrong types: the id a dict, the status a list
    if family == "chenyu":
        return envelope(family, {"asset_id": {"no": 1}, "size_bytes": "many"})
    return envelope(family, {"Id": {"no": 1}, "Status": [1, 2]})


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", ["deep", "nested40", "badutf8", "types"])
async def test_hostile_json_is_a_response_format_error_never_retried(
    family: str, case: str
) -> None:
    async with hostile(fixed(http("200 OK", _case_body(family, case)))) as server:
        exc = await failure(family, server)
    assert isinstance(exc, ResponseFormatError), repr(exc)
    assert not exc.retryable
    assert server.connections == 1
    assert len(server.heads) == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("encoding", ["foo", "br", "zstd", "gzip"])
async def test_an_encoding_we_did_not_offer_or_cannot_decode_is_refused(
    family: str, encoding: str
) -> None:
    raw = http("200 OK", envelope(family, {"Id": ASSET_ID}), f"Content-Encoding: {encoding}")
    async with hostile(fixed(raw)) as server:
        exc = await failure(family, server)
    assert isinstance(exc, ResponseFormatError), repr(exc)
    assert not exc.retryable
    assert server.connections == 1
    assert len(server.heads) == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary"])
async def test_a_redirect_is_fatal_names_its_status_and_hides_the_location(
    family: str, status: str
) -> None:
    location = f"Location: https://user:pw@elsewhere.example/x?X-Sig={LOCATION_SECRET}&a=1"
    async with hostile(fixed(http(status, b"", location))) as server:
        exc = await failure(family, server)
    assert isinstance(exc, RedirectError), repr(exc)
    code = status.split()[0]
    assert exc.status == int(code)
    assert f"HTTP {code}" in str(exc)
    assert exc.location is not None
    assert "elsewhere.example" in exc.location
    assert "pw" not in exc.location
    assert server.connections == 1
    assert len(server.heads) == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
async def test_a_declared_length_over_the_cap_is_refused_before_reading(family: str) -> None:
    # 10 GB announced, nothing sent: only a refusal before reading ends this at once
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    )
    async with hostile(fixed(raw)) as server:
        exc = await failure(family, server, timeouts=Timeouts(headers=5, total=10, read=10))
    assert isinstance(exc, ResponseFormatError), repr(exc)
    assert not exc.retryable
    assert "10000000000" in str(exc)
    assert server.connections == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
async def test_a_body_over_the_cap_without_a_length_is_cut_off(family: str) -> None:
    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        chunk = b" " * 65536
        for _ in range(6 * 16):  # 6 MiB, closing-delimited: over the 4 MiB cap
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async with hostile(answer) as server:
        exc = await failure(family, server)
    assert isinstance(exc, ResponseFormatError), repr(exc)
    assert not exc.retryable
    assert "cap" in str(exc)
    assert server.connections == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
async def test_a_malformed_header_line_leaves_no_request_headers_in_the_chain(
    family: str,
) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nthis is no header\r\n\r\n{}"
    async with hostile(fixed(raw, close=True)) as server:
        exc = await failure(family, server)
    assert isinstance(exc, ConnectionLostError), repr(exc)
    assert exc.cause_name is not None
    assert exc.host is not None
    assert exc.host.startswith("127.")
    assert exc.__cause__ is None
    assert exc.__context__ is None
    assert 1 <= server.connections <= 3  # retried as a lost connection, within the policy
    assert_clean(exc, server)


def _echo_error(family: str, head: str) -> bytes:
    """The family's 401, whose message repeats the request's credential headers."""
    echoed = " | ".join(re.findall(r"(?im)^((?:authorization|x-security-token):\s*.+?)\r$", head))
    text = f"bad credentials: {echoed} (token={TOKEN}) key {AK}"
    if family == "chenyu":
        body = {"code": 40100, "msg": text}
    elif family == "gateway":
        body = {"base_resp": {"status_code": 401, "status_msg": text}}
    else:
        body = {"ResponseMetadata": {"RequestId": text, "Error": {"Code": text, "Message": text}}}
    return http("401 Unauthorized", json.dumps(body).encode())


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
async def test_credentials_echoed_by_the_server_are_redacted(family: str) -> None:
    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        writer.write(_echo_error(family, head))

    async with hostile(answer) as server:
        exc = await failure(family, server)
    assert isinstance(exc, AuthenticationError), repr(exc)
    assert "bad credentials" in str(exc)
    assert "***" in str(exc)
    assert server.connections == 1
    assert len(server.heads) == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", ["official", "gateway", "avatar"])
async def test_a_create_answered_with_hostile_json_is_ambiguous_never_resent(
    family: str,
) -> None:
    async with (
        hostile(fixed(http("200 OK", DEEP))) as server,
        asyncio.timeout(20),
        client(family, server.url) as c,
    ):
        with pytest.raises(AmbiguousOutcomeError) as info:
            await c.create_asset(group_id="g", url="https://example.com/a.png", name="a")
    assert isinstance(info.value.cause, ResponseFormatError)
    assert server.connections == 1
    assert len(server.heads) == 1
    assert_clean(info.value, server)


@pytest.mark.anyio
async def test_ingest_meeting_hostile_answers_stops_cleanly_with_a_typed_reason(
    tmp_path: Any,
) -> None:
    """Every answer nested 1,000 deep: the run ends with a fatal reason (no RecursionError,
    no traceback), and no credential in the report."""
    items = [
        SourceItem(key=f"k{i}", path=None, url=f"https://example.com/{i}.png") for i in range(3)
    ]
    async with (
        hostile(fixed(http("200 OK", DEEP))) as server,
        asyncio.timeout(60),
        client("official", server.url) as ark,
    ):
        report = await ingest(ark, items, group_id="g", journal=tmp_path / "j.db")
    assert report.fatal is not None
    assert "nests deeper" in report.fatal
    assert not [c for c in server.secrets() if c in repr(report)]


@pytest.mark.anyio
async def test_reconciliation_over_a_repeating_listing_stops_the_run_bounded(
    tmp_path: Any,
) -> None:
    """A create whose answer is hostile (ambiguous) is reconciled by listing; a listing
    whose pages repeat stops the run with a PaginationError reason after 2 pages."""
    same = [{"Id": f"other-{i}", "Name": f"other-{i}"} for i in range(100)]

    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        if "Action=CreateAsset&" in head:
            writer.write(http("200 OK", DEEP))
        else:
            result = {"Items": same, "TotalCount": 10_000}  # < 20,000: offset paging
            writer.write(http("200 OK", envelope("official", result)))

    items = [SourceItem(key="k", path=None, url="https://example.com/a.png")]
    async with (
        hostile(answer) as server,
        asyncio.timeout(60),
        client("official", server.url) as ark,
    ):
        # the server's script answers one create then listings: no adoption walk first
        only = IngestOptions(adopt_existing=False)
        report = await ingest(ark, items, group_id="g", journal=tmp_path / "j.db", options=only)
    assert report.fatal is not None
    assert "repeats page 1" in report.fatal
    assert sum("Action=CreateAsset&" in h for h in server.heads) == 1
    assert sum("Action=ListAssets&" in h for h in server.heads) == 2


@pytest.mark.anyio
async def test_an_echoed_credential_never_reaches_results_report_or_journal(
    tmp_path: Any,
) -> None:
    """CreateAsset refused with a message repeating the request's credential headers (as
    gateways do): the item fails with the message masked, in its result, the report and
    every byte of the journal."""

    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        echoed = " | ".join(re.findall(r"(?im)^((?:authorization|x-security-token):.+?)\r$", head))
        error = {"Code": "InvalidParameter.URL", "Message": f"bad url; you sent {echoed} {SK}"}
        meta = {"RequestId": "r1", "Error": error}
        writer.write(http("400 Bad Request", json.dumps({"ResponseMetadata": meta}).encode()))

    items = [SourceItem(key="k", path=None, url="https://example.com/a.png")]
    results: list[Any] = []
    journal = tmp_path / "j.db"
    async with (
        hostile(answer) as server,
        asyncio.timeout(60),
        client("official", server.url) as ark,
    ):
        only = IngestOptions(adopt_existing=False)  # the script
        report = await ingest(
            ark, items, group_id="g", journal=journal, on_result=results.append, options=only
        )
    assert [r.status for r in results] == ["failed"]
    assert "bad url" in (results[0].message or "")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("j.db"))
    texts = repr(results) + repr(report) + raw.decode("latin-1")
    assert not [c for c in server.secrets() if c in texts]


# -- bounded in time ------------------------------------------------------------------------


def trickle(prefix: bytes, *, step: float = 0.05, limit: int = 400) -> Callable[..., Any]:
    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        writer.write(prefix)
        for _ in range(limit):  # bounded: ~20 s at most, far past every bound under test
            await writer.drain()
            writer.write(b"x")
            await asyncio.sleep(step)

    return answer


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("phase", "prefix"),
    [
        ("headers", b"HTTP/1.1 200 OK\r\nX-Slow: "),
        (
            "total",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n",
        ),
    ],
)
async def test_a_server_trickling_one_byte_at_a_time_ends_with_a_typed_timeout(
    family: str, phase: str, prefix: bytes
) -> None:
    # read=5 s of idle time is never reached: a byte comes every 0.05 s
    timeouts = Timeouts(connect=2, read=5, headers=0.3, total=0.5)
    async with hostile(trickle(prefix)) as server:
        exc = await failure(family, server, timeouts=timeouts, retry=RetryPolicy.none())
    assert isinstance(exc, RequestTimeoutError), repr(exc)
    assert f"Timeouts.{phase}" in str(exc)
    assert server.connections == 1
    assert_clean(exc, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
async def test_every_call_is_bounded_by_the_policy_total_time(family: str) -> None:
    # each attempt within its own bounds (1 s of trickled body), the call within 0.6 s
    timeouts = Timeouts(connect=2, read=5, headers=5, total=30)
    policy = RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0, max_elapsed=0.6)
    prefix = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n"
    async with hostile(trickle(prefix)) as server:
        exc = await failure(family, server, timeouts=timeouts, retry=policy)
    assert isinstance(exc, RequestTimeoutError), repr(exc)
    assert "max_elapsed" in str(exc)
    assert server.connections == 1


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_an_upload_to_a_server_that_stops_reading_ends_at_the_write_bound(
    streamed: bool, tmp_path: Any
) -> None:
    """The server reads the request head, then nothing: once the socket buffers are full
    the body stalls, and Timeouts.write (idle) ends it, however long the upload is."""
    stop = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        server.heads.append((await reader.readuntil(b"\r\n\r\n")).decode("latin-1"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                await stop.wait()
        writer.close()

    server = Hostile(fixed(b""))
    srv = await asyncio.start_server(never_read, "127.0.0.1", 0, limit=2**16)
    server.url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    timeouts = Timeouts(connect=2, read=30, headers=30, total=30, write=0.3)
    try:
        async with asyncio.timeout(20), client("chenyu", server.url, timeouts=timeouts) as c:
            data = b"\x89PNG\r\n\x1a\n" + b"\0" * (64 << 20)
            (tmp_path / "a.png").write_bytes(data)
            call = (  # from disk, chunk by chunk; or from memory, slice by slice
                c.upload(tmp_path / "a.png") if streamed else c.upload_bytes(data, filename="a.png")
            )
            with pytest.raises(RequestTimeoutError, match=r"Timeouts\.write") as info:
                await call
    finally:
        stop.set()
        srv.close()
    assert server.connections == 3  # a lost upload is retried (an orphan temp asset at worst)
    assert_clean(info.value, server)


@pytest.mark.anyio
async def test_an_upload_whose_answer_headers_trickle_ends_at_the_headers_bound() -> None:
    prefix = b"HTTP/1.1 200 OK\r\nX-Slow: "
    timeouts = Timeouts(connect=2, read=5, headers=0.3, total=0.5)
    async with (
        hostile(trickle(prefix)) as server,
        asyncio.timeout(20),
        client("chenyu", server.url, timeouts=timeouts, retry=RetryPolicy.none()) as c,
    ):
        with pytest.raises(RequestTimeoutError, match=r"Timeouts\.headers") as info:
            await c.upload_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 4096, filename="a.png")
    assert server.connections == 1
    assert_clean(info.value, server)


def test_timeouts_refuse_nonsense() -> None:
    for bad in ({"headers": 0}, {"total": -1.0}, {"write": float("inf")}, {"read": True}):
        with pytest.raises(ConfigurationError, match="Timeouts"):
            Timeouts(**bad)


# -- bounded listings -----------------------------------------------------------------------


def page_answer(
    family: str, make: Callable[[int], tuple[list[str], int | None]]
) -> Callable[..., Awaitable[None]]:
    """Answers every listing with ``make(page_number) -> (ids, TotalCount)``."""

    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        number = json.loads(body or b"{}").get("PageNumber", 1)
        ids, total = make(number)
        result: dict[str, Any] = {"Items": [{"Id": i, "Name": i} for i in ids]}
        if total is not None:
            result["TotalCount"] = total
        writer.write(http("200 OK", envelope(family, result)))

    return answer


async def walk(family: str, server: Hostile, **kw: Any) -> BaseException:
    async with asyncio.timeout(20):
        async with client(family, server.url) as c:
            try:
                async for _ in c.list_asset_groups(page_size=10, **kw):
                    pass
            except Exception as exc:
                return exc
    raise AssertionError("the listing ended normally")


ARK_FAMILIES = ("official", "gateway", "avatar")


@pytest.mark.anyio
@pytest.mark.parametrize("family", ARK_FAMILIES)
async def test_a_listing_whose_pages_repeat_stops_typed(family: str) -> None:
    same = [f"g{i}" for i in range(10)]
    async with hostile(page_answer(family, lambda n: (same, 10_000))) as server:
        exc = await walk(family, server)
    assert isinstance(exc, PaginationError), repr(exc)
    assert not exc.retryable
    assert "repeats page 1" in str(exc)
    assert len(server.heads) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("family", ARK_FAMILIES)
async def test_a_listing_whose_total_count_lies_stops_typed(family: str) -> None:
    # page 1 says 15 items (so page 2 is asked for); page 2 then says 10 yet has items
    def make(n: int) -> tuple[list[str], int]:
        return [f"g{n}-{i}" for i in range(10)], 15 if n == 1 else 10

    async with hostile(page_answer(family, make)) as server:
        exc = await walk(family, server)
    assert isinstance(exc, PaginationError), repr(exc)
    assert "TotalCount" in str(exc)
    assert len(server.heads) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("family", ARK_FAMILIES)
async def test_an_endless_listing_stops_at_the_hard_page_cap(family: str) -> None:
    # fresh full pages forever, TotalCount always one page ahead
    def make(n: int) -> tuple[list[str], int]:
        return [f"g{n}-{i}" for i in range(100)], (n + 1) * 100

    async with (
        hostile(page_answer(family, make)) as server,
        asyncio.timeout(60),
        client(family, server.url) as c,
    ):
        with pytest.raises(PaginationError, match="more than 100 pages") as info:
            async for _ in c.list_asset_groups(page_size=100):
                pass
    assert len(server.heads) == 100  # ListAssetGroups: offset paging ends at 10,000 items
    assert_clean(info.value, server)


@pytest.mark.anyio
@pytest.mark.parametrize("family", ARK_FAMILIES)
async def test_a_listing_ends_by_its_deadline(family: str) -> None:
    async def slow(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        await asyncio.sleep(0.05)
        await page_answer(family, lambda n: ([f"g{n}-{i}" for i in range(10)], None))(
            writer, head, body
        )

    async with hostile(slow) as server:
        exc = await walk(family, server, deadline=0.4)
    assert isinstance(exc, RequestTimeoutError), repr(exc)
    assert len(server.heads) < 50  # far below the page cap: the deadline ended it


@pytest.mark.anyio
async def test_the_status_sweep_survives_a_listing_that_repeats() -> None:
    """The watcher's sweep against a server whose every listing repeats one page with a
    lying TotalCount: the listing stops (PaginationError) and the asset is checked on its
    own instead; the wait ends with the asset's real status and few listings."""
    same = [{"Id": f"other-{i}", "Status": "Active"} for i in range(100)]

    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        if "Action=GetAsset&" in head or "Action=GetAsset " in head:
            result: Any = {"Id": ASSET_ID, "Status": "Active"}
        else:
            result = {"Items": same, "TotalCount": 10_000}
        writer.write(http("200 OK", envelope("official", result)))

    async with hostile(answer) as server, client("official", server.url) as ark:
        async with asyncio.timeout(20):  # a hang guard: the sweep's first tick decides
            asset = await ark.wait_for_asset(ASSET_ID, timeout=15)
    assert (asset.id, asset.status) == (ASSET_ID, "Active")
    assert sum("Action=ListAssets" in h for h in server.heads) <= 4


def test_the_cli_group_lookup_stops_on_a_repeating_listing(tmp_path: Any) -> None:
    """``ingest --group NAME`` against a server whose ListAssetGroups pages repeat: the
    process ends (bounded requests), instead of walking forever."""
    same = [f"not-it-{i}" for i in range(100)]
    counts: dict[str, int] = {}

    async def run() -> subprocess.CompletedProcess[str]:
        async with hostile(page_answer("official", lambda n: (same, 100_000))) as server:
            env = {
                **os.environ,
                "VOLC_ACCESSKEY": AK,
                "VOLC_SECRETKEY": SK,
                "ARK_BASE_URL": server.url,
                "CHENYU_API_KEY": CHENYU_KEY,
                "CHENYU_BASE_URL": server.url + "/api/open/v2",
            }
            src = tmp_path / "src"
            src.mkdir()
            (src / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
            args = [sys.executable, "-m", "chenyu_assets.cli", "ingest", str(src)]
            args += ["--group", "wanted", "--journal", str(tmp_path / "j.db")]
            proc = await asyncio.create_subprocess_exec(
                *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            async with asyncio.timeout(60):  # hang guard
                out, err = await proc.communicate()
            counts["requests"] = len(server.heads)
            return subprocess.CompletedProcess(
                args, proc.returncode or 0, out.decode(), err.decode()
            )

    done = asyncio.run(run())
    assert done.returncode != 0, done
    assert counts["requests"] == 2, counts  # page 1, then page 2 repeats it: stop
    assert not [c for c in CANARIES if c in done.stdout + done.stderr]


# -- no secret in configuration mistakes or models ------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_base_url_with_userinfo_is_refused_without_showing_the_password(family: str) -> None:
    url = "https://someone:" + URL_PASSWORD + "@example.com/api"
    with pytest.raises(ConfigurationError) as info:
        client(family, url)
    assert isinstance(info.value, ChenyuAssetsError)
    text = str(info.value) + repr(info.value) + "".join(traceback.format_exception(info.value))
    assert URL_PASSWORD not in text
    assert "credentials" in text
    ok = client(family, "https://example.com/api")
    assert not [c for c in CANARIES if c in repr(ok) + str(ok)]


@pytest.mark.anyio
@pytest.mark.parametrize("family", FAMILIES)
async def test_models_str_and_repr_hide_signed_urls(family: str) -> None:
    signed = f"https://cdn.example/a.png?X-Tos-Signature={LOCATION_SECRET}&Expires=99"
    if family == "chenyu":
        result: dict[str, Any] = {
            "asset_id": "asset_" + "0" * 32,
            "signed_url": signed,
            "url": signed,
        }
    else:
        result = {"Id": ASSET_ID, "URL": signed, "Status": "Active", "Extra": {"u": signed}}
    async with (
        hostile(fixed(http("200 OK", envelope(family, result)))) as server,
        client(family, server.url) as c,
    ):
        model = await read_call(family, c)
    assert LOCATION_SECRET in (model.signed_url if family == "chenyu" else model.url)
    for text in (str(model), repr(model), f"{model}", str([model])):
        assert LOCATION_SECRET not in text, text
