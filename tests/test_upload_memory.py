"""Upload memory: a streamed body holds one chunk per upload, whatever the server's pace.

A server of ours on 127.0.0.1 reads each upload slowly (small reads, a yield between them,
a tiny receive buffer), so the client's socket stays full and every chunk waits in user
space until the server takes it. ``tracemalloc`` then counts the bytes the process holds
at its peak: Python allocations, not RSS, so the verdict depends neither on the allocator
nor on the machine's speed. Before the fix each upload held about three chunks at once
(the one written, the transport's copy of it, the next one being read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chenyu_assets._core.multipart import MultipartFile, snapshot
from chenyu_assets._core.transport import Transport

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
CHUNK = 2 * MiB
SIZE = 8 * MiB
UPLOADS = 3


@contextlib.asynccontextmanager
async def slow_reader() -> AsyncIterator[tuple[str, list[int]]]:
    """``(url, body bytes received per upload)``: reads each body 4 KiB at a time."""
    received: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode().split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        got = 0
        while got < length:
            piece = await reader.read(min(4096, length - got))
            if not piece:
                break
            got += len(piece)
            await asyncio.sleep(0)  # let the clients run: they find a full socket
        received.append(got)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # inherited by accepts
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(handle, sock=sock, limit=16 * 1024)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/upload", received
    finally:
        server.close()
        await server.wait_closed()


async def test_each_streamed_upload_holds_at_most_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "clip.bin"
    with path.open("wb") as f:
        for _ in range(SIZE // MiB):
            f.write(os.urandom(MiB))
    bodies = [MultipartFile(snapshot(path), chunk_size=CHUNK) for _ in range(UPLOADS)]
    async with slow_reader() as (url, received), Transport() as transport:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        transport.request("POST", url, headers=b.headers(), data=b.stream())
                        for b in bodies
                    )
                ),
                timeout=60,  # a hang guard only
            )
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert [a.status for a in answers] == [200] * UPLOADS
    assert received == [b.content_length for b in bodies]  # every byte went through
    # One chunk per upload, plus a few 64 KiB slices pending in the transport and the
    # server's small buffers (measured: 7.2 MiB in all); two chunks per upload are 12 MiB.
    bound = UPLOADS * (CHUNK + MiB)
    assert peak < bound, f"{peak / MiB:.2f} MiB held by {UPLOADS} uploads (bound {bound / MiB})"
