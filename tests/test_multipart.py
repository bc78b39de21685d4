"""MultipartFile without a network: exact length, fresh body per attempt, honest progress."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import cast

import pytest

from chenyu_assets._core.multipart import MultipartFile, snapshot
from chenyu_assets.errors import UploadError

pytestmark = pytest.mark.anyio


async def collect(body: MultipartFile, limit: int | None = None) -> bytes:
    """Read a body like a transport would; stop after ``limit`` parts (an aborted attempt)."""
    parts = []
    stream = cast(AsyncGenerator[bytes, None], body.stream())
    try:
        async for part in stream:
            parts.append(part)
            if limit is not None and len(parts) >= limit:
                break
    finally:
        await stream.aclose()
    return b"".join(parts)


def make(tmp_path: Path, size: int, name: str = "clip.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


async def test_body_is_well_formed_and_exactly_content_length(tmp_path: Path) -> None:
    path = make(tmp_path, 10_000)
    body = MultipartFile(
        snapshot(path),
        filename="clip.bin",
        content_type="application/octet-stream",
        fields=[("media_type", "file"), ("ttl_hours", "48")],
        chunk_size=1024,
    )
    data = await collect(body)
    assert len(data) == body.content_length == int(body.headers()["Content-Length"])
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {body.content_type}\r\n\r\n".encode() + data
    )
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == [
        "media_type",
        "ttl_hours",
        "file",
    ]
    assert parts[0].get_content() == "file"
    assert parts[2].get_filename() == "clip.bin"
    assert parts[2].get_payload(decode=True) == path.read_bytes()


async def test_every_attempt_gets_a_fresh_identical_body(tmp_path: Path) -> None:
    path = make(tmp_path, 5000)
    body = MultipartFile(snapshot(path), chunk_size=1024)
    await collect(body, limit=2)  # an attempt that broke off early
    assert await collect(body) == await collect(body)


async def test_progress_is_rewound_when_an_attempt_restarts(tmp_path: Path) -> None:
    path = make(tmp_path, 10 * 1024)
    deltas: list[int] = []
    body = MultipartFile(snapshot(path), chunk_size=1024, on_progress=deltas.append)
    await collect(body, limit=4)  # head + 3 chunks; progress reports the chunks consumed
    sent_before = sum(deltas)
    assert 0 < sent_before < 10 * 1024
    await collect(body)
    assert -sent_before in deltas
    assert sum(deltas) == 10 * 1024
    assert all(d > 0 for d in deltas if d != -sent_before)


async def test_non_ascii_filename_gets_an_rfc5987_twin(tmp_path: Path) -> None:
    path = make(tmp_path, 2000)
    body = MultipartFile(snapshot(path), filename='照片 "1".png')
    head = (await collect(body, limit=1)).decode()
    assert 'filename="__ \\"1\\".png"' in head
    assert "filename*=utf-8''%E7%85%A7%E7%89%87%20%221%22.png" in head


async def test_file_vanishing_after_snapshot_is_an_upload_error(tmp_path: Path) -> None:
    path = make(tmp_path, 2000)
    body = MultipartFile(snapshot(path))
    path.unlink()
    with pytest.raises(UploadError) as caught:
        await collect(body)
    assert caught.value.reason == "file_changed"


async def test_file_growing_after_snapshot_is_an_upload_error(tmp_path: Path) -> None:
    path = make(tmp_path, 2000)
    body = MultipartFile(snapshot(path))
    with path.open("ab") as f:
        f.write(b"x")
    with pytest.raises(UploadError) as caught:
        await collect(body)
    assert caught.value.reason == "file_changed"


def test_tiny_chunks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        MultipartFile(snapshot(make(tmp_path, 10)), chunk_size=512)
