"""ChenyuClient over 127.0.0.1 (issue 5): streamed uploads, retries, pre-flight refusals,
files changing mid-upload, ``get()``, error mapping, concurrency, configuration.

Two real servers are used: the in-process emulator, and :class:`CaptureServer`, a tiny
``aiohttp.web`` app that records what arrived on the wire (``Content-Length``,
``Transfer-Encoding``, bytes received, the file part's sha256, requests in flight) and
answers whatever a test needs (a ``code != 0`` envelope under HTTP 200, an HTML page, a
reset in the middle of the body).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import mediagen
import pytest
from aiohttp import web
from emulator_kit import config
from vclock import virtual

from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.emulator import Emulator, FaultRule
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    ResponseFormatError,
    ServerError,
    UploadError,
)
from chenyu_assets.events import RetryEvent
from chenyu_assets.media import UPLOAD_MAX_BYTES

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Retries without real waits worth speaking of.
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
CANARY_KEY = "cy_c0ffee00c0ffee00c0ffee00c0ffee00"


# --- helpers ---------------------------------------------------------------------------------


def write_png(path: Path, size: int, *, block: int = MiB) -> str:
    """Write a valid PNG of exactly ``size`` bytes (a small image, then a private ``raNd``
    chunk of random bytes, then IEND) one block at a time; return its sha256."""
    small = mediagen.png(16, 16)
    iend = small[-12:]
    head = small[:-12]
    payload = size - len(head) - 12 - len(iend)
    if payload < 0:
        raise ValueError(f"{size} bytes is too small for the PNG")
    digest = hashlib.sha256()
    crc = zlib.crc32(b"raNd")
    with path.open("wb") as f:

        def put(data: bytes) -> None:
            f.write(data)
            digest.update(data)

        put(head + struct.pack(">I", payload) + b"raNd")
        left = payload
        while left:
            data = os.urandom(min(block, left))
            crc = zlib.crc32(data, crc)
            put(data)
            left -= len(data)
        put(struct.pack(">I", crc) + iend)
    assert path.stat().st_size == size
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


class Progress:
    """An ``on_progress`` callback that keeps every delta and checks the running total."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.deltas: list[int] = []
        self.total = 0

    def __call__(self, delta: int) -> None:
        self.deltas.append(delta)
        self.total += delta
        assert 0 <= self.total <= self.size, (self.total, self.deltas[-5:])

    @property
    def rewound(self) -> bool:
        return any(d < 0 for d in self.deltas)


def stored(emu: Emulator, asset_id: str) -> Any:
    """The emulator's audit record of one stored upload."""
    [upload] = [u for u in emu.audit().uploads if u.asset_id == asset_id]
    return upload


async def wait_for_requests(emu: Emulator, count: int, *, timeout: float = 30.0) -> list[Any]:
    """The emulator's request records once there are at least ``count`` of them (``timeout``
    is a hang guard)."""
    with anyio.fail_after(timeout):
        while len(requests := emu.audit().requests) < count:
            await anyio.sleep(0.01)
    return requests


# --- capture server --------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the capture server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    content_length: int | None
    transfer_encoding: str | None
    received: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    file_size: int | None = None
    file_sha256: str | None = None
    filename: str | None = None
    complete: bool = False


Responder = Callable[[Seen], web.StreamResponse]


def asset_data(seen: Seen, index: int) -> dict[str, Any]:
    """A plausible §1 ``data`` object for what ``seen`` uploaded."""
    asset_id = f"asset_{index:032x}"
    content = f"https://www.chenyu.team/assets/{asset_id}/content"
    return {
        "asset_id": asset_id,
        "asset_uri": f"asset://{asset_id}",
        "url": content,
        "content_url": content,
        "signed_url": f"{content}?expires=1781295600&signature=abc",
        "media_type": seen.fields.get("media_type", "image"),
        "mime_type": "image/png",
        "size_bytes": seen.file_size or 0,
        "purpose": seen.fields.get("purpose", "temp_input"),
        "persistent": False,
        "expires_at": "2026-06-16T12:00:00+08:00",
        "status": "confirmed",
        "original_filename": seen.filename or "x",
    }


class CaptureServer:
    """A real ``aiohttp.web`` server on 127.0.0.1 recording each request.

    ``respond(seen)`` builds the answer (default: a success envelope with an
    ``X-Request-Id``); ``hold`` seconds are spent after the body is read; the first
    ``reset_first`` requests are reset (RST) once ``reset_after`` body bytes arrived.
    """

    def __init__(
        self,
        respond: Responder | None = None,
        *,
        hold: float = 0.0,
        reset_first: int = 0,
        reset_after: int = 0,
    ) -> None:
        self.respond = respond or self.ok
        self.hold = hold
        self.reset_first = reset_first
        self.reset_after = reset_after
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def ok(self, seen: Seen) -> web.StreamResponse:
        index = len(self.seen)
        body = {"code": 0, "msg": "ok", "data": asset_data(seen, index)}
        return web.json_response(body, headers={"X-Request-Id": f"capture-{index}"})

    async def __aenter__(self) -> CaptureServer:
        app = web.Application(client_max_size=2 * UPLOAD_MAX_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api/open/v2"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            seen = Seen(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                content_length=request.content_length,
                transfer_encoding=request.headers.get("Transfer-Encoding"),
            )
            self.seen.append(seen)
            if len(self.seen) <= self.reset_first:
                return await self._reset_midway(request, seen)
            if request.method == "POST":
                await self._read_multipart(request, seen)
            seen.received = request.content.total_bytes
            seen.complete = True
            if self.hold:
                await asyncio.sleep(self.hold)
            return self.respond(seen)
        finally:
            self.in_flight -= 1

    async def _read_multipart(self, request: web.Request, seen: Seen) -> None:
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, aiohttp.BodyPartReader)
            if part.filename is None:
                seen.fields[part.name or ""] = (await part.read()).decode()
                continue
            digest = hashlib.sha256()
            size = 0
            while chunk := await part.read_chunk(256 * 1024):
                digest.update(chunk)
                size += len(chunk)
            seen.file_size, seen.file_sha256, seen.filename = (
                size,
                digest.hexdigest(),
                part.filename,
            )
        await request.read()  # an epilogue, if any, still counts as received

    async def _reset_midway(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        while seen.received < self.reset_after:
            chunk = await request.content.readany()
            if not chunk:
                break
            seen.received += len(chunk)
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return web.Response(status=204)


def fixed(status: int, body: str, content_type: str) -> Responder:
    """A responder that always answers ``body`` with ``status``."""

    def respond(seen: Seen) -> web.StreamResponse:
        return web.Response(status=status, text=body, content_type=content_type)

    return respond


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(config()) as running:
        yield running


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[ChenyuClient]:
    async with ChenyuClient(
        api_key=emu.account.api_key, base_url=emu.chenyu_url, retry=FAST_RETRY
    ) as c:
        yield c


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A PNG of exactly ``UPLOAD_MAX_BYTES`` random-bodied bytes, written in 1 MiB blocks."""
    path = tmp_path_factory.mktemp("big") / "hundred.png"
    sha = write_png(path, UPLOAD_MAX_BYTES)
    yield path, sha
    path.unlink()


# --- 1. 100 MB, streamed ---------------------------------------------------------------------


async def test_100_mb_upload_round_trips_in_bounded_memory(
    big_file: tuple[Path, str], emu: Emulator, client: ChenyuClient
) -> None:
    path, sha = big_file
    progress = Progress(UPLOAD_MAX_BYTES)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with anyio.fail_after(120):  # a hang guard only (loaded machine, tracemalloc on)
            up = await client.upload(path, on_progress=progress)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"\n100 MiB upload: {elapsed:.2f} s ({UPLOAD_MAX_BYTES / MiB / elapsed:.0f} MiB/s "
        f"under tracemalloc), peak traced memory {peak / MiB:.2f} MiB (client + emulator)"
    )
    assert peak < 16 * MiB
    assert up.size_bytes == UPLOAD_MAX_BYTES
    assert up.media_type == "image"
    assert up.mime_type == "image/png"
    record = stored(emu, up.asset_id)
    assert (record.size, record.sha256) == (UPLOAD_MAX_BYTES, sha)
    assert progress.total == UPLOAD_MAX_BYTES
    assert not progress.rewound
    assert client.stats.requests == 1


async def test_100_mb_upload_declares_an_exact_content_length(
    big_file: tuple[Path, str],
) -> None:
    path, sha = big_file
    async with (
        CaptureServer() as server,
        ChenyuClient(api_key=CANARY_KEY, base_url=server.url) as client,
    ):
        up = await client.upload(path)
    [seen] = server.seen
    assert seen.transfer_encoding is None  # not chunked
    assert seen.content_length is not None
    assert seen.received == seen.content_length  # every declared byte, and no more
    assert UPLOAD_MAX_BYTES < seen.content_length < UPLOAD_MAX_BYTES + 4096
    assert (seen.file_size, seen.file_sha256) == (UPLOAD_MAX_BYTES, sha)
    assert seen.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert seen.fields == {"media_type": "image", "purpose": "temp_input", "ttl_hours": "48"}
    assert seen.filename == "hundred.png"
    assert up.request_id == "capture-1"


# --- 2. retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["before", "after"])
async def test_reset_upload_is_retried_and_byte_exact(
    tmp_path: Path, emu: Emulator, phase: str
) -> None:
    size = 8 * MiB
    path = tmp_path / "clip.png"
    sha = write_png(path, size)
    emu.set_faults(
        [FaultRule(action="UploadAsset", family="chenyu", kind="reset", phase=phase, max_count=1)]
    )
    progress = Progress(size)
    async with ChenyuClient(
        api_key=emu.account.api_key,
        base_url=emu.chenyu_url,
        retry=FAST_RETRY,
        chunk_size=256 * 1024,
    ) as client:
        up = await client.upload(path, on_progress=progress)
        assert client.stats.retries == 1
    assert sum(progress.deltas) == progress.total == size
    record = stored(emu, up.asset_id)
    assert (record.size, record.sha256) == (size, sha)
    codes = [r.code for r in emu.audit().requests]
    assert codes == ["fault:reset", None]
    uploads = emu.audit().uploads
    if phase == "after":
        # The first attempt was stored before the reset: the whole file went out, was
        # counted, and was taken back before the second attempt.
        assert progress.rewound
        assert min(progress.deltas) == -size
        assert len(uploads) == 2  # an orphan temp asset, as the client docstring says
        assert all(u.sha256 == sha for u in uploads)
    else:
        assert len(uploads) == 1


async def test_reset_mid_body_rewinds_progress_and_resends_whole_file(tmp_path: Path) -> None:
    size = 8 * MiB
    path = tmp_path / "clip.png"
    sha = write_png(path, size)
    progress = Progress(size)
    async with (
        CaptureServer(reset_first=1, reset_after=3 * MiB) as server,
        ChenyuClient(
            api_key=CANARY_KEY, base_url=server.url, retry=FAST_RETRY, chunk_size=256 * 1024
        ) as client,
    ):
        await client.upload(path, on_progress=progress)
        assert client.stats.retries == 1
    first, second = server.seen
    assert not first.complete
    assert first.received >= 3 * MiB
    assert second.complete
    assert (second.file_size, second.file_sha256) == (size, sha)
    assert second.received == second.content_length
    assert progress.rewound
    assert sum(progress.deltas) == size


@pytest.mark.parametrize("change", ["append", "delete"])
async def test_file_changed_between_attempts_is_not_resent(
    tmp_path: Path, emu: Emulator, change: str
) -> None:
    path = tmp_path / "clip.png"
    write_png(path, 2 * MiB)
    emu.set_faults([FaultRule(action="UploadAsset", family="chenyu", kind="reset", max_count=1)])

    def on_retry(event: object) -> None:
        if isinstance(event, RetryEvent):
            if change == "delete":
                path.unlink()
            else:
                with path.open("ab") as f:
                    f.write(b"more")

    async with ChenyuClient(
        api_key=emu.account.api_key, base_url=emu.chenyu_url, retry=FAST_RETRY
    ) as client:
        client.add_hook(on_retry)
        with pytest.raises(UploadError) as caught:
            await client.upload(path)
        assert client.stats.requests == 2  # one retry, then the change stopped it
    assert caught.value.reason == "file_changed"
    assert emu.audit().uploads == []


# --- 3. pre-flight refusals ------------------------------------------------------------------


def _too_large(tmp: Path) -> Path:
    path = tmp / "huge.mp4"
    with path.open("wb") as f:
        f.truncate(UPLOAD_MAX_BYTES + 1)  # sparse: no disk, no memory
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.png"
    path.touch()
    return path


def _directory(tmp: Path) -> Path:
    path = tmp / "photos"
    path.mkdir()
    return path


def _missing(tmp: Path) -> Path:
    return tmp / "nope.png"


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_too_large, "too_large"),
        (_empty, "empty"),
        (_directory, "not_regular_file"),
        (_missing, "not_found"),
        (_fifo, "not_regular_file"),
    ],
    ids=["too_large", "empty", "directory", "missing", "fifo"],
)
async def test_preflight_refusals_send_nothing(
    tmp_path: Path,
    emu: Emulator,
    client: ChenyuClient,
    make: Callable[[Path], Path],
    reason: str,
) -> None:
    path = make(tmp_path)
    with anyio.fail_after(5), pytest.raises(UploadError) as caught:  # a FIFO must not block
        await client.upload(path)
    assert caught.value.reason == reason
    assert caught.value.path == str(path)
    assert client.stats.requests == 0
    assert emu.audit().requests == []


@pytest.mark.parametrize(("size", "reason"), [(0, "empty"), (UPLOAD_MAX_BYTES + 1, "too_large")])
async def test_upload_bytes_preflight(
    emu: Emulator, client: ChenyuClient, size: int, reason: str
) -> None:
    with pytest.raises(UploadError) as caught:
        await client.upload_bytes(bytes(size), filename="x.bin")
    assert caught.value.reason == reason
    assert emu.audit().requests == []


_UNREADABLE_CHILD = """
import asyncio, json, sys
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import UploadError

async def main():
    async with ChenyuClient.from_env() as client:
        try:
            await client.upload(sys.argv[1])
        except UploadError as exc:
            return exc.reason
    return None

print(json.dumps(asyncio.run(main())))
"""


def _can_read(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.read(1)
    except PermissionError:
        return False
    return True


async def test_unreadable_file_is_refused(tmp_path: Path, emu: Emulator) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(mediagen.png(32, 32))
    path.chmod(0)
    if not _can_read(path):
        async with ChenyuClient(api_key=emu.account.api_key, base_url=emu.chenyu_url) as client:
            with pytest.raises(UploadError) as caught:
                await client.upload(path)
        reason = caught.value.reason
    else:
        # Root with CAP_DAC_OVERRIDE reads through mode 000. Drop the capabilities that
        # bypass permission bits in a child process (still root, same interpreter) and
        # upload from there to this emulator.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("privileged and no setpriv: permission bits don't block reads here")
        caps = "-dac_override,-dac_read_search"
        env = {
            **os.environ,
            "CHENYU_API_KEY": emu.account.api_key,
            "CHENYU_BASE_URL": emu.chenyu_url,
        }
        with anyio.fail_after(20):
            done = await anyio.run_process(
                [
                    setpriv,
                    f"--inh-caps={caps}",
                    f"--bounding-set={caps}",
                    sys.executable,
                    "-c",
                    _UNREADABLE_CHILD,
                    str(path),
                ],
                env=env,
                check=False,
            )
        if done.returncode != 0:
            pytest.skip(f"could not drop capabilities: {done.stderr.decode()[-300:]}")
        reason = json.loads(done.stdout)
    assert reason == "unreadable"
    assert emu.audit().requests == []


# --- 4. a file that changes while it is being sent -------------------------------------------


def _mutate(path: Path, change: str, size: int) -> None:
    if change == "append":
        with path.open("ab") as f:
            f.write(b"appended")
    elif change == "truncate":
        os.truncate(path, size // 2)
    else:  # same size, new bytes (and a new mtime)
        with path.open("r+b") as f:
            f.seek(size - 4096)
            f.write(os.urandom(4096))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("change", ["append", "truncate", "overwrite"])
async def test_file_changing_mid_upload_is_an_error(
    tmp_path: Path, emu: Emulator, change: str
) -> None:
    size = 16 * MiB
    path = tmp_path / "growing.png"
    write_png(path, size)
    # The emulator sits on the request before reading the body, so the client is still
    # sending when the file changes.
    emu.set_faults([FaultRule(action="UploadAsset", family="chenyu", kind="latency", delay=0.3)])
    first_chunk = anyio.Event()

    async def mutate() -> None:
        await first_chunk.wait()
        _mutate(path, change, size)

    async with ChenyuClient(
        api_key=emu.account.api_key,
        base_url=emu.chenyu_url,
        retry=FAST_RETRY,
        chunk_size=64 * 1024,
    ) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(mutate)
                with pytest.raises(UploadError) as caught:
                    await client.upload(path, on_progress=lambda delta: first_chunk.set())
        assert client.stats.requests == 1  # not retried
    assert caught.value.reason == "file_changed"
    [record] = await wait_for_requests(emu, 1)
    assert record.status != 200
    assert emu.audit().uploads == []  # nothing half-written was stored


# --- 5. get(), errors, media types, options --------------------------------------------------


async def test_get_returns_every_field(tmp_path: Path, emu: Emulator, client: ChenyuClient) -> None:
    path = mediagen.write(tmp_path / "hero.png", mediagen.png(640, 480))
    before = datetime.now(UTC)
    up = await client.upload(path, ttl_hours=6)
    got = await client.get(up.asset_id)
    for asset in (up, got):
        assert asset.asset_id.startswith("asset_")
        assert len(asset.asset_id) == 38
        assert asset.asset_uri == "asset://" + asset.asset_id == asset.reference
        assert asset.url == asset.content_url
        assert asset.content_url is not None
        assert asset.content_url.endswith(f"/assets/{asset.asset_id}/content")
        assert asset.signed_url is not None
        assert asset.signed_url.startswith(asset.content_url + "?")
        assert "signature=" in asset.signed_url
        assert asset.media_type == "image"
        assert asset.mime_type == "image/png"
        assert asset.size_bytes == path.stat().st_size
        assert asset.purpose == "temp_input"
        assert asset.persistent is False
        assert isinstance(asset.expires_at, datetime)
        assert asset.expires_at.utcoffset() is not None  # aware
        expected = before + timedelta(hours=6)
        assert abs((asset.expires_at - expected).total_seconds()) < 60
        expires = asset.signed_url_expires()
        assert expires is not None
        assert expires <= asset.expires_at.timestamp()
        assert asset.status == "confirmed"
        assert asset.original_filename == "hero.png"
        assert asset.signed_url not in repr(asset)  # a credential
    assert got.asset_id == up.asset_id
    assert got.expires_at == up.expires_at


async def test_request_id_is_taken_from_the_answer() -> None:
    async with (
        CaptureServer() as server,
        ChenyuClient(api_key=CANARY_KEY, base_url=server.url) as client,
    ):
        got = await client.get("asset_" + "1" * 32)
    assert got.request_id == "capture-1"
    assert server.seen[0].headers["Authorization"] == f"Bearer {CANARY_KEY}"


async def test_expired_unknown_and_unauthorised(emu: Emulator, client: ChenyuClient) -> None:
    up = await client.upload_bytes(mediagen.png(64, 64), filename="a.png", ttl_hours=1)
    emu.advance_time(3601)
    with pytest.raises(NotFoundError) as expired:
        await client.get(up.asset_id)
    assert expired.value.status == 404
    assert f"GET /api/open/v2/assets/{up.asset_id}" in str(expired.value)
    assert "HTTP 404" in str(expired.value)

    with pytest.raises(NotFoundError):
        await client.get("asset_" + "0" * 32)

    requests_before = client.stats.requests
    async with ChenyuClient(
        api_key=CANARY_KEY, base_url=emu.chenyu_url, retry=FAST_RETRY
    ) as intruder:
        with pytest.raises(AuthenticationError) as denied:
            await intruder.get(up.asset_id)
        with pytest.raises(AuthenticationError):
            await intruder.upload_bytes(b"data", filename="a.txt")
        assert intruder.stats.requests == 2  # a 401 is not retried
    assert denied.value.status == 401
    assert CANARY_KEY not in str(denied.value) + repr(denied.value)
    assert client.stats.requests == requests_before
    assert len(emu.audit().uploads) == 1


async def test_nonzero_code_in_http_200_is_an_error() -> None:
    envelope = json.dumps({"code": 1001, "msg": "x", "data": None})
    async with (
        CaptureServer(fixed(200, envelope, "application/json")) as server,
        ChenyuClient(api_key=CANARY_KEY, base_url=server.url, retry=FAST_RETRY) as client,
    ):
        with pytest.raises(APIError) as caught:
            await client.get("asset_" + "1" * 32)
        with pytest.raises(APIError):
            await client.upload_bytes(b"payload", filename="a.txt")
    err = caught.value
    assert (err.status, err.code, err.message) == (200, "1001", "x")
    assert not isinstance(err, ServerError | ResponseFormatError)
    assert len(server.seen) == 2  # neither call was retried


async def test_html_answers_are_classified() -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    # An HTML 200 is not the envelope: ResponseFormatError (retried, it may be a proxy blip).
    async with (
        CaptureServer(fixed(200, page, "text/html")) as server,
        ChenyuClient(api_key=CANARY_KEY, base_url=server.url, retry=policy) as client,
    ):
        with pytest.raises(ResponseFormatError) as caught:
            await client.get("asset_" + "1" * 32)
    assert caught.value.status == 200
    assert len(server.seen) == 2
    # An HTML 404 (wrong base URL behind a proxy): ResponseFormatError, not retried.
    async with (
        CaptureServer(fixed(404, page, "text/html")) as server,
        ChenyuClient(api_key=CANARY_KEY, base_url=server.url, retry=policy) as client,
    ):
        with pytest.raises(ResponseFormatError) as caught:
            await client.get("asset_" + "1" * 32)
    assert caught.value.status == 404
    assert len(server.seen) == 1


async def test_html_5xx_from_the_emulator(emu: Emulator) -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    async with ChenyuClient(
        api_key=emu.account.api_key, base_url=emu.chenyu_url, retry=policy
    ) as client:
        up = await client.upload_bytes(mediagen.png(64, 64), filename="a.png")
        html_503 = FaultRule(action="GetAsset", kind="http_error", status=503, body="html")
        emu.set_faults([html_503])
        with pytest.raises(ServerError) as caught:
            await client.get(up.asset_id)
        assert caught.value.status == 503
        emu.set_faults([html_503.model_copy(update={"status": 502, "max_count": 1})])
        assert (await client.get(up.asset_id)).asset_id == up.asset_id  # retried past it
    assert emu.audit().count("GetAsset", 503) == 2
    assert emu.audit().count("GetAsset", 502) == 1


@pytest.mark.parametrize(
    ("filename", "make", "media_type", "mime_type"),
    [
        ("still.png", lambda: mediagen.png(320, 240), "image", "image/png"),
        ("voice.wav", lambda: mediagen.wav(3.0), "audio", "audio/wav"),
        ("clip.mp4", lambda: mediagen.mp4(1280, 720, 3.0), "video", "video/mp4"),
        ("notes.bin", lambda: b"plain bytes, no magic" * 10, "file", "application/octet-stream"),
        ("fake.png", mediagen.html, "file", None),
    ],
    ids=["png", "wav", "mp4", "unknown", "html-named-png"],
)
async def test_media_type_is_inferred(
    tmp_path: Path,
    emu: Emulator,
    client: ChenyuClient,
    filename: str,
    make: Callable[[], bytes],
    media_type: str,
    mime_type: str | None,
) -> None:
    path = mediagen.write(tmp_path / filename, make())
    up = await client.upload(path)
    assert up.media_type == media_type
    assert stored(emu, up.asset_id).media_type == media_type
    if mime_type is not None:
        assert up.mime_type == mime_type
    by_bytes = await client.upload_bytes(path.read_bytes(), filename=filename)
    assert by_bytes.media_type == media_type
    explicit = await client.upload(path, media_type="file")
    assert explicit.media_type == "file"


async def test_upload_bytes_round_trips(emu: Emulator, client: ChenyuClient) -> None:
    data = mediagen.png(300, 300) + os.urandom(4096)
    up = await client.upload_bytes(data, filename='照片 "one".png', ttl_hours=2)
    record = stored(emu, up.asset_id)
    assert (record.size, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert up.media_type == "image"
    assert up.size_bytes == len(data)
    assert up.original_filename is not None
    assert up.original_filename.startswith("照片")


@pytest.mark.parametrize(
    "options",
    [
        {"ttl_hours": 0},
        {"ttl_hours": -1},
        {"ttl_hours": 1.5},
        {"ttl_hours": "48"},
        {"ttl_hours": True},
        {"purpose": "permanent"},
        {"media_type": "document"},
        {"media_type": "Image"},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
async def test_invalid_options_raise_before_sending(
    tmp_path: Path, emu: Emulator, client: ChenyuClient, options: dict[str, Any]
) -> None:
    path = mediagen.write(tmp_path / "a.png", mediagen.png(64, 64))
    expected = next(iter(options))
    with pytest.raises(ValueError, match=expected):
        await client.upload(path, **options)
    with pytest.raises(ValueError, match=expected):
        await client.upload_bytes(b"data", filename="a.bin", **options)
    assert client.stats.requests == 0
    assert emu.audit().requests == []


async def test_get_refuses_a_non_id(emu: Emulator, client: ChenyuClient) -> None:
    for bad in ("", "a/b", "../assets"):
        with pytest.raises(ValueError, match="not an asset id"):
            await client.get(bad)
    assert emu.audit().requests == []


# --- 6. concurrency --------------------------------------------------------------------------


@virtual
async def test_concurrent_uploads_respect_max_concurrent_uploads(tmp_path: Path) -> None:
    files = []
    for i in range(8):
        path = tmp_path / f"f{i}.png"
        files.append((path, write_png(path, 8 * MiB)))
    # virtual time: each upload is held for 10 s after its body arrived, so whenever the cap
    # allows a second one it is in flight at the same time, whatever the machine's speed
    started = asyncio.get_running_loop().time()
    async with (
        CaptureServer(hold=10.0) as server,
        ChenyuClient(
            api_key=CANARY_KEY,
            base_url=server.url,
            max_concurrent_uploads=2,
            rate_limits={"ChenyuUpload": 1000.0},  # the cap under test, not the rate
        ) as client,
    ):
        tracemalloc.start()
        try:
            results = await asyncio.gather(*(client.upload(p) for p, _ in files))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    elapsed = asyncio.get_running_loop().time() - started
    print(f"\n8 x 8 MiB, 2 at a time: peak traced memory {peak / MiB:.2f} MiB")
    assert server.max_in_flight == 2
    # two at a time, 10 s each: four rounds, exactly (the bytes themselves take no time)
    assert elapsed == pytest.approx(4 * 10.0, abs=0.1)
    assert len(results) == 8
    assert all(r.size_bytes == 8 * MiB for r in results)
    assert sorted(s.file_sha256 or "" for s in server.seen) == sorted(sha for _, sha in files)
    assert all(s.received == s.content_length for s in server.seen)
    assert peak < 16 * MiB


async def test_concurrent_uploads_all_land_on_the_emulator(tmp_path: Path, emu: Emulator) -> None:
    files = []
    for i in range(8):
        path = tmp_path / f"f{i}.png"
        files.append((path, write_png(path, 2 * MiB)))
    async with ChenyuClient(
        api_key=emu.account.api_key, base_url=emu.chenyu_url, max_concurrent_uploads=2
    ) as client:
        results = await asyncio.gather(*(client.upload(p) for p, _ in files))
    stored_sha = {u.asset_id: u.sha256 for u in emu.audit().uploads}
    assert [stored_sha[r.asset_id] for r in results] == [sha for _, sha in files]


# --- 7. configuration and secrets ------------------------------------------------------------


async def test_from_env(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    monkeypatch.setenv("CHENYU_API_KEY", emu.account.api_key)
    monkeypatch.setenv("CHENYU_BASE_URL", emu.chenyu_url + "/")
    client = ChenyuClient.from_env()
    assert client.base_url == emu.chenyu_url
    async with client:
        up = await client.upload_bytes(b"hello", filename="hello.txt")
        assert up.media_type == "file"
    assert ChenyuClient.from_env(base_url="https://example.test/v2").base_url == (
        "https://example.test/v2"
    )
    monkeypatch.delenv("CHENYU_BASE_URL")
    assert ChenyuClient.from_env().base_url == "https://www.chenyu.cn/api/open/v2"
    monkeypatch.delenv("CHENYU_API_KEY")
    with pytest.raises(ConfigurationError, match="CHENYU_API_KEY"):
        ChenyuClient.from_env()
    monkeypatch.setenv("CHENYU_API_KEY", "")
    with pytest.raises(ConfigurationError, match="CHENYU_API_KEY"):
        ChenyuClient.from_env()


async def test_key_never_shown(
    monkeypatch: pytest.MonkeyPatch,
    emu: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="chenyu_assets")
    monkeypatch.setenv("CHENYU_API_KEY", CANARY_KEY)
    monkeypatch.setenv("CHENYU_BASE_URL", emu.chenyu_url)
    errors: list[BaseException] = []
    client = ChenyuClient.from_env(retry=FAST_RETRY)
    shown = [repr(client), str(client)]
    async with client:
        shown += [repr(client), repr(client._transport)]
        for call in (
            client.get("asset_" + "2" * 32),
            client.upload(mediagen.write(tmp_path / "a.png", mediagen.png(64, 64))),
            client.upload(tmp_path / "missing.png"),
        ):
            try:
                await call
            except Exception as exc:
                errors.append(exc)
    with pytest.raises(ConfigurationError) as bad_url:
        ChenyuClient(api_key=CANARY_KEY, base_url="ftp://example.test")
    errors.append(bad_url.value)
    assert [type(e) for e in errors] == [
        AuthenticationError,
        AuthenticationError,
        UploadError,
        ConfigurationError,
    ]
    shown += [str(e) for e in errors] + [repr(e) for e in errors]
    shown += [r.getMessage() for r in caplog.records]
    for text in shown:
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text


# --- 8. signed content URL -------------------------------------------------------------------


async def test_signed_url_downloads_the_exact_bytes(tmp_path: Path, client: ChenyuClient) -> None:
    path = tmp_path / "clip.png"
    sha = write_png(path, 3 * MiB + 17)
    up = await client.upload(path)
    again = await client.get(up.asset_id)
    async with aiohttp.ClientSession() as session:
        for url in (up.signed_url, again.signed_url):
            assert url is not None
            async with session.get(url) as resp:
                assert resp.status == 200
                body = await resp.read()
            assert hashlib.sha256(body).hexdigest() == sha
            assert len(body) == 3 * MiB + 17
        assert up.content_url is not None
        async with session.get(up.content_url) as resp:  # no signature: refused
            assert resp.status in (401, 403)
