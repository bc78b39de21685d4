"""Processing: Processing -> Active/Failed, URL fetching rules, local resolution."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import mediagen
import pytest
from aiohttp import web
from emulator_kit import (
    ark,
    bearer,
    config,
    new_asset,
    new_group,
    result,
    session,
    virtual_emulator,
    wait_status,
)
from vclock import virtual

from chenyu_assets.emulator import Emulator

pytestmark = pytest.mark.anyio
__all__ = ["session"]


@dataclass
class Origin:
    """A tiny HTTP server on 127.0.0.1 standing in for "the internet"."""

    runner: web.AppRunner
    port: int
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.authority}{path}"


async def start_origin(redirect_target: str = "") -> Origin:
    png = mediagen.png(800, 1200)
    app = web.Application()
    origin_box: list[Origin] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        origin_box[0].hits[request.path] += 1
        path = request.path
        if path == "/img.png":
            return web.Response(body=png, content_type="image/png")
        if path == "/wide.png":
            return web.Response(body=mediagen.png(2000, 400), content_type="image/png")
        if path == "/page.html":
            return web.Response(text="<html><body>hello</body></html>", content_type="text/html")
        if path == "/to-self":
            raise web.HTTPFound("/img.png")
        if path == "/to-away":
            raise web.HTTPFound(redirect_target)
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/huge-declared":
            return web.Response(body=png + bytes(31 * 1024 * 1024), content_type="image/png")
        if path == "/huge-chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(png[:64])
            for _ in range(40):
                await resp.write(bytes(1024 * 1024))
            await resp.write_eof()
            return resp
        raise web.HTTPNotFound()

    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin = Origin(runner=runner, port=int(runner.addresses[0][1]))
    origin_box.append(origin)
    return origin


@pytest.fixture
async def origins() -> AsyncIterator[tuple[Origin, Origin]]:
    """(allowed, forbidden): two origins; the first redirects /to-away to the second."""
    forbidden = await start_origin()
    allowed = await start_origin(redirect_target=forbidden.url("/img.png"))
    try:
        yield allowed, forbidden
    finally:
        await allowed.runner.cleanup()
        await forbidden.runner.cleanup()


async def final(
    session: aiohttp.ClientSession, emu: Emulator, url: str, kind: str = "Image"
) -> dict[str, Any]:
    group_id = await new_group(session, emu)
    asset_id = await new_asset(session, emu, group_id, url, asset_type=kind)
    return await wait_status(session, emu, asset_id)


@pytest.mark.parametrize(
    ("kind", "args", "asset_type"),
    [
        ("png", (800, 1200), "Image"),
        ("jpeg", (1024, 768), "Image"),
        ("webp", (640, 640), "Image"),
        ("mp4", (1280, 720), "Video"),
        ("mov", (720, 1280), "Video"),
        ("wav", (0, 0), "Audio"),
    ],
)
async def test_valid_generated_media_becomes_active(
    session: aiohttp.ClientSession, kind: str, args: tuple[int, int], asset_type: str
) -> None:
    async with Emulator(config()) as emu:
        asset = await final(session, emu, emu.media_url(kind, *args), asset_type)  # type: ignore[arg-type]
        assert asset["Status"] == "Active", asset
        assert "Error" not in asset
        async with session.get(asset["URL"]) as resp:
            assert resp.status == 200
            assert len(await resp.read()) > 0


@pytest.mark.parametrize(
    ("url_of", "asset_type", "code"),
    [
        (lambda e: e.media_url("png", 2000, 400), "Image", "InvalidParameter.ImageRatio"),
        (lambda e: e.media_url("png", 200, 200), "Image", "InvalidParameter.ImageSize"),
        (lambda e: e.media_url("html"), "Image", "InvalidParameter.UnsupportedMediaFormat"),
        (lambda e: e.media_url("png", 800, 1200), "Video", "InvalidParameter.AssetType"),
        (
            lambda e: e.media_url("mp4", 1280, 720, duration=20),
            "Video",
            "InvalidParameter.Duration",
        ),
        (lambda e: e.media_url("mp4", 1280, 720, fps=15), "Video", "InvalidParameter.FrameRate"),
        (lambda e: e.media_url("wav", 0, 0, duration=1), "Audio", "InvalidParameter.Duration"),
        (lambda e: e.url + "/_emulator/media/png/nope", "Image", "InvalidParameter.DownloadFailed"),
        (lambda e: e.url + "/assets/asset_0/content", "Image", "InvalidParameter.DownloadFailed"),
        (lambda e: "http://10.1.2.3/a.png", "Image", "InvalidParameter.DownloadFailed"),
        (
            lambda e: "http://169.254.169.254/latest/meta-data",
            "Image",
            "InvalidParameter.DownloadFailed",
        ),
        (lambda e: "https://example.com/a.png", "Image", "InvalidParameter.DownloadFailed"),
    ],
)
async def test_bad_media_fails_with_the_right_code(
    session: aiohttp.ClientSession,
    url_of: Callable[[Emulator], str],
    asset_type: str,
    code: str,
) -> None:
    async with Emulator(config()) as emu:
        asset = await final(session, emu, url_of(emu), asset_type)
        assert asset["Status"] == "Failed"
        assert asset["Error"]["Code"] == code
        assert asset["Error"]["Message"]
        assert asset["URL"] == ""
        audit_asset = emu.audit().assets[0]
        assert audit_asset.error_code == code
        assert audit_asset.finished_t is not None


async def test_allow_listed_origin_is_fetched_others_are_not(
    session: aiohttp.ClientSession, origins: tuple[Origin, Origin]
) -> None:
    allowed, forbidden = origins
    async with Emulator(config(fetch_allowlist=(allowed.authority,))) as emu:
        ok = await final(session, emu, allowed.url("/img.png"))
        assert ok["Status"] == "Active"
        async with session.get(ok["URL"]) as resp:  # the content is kept and served
            assert await resp.read() == mediagen.png(800, 1200)
        cases = {
            allowed.url("/wide.png"): "InvalidParameter.ImageRatio",
            allowed.url("/page.html"): "InvalidParameter.UnsupportedMediaFormat",
            allowed.url("/missing"): "InvalidParameter.DownloadFailed",
            allowed.url("/to-away"): "InvalidParameter.DownloadFailed",
            allowed.url("/loop"): "InvalidParameter.DownloadFailed",
            allowed.url("/huge-declared"): "InvalidParameter.DownloadFailed",
            allowed.url("/huge-chunked"): "InvalidParameter.DownloadFailed",
            forbidden.url("/img.png"): "InvalidParameter.DownloadFailed",
            f"http://localhost:{allowed.port}/img.png": "InvalidParameter.DownloadFailed",
        }
        for url, code in cases.items():
            asset = await final(session, emu, url)
            assert (asset["Status"], asset["Error"]["Code"]) == ("Failed", code), url
        redirected = await final(session, emu, allowed.url("/to-self"))
        assert redirected["Status"] == "Active"
    assert forbidden.hits == Counter()  # never contacted, not even through the redirect
    assert allowed.hits["/loop"] == 4  # the first request plus at most 3 redirects


async def test_validate_media_off_skips_fetching(
    session: aiohttp.ClientSession, origins: tuple[Origin, Origin]
) -> None:
    allowed, _ = origins
    cfg = config(validate_media=False, fetch_allowlist=(allowed.authority,))
    async with Emulator(cfg) as emu:
        asset = await final(session, emu, allowed.url("/page.html"))
        assert asset["Status"] == "Active"
        asset = await final(session, emu, "https://example.invalid/whatever.png")
        assert asset["Status"] == "Active"
    assert allowed.hits == Counter()


async def test_chenyu_upload_url_resolves_locally(session: aiohttp.ClientSession) -> None:
    async with Emulator(config()) as emu:
        jpeg = mediagen.jpeg(900, 1200)
        form = aiohttp.FormData()
        form.add_field("file", jpeg, filename="me.jpg")
        async with session.post(
            emu.chenyu_url + "/assets", data=form, headers=bearer(emu.account)
        ) as resp:
            signed = (await resp.json())["data"]["signed_url"]
        asset = await final(session, emu, signed)
        assert asset["Status"] == "Active"
        async with session.get(asset["URL"]) as resp:
            assert await resp.read() == jpeg
        # an Ark content URL is a valid source too
        again = await final(session, emu, asset["URL"])
        assert again["Status"] == "Active"
        # a tampered Chenyu URL is not
        bad = await final(session, emu, signed[:-1] + ("0" if signed[-1] != "0" else "1"))
        assert bad["Error"]["Code"] == "InvalidParameter.DownloadFailed"


@virtual
async def test_processing_delay_follows_time_scale() -> None:
    emulator, _ = virtual_emulator(config(processing_delay=10, time_scale=50))
    async with emulator as emu, aiohttp.ClientSession() as session:
        group_id = await new_group(session, emu)
        asset_id = await new_asset(session, emu, group_id)
        asset = result(await ark(session, emu, "GetAsset", {"Id": asset_id}))
        assert asset["Status"] == "Processing"
        asset = await wait_status(session, emu, asset_id, timeout=2)
        assert asset["Status"] == "Active"
    record = emu.audit().assets[0]
    assert record.created_t is not None
    assert record.finished_t is not None
    # 10 s of service time at time_scale 50: exactly 0.2 s
    assert record.finished_t - record.created_t == pytest.approx(10 / 50, abs=1e-6)


@virtual
async def test_jitter_is_seeded() -> None:
    delay, jitter = 0.3, 0.28

    async def durations(seed: int) -> list[float]:
        cfg = config(
            processing_delay=delay, processing_jitter=jitter, seed=seed, validate_media=False
        )
        emulator, _ = virtual_emulator(cfg)
        async with emulator as emu, aiohttp.ClientSession() as session:
            group_id = await new_group(session, emu)
            ids = [await new_asset(session, emu, group_id, name=str(i)) for i in range(5)]
            for asset_id in ids:
                await wait_status(session, emu, asset_id)
            by_id = {a.id: a for a in emu.audit().assets}
            return [(by_id[i].finished_t or 0) - (by_id[i].created_t or 0) for i in ids]

    first, second, other = await durations(3), await durations(3), await durations(4)
    assert first == pytest.approx(second, abs=1e-6)  # the same seed, the same delays
    assert first != pytest.approx(other, abs=1e-3)  # another seed, others
    assert all(delay - jitter - 1e-6 <= d <= delay + jitter + 1e-6 for d in first + other)
    assert max(first) - min(first) > 0.1  # the jitter really varies


async def test_no_task_outlives_the_emulator(session: aiohttp.ClientSession) -> None:
    before = len(asyncio.all_tasks())
    async with Emulator(config(processing_delay=60)) as emu:
        group_id = await new_group(session, emu)
        for i in range(5):
            await new_asset(session, emu, group_id, name=str(i))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) <= before


async def test_allow_listed_hostname_must_resolve_to_a_public_address(
    session: aiohttp.ClientSession, origins: tuple[Origin, Origin]
) -> None:
    allowed, _ = origins
    hostname = socket.gethostname().lower()
    try:
        infos = socket.getaddrinfo(hostname, allowed.port, proto=socket.IPPROTO_TCP)
    except OSError:
        pytest.skip("the machine's hostname does not resolve")
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    if hostname == "localhost" or any(a.is_global for a in addresses):
        pytest.skip("the machine's hostname resolves to a public address")
    entries = (f"{hostname}:{allowed.port}", f"localhost:{allowed.port}")
    async with Emulator(config(fetch_allowlist=entries)) as emu:
        asset = await final(session, emu, f"http://{hostname}:{allowed.port}/img.png")
        assert asset["Error"]["Code"] == "InvalidParameter.DownloadFailed"
        # "localhost" named explicitly may reach loopback
        asset = await final(session, emu, f"http://localhost:{allowed.port}/img.png")
        assert asset["Status"] == "Active"
