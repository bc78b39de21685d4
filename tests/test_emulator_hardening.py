"""The emulator as a server others can reach: every bound of issue 14, point 6.

Each test runs a real emulator on 127.0.0.1 and talks to it with aiohttp clients or raw
sockets. Timing bounds are the emulator's own configured timers (``header_timeout=0.3``);
the tests only wait for the effect (a 408, a closed socket) under a generous hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from emulator_kit import ark, ark_get, bearer, config, error_code, new_asset, new_group, wait_status
from pydantic import ValidationError
from serve_kit import serve

from chenyu_assets.emulator import Account, Emulator, EmulatorConfig
from chenyu_assets.emulator.actions import GATEWAY_ACTIONS
from chenyu_assets.emulator.content import SampleMedia, SampleSpec
from chenyu_assets.emulator.wire import MAX_DEPTH

pytestmark = pytest.mark.anyio

GUARD = 30.0  # hang guard only: every verdict comes from the emulator's own timers
#: A credential no built-in pattern recognises: only the emulator's registration masks it.
CANARY_KEY = "canary-KEY-4f1d9a7e2b6c3058"
CANARY_SECRET = "canary-SECRET-9b8a7c6d5e4f3021"
CANARY = Account(
    name="canary",
    access_key="AKLTCANARYACCESSKEY000000000000000",
    secret_key=CANARY_SECRET,
    api_key=CANARY_KEY,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def canary_config(**overrides: Any) -> EmulatorConfig:
    return config(accounts=[Account(), CANARY], **overrides)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the emulator closes the connection."""
    with anyio.fail_after(GUARD):
        return await reader.read()


async def raw_exchange(emu: Emulator, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection, then read until the emulator closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_all(reader)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- generated media -------------------------------------------------------------------------


async def test_image_over_the_pixel_cap_is_400_and_video_is_not(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(config()) as emu:
        assert emu.config.max_sample_pixels == 4096 * 4096
        async with session.get(f"{emu.url}/_emulator/media/png/8192x8192.png") as resp:
            assert resp.status == 400
            text = await resp.text()
        assert "at most 16777216 pixels" in text
        assert "8192x8192" in text
        emu.config.max_sample_pixels = 100 * 100
        async with session.get(f"{emu.url}/_emulator/media/bmp/100x100.bmp") as resp:
            assert resp.status == 200
        async with session.get(f"{emu.url}/_emulator/media/bmp/101x100.bmp") as resp:
            assert resp.status == 400
        # a video sample only states its size: no pixels are drawn, so no pixel cap
        async with session.get(emu.media_url("mp4", 8000, 4000, duration=1)) as resp:
            assert resp.status == 200
        with pytest.raises(ValueError, match="at most 10000 pixels"):
            emu.media_url("png", 200, 200)


async def test_create_asset_from_an_over_cap_sample_fails_without_rendering(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(config(max_sample_pixels=400 * 400)) as emu:
        group = await new_group(session, emu)
        url = f"{emu.url}/_emulator/media/png/800x800.png"
        asset = await wait_status(session, emu, await new_asset(session, emu, group, url))
        assert asset["Status"] == "Failed"
        assert emu._running().samples.cached(SampleSpec("png", 800, 800)) is None


async def test_a_client_that_does_not_read_holds_one_chunk_of_buffer() -> None:
    async with Emulator(config()) as emu:
        spec = SampleSpec("bmp", 2000, 2000)  # a 12 MB file
        size = len(emu._running().samples.get(spec)[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        writer.write(f"GET {spec.path()} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        server = emu._runner.server  # type: ignore[union-attr]
        buffered = []
        with anyio.fail_after(GUARD):
            while len(buffered) < 20:  # the answer has started and we read nothing
                sizes = [h.transport.get_write_buffer_size() for h in server.connections]
                if any(sizes):
                    buffered.append(max(sizes))
                await asyncio.sleep(0.01)
        assert max(buffered) <= 512 * 1024  # a chunk (+ the high-water mark), not 12 MB
        with anyio.fail_after(GUARD):
            await reader.readuntil(b"\r\n\r\n")
            assert len(await reader.readexactly(size)) == size
        writer.close()


def test_sample_cache_is_bounded_in_bytes() -> None:
    specs = [SampleSpec("bmp", 100, 100 + i) for i in range(6)]  # ~30 KB each
    sizes = [len(SampleMedia(cache_bytes=lambda: 0).get(s)[0]) for s in specs]
    budget = sum(sizes[3:])  # room for the newest three
    samples = SampleMedia(cache_bytes=lambda: budget)
    for spec in specs:
        samples.get(spec)
        assert samples.cached_bytes <= budget
    assert [samples.cached(s) is not None for s in specs] == [False] * 3 + [True] * 3
    assert samples.cached_bytes == budget
    big = SampleSpec("bmp", 200, 200)  # 120 KB: over the whole budget, served but not kept
    assert len(samples.get(big)[0]) > budget
    assert samples.cached(big) is None
    assert samples.cached_bytes == budget


# -- connections -----------------------------------------------------------------------------


async def test_trickled_headers_get_408_and_the_connection_is_closed() -> None:
    async with Emulator(config(header_timeout=0.3)) as emu:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        request = b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        answer, closed, reset = b"", False, False
        try:
            with anyio.fail_after(GUARD):
                for i in range(600):  # one byte every 50 ms: the headers never complete
                    writer.write(request[i : i + 1] if i < len(request) else b"a")
                    await writer.drain()
                    chunk = None
                    with anyio.move_on_after(0.05):
                        chunk = await reader.read(4096)
                    if chunk == b"":
                        closed = True
                        break
                    answer += chunk or b""
        except ConnectionError:  # our next byte met the closed socket: RST
            closed = reset = True
        finally:
            writer.close()
        assert closed  # the emulator ended it (600 bytes later it would still be open)
        # the 408 is read unless the RST of a byte sent after the close overtook it
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout") or (reset and not answer)


async def test_a_silent_connection_gets_408() -> None:
    async with Emulator(config(header_timeout=0.3)) as emu:
        answer = await raw_exchange(emu, b"")
        assert answer.startswith(b"HTTP/1.1 408 ")


async def test_header_timeout_spares_slow_handlers_bodies_and_keepalive(
    session: aiohttp.ClientSession,
) -> None:
    from chenyu_assets.emulator import FaultRule

    async with Emulator(config(header_timeout=0.3)) as emu:
        loop = asyncio.get_running_loop()
        # 1. a handler slower than the header timeout: its headers were complete
        emu.set_faults([FaultRule(action="ListAssets", kind="latency", delay=0.5)])
        assert (await ark(session, emu, "ListAssets", {}))[0] == 200
        emu.clear_faults()
        # 2. a request body trickled for longer than the header timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        body = json.dumps({"seconds": 1}).encode() + b" " * 200
        writer.write(
            b"POST /_emulator/advance HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        start, sent = loop.time(), 0
        with anyio.fail_after(GUARD):
            while sent < len(body):
                step = 1 if loop.time() - start < 0.6 else len(body)  # > 2 header timeouts
                writer.write(body[sent : sent + step])
                sent += step
                await writer.drain()
                await asyncio.sleep(0.02)
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        # 3. the same kept-alive connection serves its next request
        writer.write(b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with anyio.fail_after(GUARD):
            await reader.readuntil(b'"ok": true')  # (the earlier answer's body comes first)
        # 4. ... and a partial next request on it is bounded too
        writer.write(b"GET /_emulator/health HTTP/1.1\r\n")
        rest = await read_all(reader)
        writer.close()
        assert b"HTTP/1.1 408 " in rest


async def test_a_stalled_body_gets_408() -> None:
    async with Emulator(config(body_idle_timeout=0.3)) as emu:
        key = emu.account.api_key.encode()
        json_head = (
            b"POST /byteplus/_unstable/open/ListAssets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + key + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"  # then nothing
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        writer.write(json_head)
        with anyio.fail_after(GUARD):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readuntil(b"}}")
        writer.close()
        assert status_of(head) == 408
        assert json.loads(body)["base_resp"]["status_code"] == 408
        upload = (
            b"POST /api/open/v2/assets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + key + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=B0UNDARY\r\n"
            b"Content-Length: 5000000\r\n\r\n"
            b'--B0UNDARY\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"\r\n" + b"\x89PNG" * 100  # ... and the rest never comes
        )
        answer = await raw_exchange(emu, upload)  # answered, then closed
        assert status_of(answer) == 408
        assert [r.reason for r in emu.audit().rejected_uploads] == ["body_timeout"]


async def test_per_peer_cap_refuses_the_extra_connections_but_not_other_peers() -> None:
    cfg = config(max_connections_per_loopback=20, header_timeout=GUARD)
    async with Emulator(cfg) as emu:
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(200):  # a slow-loris from 127.0.0.1: 200 connections
                held.append(await asyncio.open_connection("127.0.0.1", emu.port))
            for _reader, writer in held[:20]:  # (accepted in order: these are admitted)
                writer.write(b"GET / HTTP/1.1\r\n")  # ... and trickle their headers
            refused = 0
            for reader, _writer in held[20:]:
                answer = await read_all(reader)
                assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
                refused += 1
            assert refused == 180
            # another address (127.0.0.2 is this machine too) is served at once
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
            async with (
                aiohttp.ClientSession(connector=connector) as other,
                other.get(f"{emu.url}/_emulator/health") as resp,
            ):
                assert resp.status == 200
            # the first 20 are still open (waiting for their headers), not refused
            for reader, _writer in held[:20]:
                assert not reader.at_eof()
            # one of them closes: 127.0.0.1 may connect again
            held[0][1].close()
            await held[0][1].wait_closed()
            with anyio.fail_after(GUARD):
                while True:
                    answer = await raw_exchange(
                        emu,
                        b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Connection: close\r\n\r\n",
                    )
                    if status_of(answer) == 200:
                        break
                    await asyncio.sleep(0.01)  # the emulator has not seen the close yet
        finally:
            for _reader, writer in held:
                writer.close()


def test_peers_are_counted_by_ipv4_address_or_ipv6_slash_64() -> None:
    from chenyu_assets.emulator.guard import PeerCounter, is_loopback, peer_key

    assert peer_key("203.0.113.7") == "203.0.113.7"
    assert peer_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert (
        peer_key("2001:db8:1:2:aaaa::1")
        == peer_key("2001:db8:1:2:ffff::9")
        == ("2001:db8:1:2::/64")
    )
    assert peer_key("::1") == "::1"
    assert [is_loopback(a) for a in ("127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.1")] == [
        True,
        True,
        True,
        False,
    ]
    peers = PeerCounter(lambda: 2, lambda: 3)
    assert [peers.admit("203.0.113.7") for _ in range(3)] == [True, True, False]
    assert [peers.admit("127.0.0.1") for _ in range(4)] == [True, True, True, False]
    peers.release("203.0.113.7")
    assert peers.open_connections("203.0.113.7") == 1
    assert peers.admit("203.0.113.7")


# -- multipart uploads -----------------------------------------------------------------------


def _part(name: str, value: bytes, boundary: bytes = b"B0UNDARY") -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
    )


async def _upload_refused_at_once(emu: Emulator, parts: bytes) -> tuple[int, dict[str, Any]]:
    """Send the headers (announcing 50 MB), ``parts`` and 8 KiB more (the reader looks a
    chunk ahead for the next boundary), then wait: the answer must come without the
    rest of the body."""
    parts += _part("padding", b"p" * 8192)
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        writer.write(
            b"POST /api/open/v2/assets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + emu.account.api_key.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=B0UNDARY\r\n"
            b"Content-Length: 50000000\r\n\r\n" + parts
        )
        await writer.drain()
        with anyio.fail_after(GUARD):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        assert await read_all(reader) == b""  # ... and the connection is closed
        return status_of(head), json.loads(body)
    finally:
        writer.close()


async def test_too_many_multipart_parts_is_400_at_once() -> None:
    async with Emulator(config()) as emu:
        parts = b"".join(_part(f"f{i}", b"x") for i in range(17))  # the cap is 16
        status, body = await _upload_refused_at_once(emu, parts)
        assert status == 400
        assert body == {"code": 400, "msg": "the form has more than 16 parts", "data": None}
        assert emu.audit().uploads == []
        assert [r.reason for r in emu.audit().rejected_uploads] == ["too_many_parts"]


async def test_non_file_bytes_over_the_cap_is_413_at_once() -> None:
    async with Emulator(config(max_form_field_bytes=4096)) as emu:
        parts = b"".join(_part(f"f{i}", b"x" * 1000) for i in range(5))
        status, body = await _upload_refused_at_once(emu, parts)
        assert status == 413
        assert body["msg"] == "the non-file form fields are larger than 4096 bytes together"
        assert [r.reason for r in emu.audit().rejected_uploads] == ["fields_too_large"]


async def test_an_ordinary_upload_still_works(session: aiohttp.ClientSession) -> None:
    async with Emulator(config()) as emu:
        async with session.get(emu.media_url("png", 400, 400)) as resp:
            png = await resp.read()
        form = aiohttp.FormData()
        form.add_field("file", png, filename="a.png", content_type="image/png")
        for name, value in (("media_type", "image"), ("purpose", "temp_input")):
            form.add_field(name, value)
        form.add_field("ttl_hours", "2")
        url = f"{emu.chenyu_url}/assets"
        async with session.post(url, data=form, headers=bearer(emu.account)) as resp:
            assert resp.status == 200, await resp.text()


# -- control endpoints -----------------------------------------------------------------------


async def test_control_posts_need_json_and_refuse_origin_and_foreign_host(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(config()) as emu:
        base, port = emu.url, emu.port
        rules = json.dumps([{"kind": "http_error", "status": 503}])
        # the cross-site form a browser may send without a preflight
        async with session.post(
            f"{base}/_emulator/faults", data=rules, headers={"Content-Type": "text/plain"}
        ) as resp:
            assert resp.status == 415
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Host": f"evil.example:{port}"},  # DNS rebinding: the name is the attacker's
            {"Host": f"192.0.2.1:{port}"},
        ):
            for method, path in (("POST", "faults"), ("POST", "config"), ("GET", "audit")):
                async with session.request(
                    method, f"{base}/_emulator/{path}", data=rules, headers=headers
                ) as resp:
                    assert resp.status == 403, (headers, path)
            async with session.post(
                f"{base}/_emulator/advance", json={"seconds": 9}, headers=headers
            ) as resp:
                assert resp.status == 403
        assert emu._running().faults.rules == []
        assert emu._running().clock.elapsed() < 9
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            async with session.post(
                f"{base}/_emulator/config", json={"list_lag": 0.0}, headers={"Host": host}
            ) as resp:
                assert resp.status == 200, host


# -- malformed JSON and what the log holds ----------------------------------------------------

NESTED = b"[" * 100_000 + b"]" * 100_000


async def test_deep_json_is_400_with_each_envelope_and_no_log(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chenyu_assets")
    async with Emulator(canary_config()) as emu:
        auth = bearer(CANARY)
        ok_depth = b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH
        too_deep = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
        url = f"{emu.gateway_url}/ListAssets"
        for body in (NESTED, too_deep, b"{bad", b"\xff"):
            async with session.post(url, data=body, headers=auth) as resp:
                assert resp.status == 400
                assert (await resp.json())["base_resp"]["status_code"] == 400
        async with session.post(url, data=ok_depth, headers=auth) as resp:
            assert resp.status == 200
        avatar = f"{emu.avatar_url}/v1/private-avatar/assets/list"
        async with session.post(avatar, data=NESTED, headers=auth) as resp:
            assert resp.status == 400
            error = (await resp.json())["ResponseMetadata"]["Error"]
        assert error["Code"] == "InvalidParameter"
        assert error_code(await ark(session, emu, "ListAssets", raw_body=NESTED)) == (
            400,
            "InvalidParameter",
        )
        for path in ("config", "faults", "advance"):
            async with session.post(
                f"{emu.url}/_emulator/{path}",
                data=NESTED,
                headers={"Content-Type": "application/json", **auth},
            ) as resp:
                assert resp.status == 400
                assert "nests deeper" in (await resp.json())["error"]
        # a flattened GET query nested past the cap, and odd "digits", are 400 too
        deep_key = ".".join(["Filter"] * (MAX_DEPTH + 1))
        query = {"Action": "ListAssets", "Version": "2024-01-01", deep_key: "x"}
        assert error_code(await ark_get(session, emu, query)) == (400, "InvalidParameter")
        odd = {"Action": "ListAssets", "Version": "2024-01-01", "Filter.GroupIds.\u00b2": "g"}
        assert error_code(await ark_get(session, emu, odd)) == (
            400,
            "InvalidParameter.Filter.GroupIds",
        )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert CANARY_KEY not in caplog.text


async def test_a_handler_error_is_logged_redacted(
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(call: Any, params: Any) -> dict[str, Any]:
        auth = call.request.headers["Authorization"]
        raise RuntimeError(f"bug while handling {auth!r} for {auth.split()[-1]}")

    monkeypatch.setitem(GATEWAY_ACTIONS, "ListAssets", explode)
    caplog.set_level(logging.DEBUG)
    async with Emulator(canary_config()) as emu:
        url = f"{emu.gateway_url}/ListAssets"
        async with session.post(url, json={}, headers=bearer(CANARY)) as resp:
            assert resp.status == 500
            text = await resp.text()
        # the key alone (no "Bearer" before it) too: the emulator registers its secrets
        async with session.post(
            url, json={}, headers={"Authorization": f"Token {CANARY_KEY}"}
        ) as resp:
            assert resp.status == 401
    assert CANARY_KEY not in text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert "ListAssets failed unexpectedly" in errors[0].getMessage()
    assert "RuntimeError: bug while handling" in caplog.text  # the traceback is kept ...
    assert CANARY_KEY not in caplog.text  # ... without the key
    assert CANARY_SECRET not in caplog.text


async def test_malformed_http_is_one_warning_without_the_header_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Emulator(canary_config()) as emu:
        answers = [
            await raw_exchange(
                emu,
                b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Token " + CANARY_KEY.encode() + tail + b"\r\n\r\n",
            )
            for tail in (b"\x01", b"A" * 9000)  # a control character; a line over 8190
        ]
    for answer in answers:
        assert status_of(answer) == 400
        assert CANARY_KEY.encode() not in answer
    warnings = [r for r in caplog.records if r.name == "chenyu_assets.emulator.http"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in warnings)
    assert "refused a malformed HTTP request from 127.0.0.1" in warnings[0].getMessage()
    assert "Traceback" not in caplog.text
    assert CANARY_KEY not in caplog.text


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_sample_pixels", 0),
        ("max_sample_pixels", 8192 * 8192 + 1),
        ("sample_cache_bytes", -1),
        ("header_timeout", 0),
        ("header_timeout", 7200),
        ("keepalive_timeout", 0),
        ("body_idle_timeout", 0),
        ("max_connections_per_peer", 0),
        ("max_connections_per_loopback", 0),
        ("max_multipart_parts", 0),
        ("max_form_field_bytes", 10),
    ],
)
def test_hardening_settings_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        EmulatorConfig(**{field: value})


# -- `chenyu-assets serve` ---------------------------------------------------------------------


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_serve_applies_the_bounds_from_its_config_file(tmp_path: Path) -> None:
    settings = {"header_timeout": 0.3, "max_connections_per_loopback": 2}
    (tmp_path / "emu.json").write_text(json.dumps(settings))
    with serve("--config", str(tmp_path / "emu.json")) as served:
        port = int(served.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as silent:
            assert _recv_all(silent).startswith(b"HTTP/1.1 408 ")
        with contextlib.ExitStack() as stack:
            kept = []
            for _ in range(2):  # two kept-alive connections, idle after one answer each
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), GUARD))
                sock.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while not answer.endswith(b"}"):
                    answer += sock.recv(4096)
                assert answer.startswith(b"HTTP/1.1 200 ")
                kept.append(sock)
            third = stack.enter_context(socket.create_connection(("127.0.0.1", port), GUARD))
            assert _recv_all(third).startswith(b"HTTP/1.1 503 ")
    (tmp_path / "bad.json").write_text(json.dumps({"header_timeout": 0}))
    done = subprocess.run(
        [sys.executable, "-m", "chenyu_assets.cli", "serve", "--config", f"{tmp_path}/bad.json"],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert done.returncode == 2
    assert "header_timeout" in done.stderr
    assert "Traceback" not in done.stderr
