"""Chenyu v2 workflow assets on the emulator: upload, get, signed content, limits."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import mediagen
import pytest
from emulator_kit import CHENYU_ID, OTHER, bearer, config, session
from yarl import URL

from chenyu_assets.emulator import Emulator
from chenyu_assets.media import UPLOAD_MAX_BYTES

pytestmark = pytest.mark.anyio
__all__ = ["session"]


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Emulator]:
    """An emulator keeping its state in ``tmp_path`` (so tests can inspect the blobs)."""
    async with Emulator(config(data_dir=tmp_path / "emu")) as running:
        yield running


DATA_KEYS = {
    "asset_id",
    "asset_uri",
    "url",
    "content_url",
    "signed_url",
    "media_type",
    "mime_type",
    "size_bytes",
    "purpose",
    "persistent",
    "expires_at",
    "status",
    "original_filename",
}


async def upload(
    session: aiohttp.ClientSession,
    emu: Emulator,
    data: bytes,
    *,
    filename: str = "input.png",
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    for key, value in (fields or {}).items():
        form.add_field(key, value)
    form.add_field(
        "file", io.BytesIO(data), filename=filename, content_type="application/octet-stream"
    )
    hdrs = bearer(emu.account) if headers is None else headers
    async with session.post(emu.chenyu_url + "/assets", data=form, headers=hdrs) as resp:
        return resp.status, await resp.json()


def raw_multipart(filename_header: bytes, payload: bytes) -> tuple[bytes, str]:
    boundary = "XyZbOuNdArY"
    body = (
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="file"; ' + filename_header + b"\r\n"
        b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n--" + boundary.encode() + b"--\r\n"
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def test_upload_and_get_fields(emu: Emulator, session: aiohttp.ClientSession) -> None:
    png = mediagen.png(640, 480)
    status, body = await upload(
        session, emu, png, fields={"media_type": "image", "purpose": "temp_input"}
    )
    assert status == 200
    assert body["code"] == 0
    assert body["msg"]
    data = body["data"]
    assert set(data) == DATA_KEYS
    asset_id = data["asset_id"]
    assert CHENYU_ID.fullmatch(asset_id)
    assert data["asset_uri"] == f"asset://{asset_id}"
    assert data["url"] == data["content_url"] == f"{emu.url}/assets/{asset_id}/content"
    assert re.fullmatch(
        re.escape(data["content_url"]) + r"\?expires=\d+&signature=[0-9a-f]{64}", data["signed_url"]
    )
    assert data["media_type"] == "image"
    assert data["mime_type"] == "image/png"
    assert data["size_bytes"] == len(png)
    assert data["purpose"] == "temp_input"
    assert data["persistent"] is False
    assert data["status"] == "confirmed"
    assert data["original_filename"] == "input.png"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00", data["expires_at"])
    expires = int(URL(data["signed_url"]).query["expires"])
    from datetime import datetime

    assert expires < datetime.fromisoformat(data["expires_at"]).timestamp()  # 12 h < 48 h

    async with session.get(f"{emu.chenyu_url}/assets/{asset_id}", headers=bearer(emu.account)) as r:
        got = await r.json()
        assert r.status == 200
        assert got["code"] == 0
    assert set(got["data"]) == DATA_KEYS
    assert {k: v for k, v in got["data"].items() if k != "signed_url"} == {
        k: v for k, v in data.items() if k != "signed_url"
    }
    audit = emu.audit()
    assert audit.uploads[0].sha256 == hashlib.sha256(png).hexdigest()
    assert audit.count("UploadAsset", 200, family="chenyu") == 1


@pytest.mark.parametrize(
    ("payload", "filename", "expected"),
    [
        (mediagen.png(400, 400), "x.bin", ("image", "image/png")),
        (mediagen.wav(2.0), "x", ("audio", "audio/wav")),
        (mediagen.mp4(640, 640, 3.0, 30), "clip", ("video", "video/mp4")),
        (b"hello world\n", "notes.txt", ("file", "text/plain")),
        (mediagen.html(), "fake.png", ("file", None)),
    ],
)
async def test_media_type_is_inferred(
    emu: Emulator,
    session: aiohttp.ClientSession,
    payload: bytes,
    filename: str,
    expected: tuple[str, str | None],
) -> None:
    status, body = await upload(session, emu, payload, filename=filename)
    assert status == 200, body
    assert body["data"]["media_type"] == expected[0]
    if expected[1] is not None:
        assert body["data"]["mime_type"] == expected[1]


@pytest.mark.parametrize(
    "fields",
    [
        {"media_type": "picture"},
        {"purpose": "permanent"},
        {"ttl_hours": "0"},
        {"ttl_hours": "100000"},
        {"ttl_hours": "abc"},
        {"ttl_hours": "1.5"},
    ],
)
async def test_bad_fields_are_400(
    emu: Emulator, session: aiohttp.ClientSession, fields: dict[str, str]
) -> None:
    status, body = await upload(session, emu, b"data", fields=fields)
    assert status == 400
    assert body["code"] == 400
    assert body["data"] is None
    assert not list((Path(emu_root(emu)) / "blobs").glob("*.bin"))


def emu_root(emu: Emulator) -> Path:
    data_dir = emu.config.data_dir
    assert data_dir is not None
    return data_dir


async def test_bad_requests(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.chenyu_url + "/assets"
    async with session.post(url, json={"media_type": "image"}, headers=bearer(emu.account)) as r:
        assert r.status == 400
        assert (await r.json())["code"] == 400
    form = aiohttp.FormData()
    form.add_field("media_type", "image")
    form.add_field("x", b"", filename="")  # force multipart
    async with session.post(url, data=form, headers=bearer(emu.account)) as r:
        assert r.status == 400  # no file
    assert (await upload(session, emu, b""))[0] == 400  # empty file
    for headers in ({}, {"Authorization": "Bearer cy_" + "9" * 32}, {"Authorization": "Basic x"}):
        status, body = await upload(session, emu, b"data", headers=headers)
        assert status == 401
        assert body["code"] == 401
    async with session.get(f"{emu.chenyu_url}/assets/asset_{'0' * 32}") as r:
        assert r.status == 401


async def test_get_unknown_foreign_and_expired(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, body = await upload(session, emu, mediagen.png(400, 400), fields={"ttl_hours": "1"})
    asset_id = body["data"]["asset_id"]
    get_url = f"{emu.chenyu_url}/assets/{asset_id}"
    for missing in (f"asset_{'a' * 32}", "asset_xyz", "..%2F..%2Fetc"):
        async with session.get(
            f"{emu.chenyu_url}/assets/{missing}", headers=bearer(emu.account)
        ) as r:
            assert r.status == 404
            assert (await r.json())["code"] == 404
    async with session.get(get_url, headers=bearer(OTHER)) as r:
        assert r.status == 404
    async with session.get(body["data"]["content_url"], headers=bearer(OTHER)) as r:
        assert r.status == 404
    async with session.get(body["data"]["content_url"], headers=bearer(emu.account)) as r:
        assert r.status == 200  # the owner may read the unsigned address with its key
    emu.advance_time(3601)
    async with session.get(get_url, headers=bearer(emu.account)) as r:
        got = await r.json()
        assert r.status == 404
        assert got["code"] == 404
        assert "expired" in got["msg"]
    async with session.get(body["data"]["signed_url"]) as r:
        assert r.status == 403  # the signed URL never outlives the asset
    async with session.get(body["data"]["content_url"], headers=bearer(emu.account)) as r:
        assert r.status == 410


async def test_five_megabytes_round_trip_byte_exact(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    status, body = await upload(session, emu, payload, filename="blob.dat")
    assert status == 200
    assert body["data"]["size_bytes"] == len(payload)
    async with session.get(body["data"]["signed_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == payload


async def test_signed_url_tampering_and_expiry(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, body = await upload(session, emu, mediagen.png(400, 400))
    _, other = await upload(session, emu, mediagen.png(500, 500))
    signed = URL(body["data"]["signed_url"])
    q = dict(signed.query)
    sig = q["signature"]
    flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    other_id = other["data"]["asset_id"]
    forged = [
        signed.update_query(signature=flipped),
        signed.update_query(signature=sig.upper()),
        signed.update_query(signature=sig[:-2]),
        signed.update_query(signature="é" * 64),
        signed.update_query(expires=str(int(q["expires"]) + 1)),
        signed.update_query(expires="9" * 11),
        signed.update_query(expires="-5"),
        signed.with_query({"expires": q["expires"]}),
        signed.with_query({"signature": sig}),
        signed.with_query(None),
        URL(signed.with_path(f"/assets/{other_id}/content")).with_query(q),
    ]
    for url in forged:
        async with session.get(url) as resp:
            assert resp.status == 403, url
    async with session.get(signed) as resp:
        assert resp.status == 200
    # the signed URL lives 12 h, the asset 48 h: after 12 h the URL dies, the asset does not
    emu.advance_time(12 * 3600 + 5)
    async with session.get(signed) as resp:
        assert resp.status == 403
    headers = bearer(emu.account)
    async with session.get(
        f"{emu.chenyu_url}/assets/{body['data']['asset_id']}", headers=headers
    ) as r:
        fresh = (await r.json())["data"]["signed_url"]
    async with session.get(fresh) as resp:
        assert resp.status == 200


HOSTILE = [
    b'filename="../../etc/passwd"',
    b'filename="/etc/passwd"',
    b'filename="..\\\\..\\\\windows\\\\win.ini"',
    b'filename="' + b"A" * 5000 + b'.png"',
    b'filename="\xff\xfe\xfd.png"',
    b"filename*=UTF-8''..%2F..%2F..%2Ftmp%2Fpwned",
    b'filename="..\x01evil"',
    b'filename=".."',
    b'filename=""',
]


async def test_hostile_filenames_never_choose_a_path(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data_dir = tmp_path / "state"
    async with Emulator(config(data_dir=data_dir)) as emu:
        before = set(tmp_path.rglob("*"))
        for header in HOSTILE:
            body, ctype = raw_multipart(header, b"payload")
            headers = {**bearer(emu.account), "Content-Type": ctype}
            async with session.post(emu.chenyu_url + "/assets", data=body, headers=headers) as r:
                reply = await r.json()
                assert r.status in (200, 400), reply
                if r.status == 200:
                    name = reply["data"]["original_filename"]
                    assert "/" not in name
                    assert "\\" not in name
                    assert "\0" not in name
                    assert name not in ("", ".", "..")
                    assert len(name) <= 255
        created = set(tmp_path.rglob("*")) - before
        blobs = data_dir / "blobs"
        for path in created:
            assert path.parent in (data_dir, blobs), path
            if path.parent == blobs:
                assert re.fullmatch(r"[0-9a-f]{32}\.bin", path.name), path
        assert len(list(blobs.glob("*.bin"))) == len(emu.audit().uploads) >= len(HOSTILE) - 2
    assert not (tmp_path.parent / "pwned").exists()


async def test_nul_in_filename_is_refused_or_stripped(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    body, ctype = raw_multipart(b'filename="a\x00b.png"', b"payload")
    headers = {**bearer(emu.account), "Content-Type": ctype}
    async with session.post(emu.chenyu_url + "/assets", data=body, headers=headers) as r:
        reply = await r.json()
        if r.status == 200:
            assert "\0" not in reply["data"]["original_filename"]
        else:
            assert r.status == 400


async def test_upload_cap_enforced_while_streaming(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    chunk = b"\0" * (1 << 20)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield (
            b'--B0UND\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(200):  # 200 MiB, generated on the fly
            sent += len(chunk)
            yield chunk
        yield b"\r\n--B0UND--\r\n"

    headers = {**bearer(emu.account), "Content-Type": "multipart/form-data; boundary=B0UND"}
    tracemalloc.start()
    try:
        async with session.post(emu.chenyu_url + "/assets", data=body(), headers=headers) as resp:
            status, reply = resp.status, await resp.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    assert reply["code"] == 413
    assert sent < UPLOAD_MAX_BYTES + 24 * (1 << 20)  # the server stopped near the cap
    assert peak < 20 * (1 << 20)
    rejected = emu.audit().rejected_uploads
    assert len(rejected) == 1
    assert UPLOAD_MAX_BYTES < rejected[0].bytes_received <= UPLOAD_MAX_BYTES + (1 << 20)
    with anyio.fail_after(30):  # hang guard: the server finishes its short drain after answering
        while emu.audit().count("UploadAsset", 413) != 1:
            await anyio.sleep(0.05)
    assert not list((emu_root(emu) / "blobs").iterdir())  # the partial file is gone


async def test_declared_oversize_is_refused_before_reading(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    sent = 0

    class Huge:
        """A body that claims 300 MB but is produced lazily."""

        async def gen(self) -> AsyncIterator[bytes]:
            nonlocal sent
            chunk = b"\0" * (1 << 20)
            for _ in range(300):
                sent += len(chunk)
                yield chunk

    headers = {
        **bearer(emu.account),
        "Content-Type": "multipart/form-data; boundary=B0UND",
        "Content-Length": str(300 * (1 << 20)),
    }
    async with session.post(emu.chenyu_url + "/assets", data=Huge().gen(), headers=headers) as r:
        assert r.status == 413
    assert sent < 32 * (1 << 20)
    assert emu.audit().rejected_uploads[0].bytes_received == 0


async def test_exactly_the_cap_is_accepted(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with Emulator(config(data_dir=tmp_path)) as emu:
        chunk = b"\1" * (1 << 20)

        async def body() -> AsyncIterator[bytes]:
            yield (
                b'--B0UND\r\nContent-Disposition: form-data; name="file"; filename="max.bin"\r\n'
                b"\r\n"
            )
            for _ in range(UPLOAD_MAX_BYTES // len(chunk)):
                yield chunk
            yield b"\r\n--B0UND--\r\n"

        headers = {**bearer(emu.account), "Content-Type": "multipart/form-data; boundary=B0UND"}
        async with session.post(emu.chenyu_url + "/assets", data=body(), headers=headers) as r:
            reply = await r.json()
            assert r.status == 200, reply
        assert reply["data"]["size_bytes"] == UPLOAD_MAX_BYTES


async def test_client_disconnect_mid_upload_leaves_nothing(emu: Emulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    head = (
        "POST /api/open/v2/assets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {emu.account.api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=B0UND\r\n"
        f"Content-Length: {50 * (1 << 20)}\r\n\r\n"
        '--B0UND\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n'
    )
    writer.write(head.encode())
    for _ in range(8):
        writer.write(b"\0" * (1 << 20))
        await writer.drain()
    writer.transport.abort()
    with anyio.fail_after(30):  # hang guard
        while not emu.audit().requests:
            await anyio.sleep(0.02)
    record = emu.audit().requests[0]
    assert (record.status, record.code) == (0, "client_disconnected")
    assert not list((emu_root(emu) / "blobs").iterdir())
    del reader
