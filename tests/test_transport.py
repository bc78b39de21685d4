"""The transport's proxy handling: the standard variables, read once when the session opens.

A "proxy" here is a tiny server of ours on 127.0.0.1 that records the request line it gets
(a proxied plain-HTTP request arrives in absolute form, ``POST http://host/path``) and answers
as the API would, so no other host is ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from chenyu_assets._core import proxies
from chenyu_assets._core.transport import Timeouts, Transport
from chenyu_assets.errors import RequestTimeoutError
from tests.vclock import run_virtual

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[str, list[str]]]:
    """``(url, request lines seen)``: answers every request with a small JSON body."""
    lines: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n", 1)[0].decode())
        length = 0
        for line in head.decode().split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        body = json.dumps({"ok": True}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", lines
    finally:
        server.close()
        await server.wait_closed()


def _clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def test_http_proxy_is_used_and_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxy_env(monkeypatch)
    async with recording_server() as (proxy, seen), recording_server() as (api, direct):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        async with Transport() as transport:
            monkeypatch.delenv("HTTP_PROXY")  # read at open: a later change is not seen
            response = await transport.request("POST", f"{api}/v1/x?a=1", data=b"{}")
            assert response.status == 200
        assert seen == [f"POST {api}/v1/x?a=1 HTTP/1.1"]  # absolute form: it was proxied
        assert direct == []


async def test_no_proxy_sends_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxy_env(monkeypatch)
    async with recording_server() as (proxy, seen), recording_server() as (api, direct):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        async with Transport() as transport:
            assert (await transport.request("GET", f"{api}/v1/y")).status == 200
        assert seen == []
        assert direct == ["GET /v1/y HTTP/1.1"]


async def test_without_proxy_variables_requests_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxy_env(monkeypatch)
    async with recording_server() as (api, direct), Transport() as transport:
        assert (await transport.request("GET", f"{api}/z")).status == 200
    assert direct == ["GET /z HTTP/1.1"]


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypassed"),
    [
        ("api.example.com", "*", True),
        ("api.example.com", "example.com", True),
        ("api.example.com", ".example.com", True),
        ("example.com", ".example.com", True),
        ("badexample.com", "example.com", False),
        ("127.0.0.1", "localhost, 127.0.0.1:8080", True),
        ("10.0.0.1", "", False),
        ("::1", "[::1]", True),
    ],
)
def test_no_proxy_matching(host: str, no_proxy: str, bypassed: bool) -> None:
    assert proxies.no_proxy(host, no_proxy) is bypassed


# -- the attempt's bounds, on virtual time (exact whatever the machine's load) -------------

CHUNKS = 40
PIECE = 16 * 1024


async def _paced_body(
    gap: float, stall_at: int | None = None, stall: float = 0.0
) -> AsyncIterator[bytes]:
    """A body produced slowly: a piece every ``gap`` s, once ``stall`` s before piece
    ``stall_at`` (a generated file, a slow disk)."""
    for n in range(CHUNKS):
        await asyncio.sleep(stall if n == stall_at else gap)
        yield b"x" * PIECE


def _send_paced(
    monkeypatch: pytest.MonkeyPatch,
    timeouts: Timeouts,
    *,
    deadline: float | None = None,
    stall_at: int | None = None,
    stall: float = 0.0,
) -> tuple[int | BaseException, float]:
    """Upload the paced body; (status or the error raised, virtual seconds it took)."""
    _clear_proxy_env(monkeypatch)

    async def main() -> tuple[int | BaseException, float]:
        async with recording_server() as (api, _), Transport(timeouts=timeouts) as transport:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                response = await transport.request(
                    "POST",
                    f"{api}/upload",
                    headers={"Content-Length": str(CHUNKS * PIECE)},
                    data=_paced_body(0.2, stall_at, stall),
                    deadline=deadline,
                )
            except RequestTimeoutError as exc:
                return exc, loop.time() - started
            return response.status, loop.time() - started

    return run_virtual(main)[0]


def test_a_body_that_keeps_progressing_outlasts_every_phase_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 8 s of body, a piece every 0.2 s: far past connect + write (2 s, when the attempt's
    # one timer first fires) and total, never idle for Timeouts.write
    timeouts = Timeouts(connect=1, write=1, headers=1, total=1, read=1)
    outcome, took = _send_paced(monkeypatch, timeouts)
    assert outcome == 200
    assert took == pytest.approx(CHUNKS * 0.2, abs=0.05)


def test_a_body_that_stalls_ends_at_the_write_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts = Timeouts(connect=1, write=1, headers=1, total=1, read=1)
    outcome, took = _send_paced(monkeypatch, timeouts, stall_at=20, stall=5.0)
    assert isinstance(outcome, RequestTimeoutError)
    assert "Timeouts.write" in str(outcome)
    assert took == pytest.approx(20 * 0.2 + 1.0, abs=0.05)  # the last piece + the bound


def test_the_calls_deadline_ends_a_progressing_body(monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts = Timeouts(connect=1, write=1, headers=1, total=1, read=1)
    outcome, took = _send_paced(monkeypatch, timeouts, deadline=3.0)
    assert isinstance(outcome, RequestTimeoutError)
    assert "remaining 3 s" in str(outcome)
    assert "Timeouts." not in str(outcome)
    assert took == pytest.approx(3.0, abs=0.05)
