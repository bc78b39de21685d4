"""Bounded-read parsers of media headers (Pillow formats, WebP, HEIF, MP4/MOV, WAV, MP3)
for :mod:`chenyu_assets.media`. Every read is a seek plus a small read: a 100 MB file is
never loaded. Errors are ``MediaCheckError`` with a stable reason."""

from __future__ import annotations

import struct
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Final

from PIL import Image

from chenyu_assets.errors import MediaCheckError

MiB: Final = 1024 * 1024
#: Chenyu's upload cap (api-reference §1, "at most 100 MB"), read as MiB like every "MB" here.
#: If the server counts decimal megabytes, a file between 100,000,000 and 104,857,600 bytes
#: passes this pre-flight and gets a 413 (PayloadTooLargeError) from the server instead.
_MP3_KBPS: Final[Mapping[tuple[bool, int], tuple[int, ...]]] = {
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # and layer III
}
_MP3_RATES: Final[Mapping[int, tuple[int, int, int]]] = {
    3: (44100, 48000, 32000),  # MPEG-1
    2: (22050, 24000, 16000),  # MPEG-2
    0: (11025, 12000, 8000),  # MPEG-2.5
}

_PIL_LOCK: Final = threading.Lock()  # catch_warnings() is process-global before Python 3.14


def fail(reason: str, message: str) -> MediaCheckError:
    return MediaCheckError(message, reason=reason)


def mp3_frame(b: bytes) -> tuple[bool, int, int, int, int] | None:
    """(is MPEG-1, layer bits, kbit/s, sample rate, channel mode) of a frame header, or None."""
    if len(b) < 4 or b[0] != 0xFF or b[1] & 0xE0 != 0xE0:
        return None
    version, layer, kbps_i, rate_i = (b[1] >> 3) & 3, (b[1] >> 1) & 3, b[2] >> 4, (b[2] >> 2) & 3
    if version == 1 or layer == 0 or kbps_i in (0, 15) or rate_i == 3:
        return None
    mpeg1 = version == 3
    return (
        mpeg1,
        layer,
        _MP3_KBPS[mpeg1, layer if mpeg1 or layer == 3 else 2][kbps_i],
        _MP3_RATES[version][rate_i],
        b[3] >> 6,
    )


def read_at(f: IO[bytes], pos: int, n: int) -> bytes:
    f.seek(pos)
    data = f.read(n)
    if len(data) != n:
        raise fail("corrupt", f"unexpected end of data at byte {pos + len(data)}")
    return data


def _read_in(f: IO[bytes], box: tuple[int, int], offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset`` into a box's payload ``(start, end)``; corrupt if past its end."""
    start, end = box
    if start + offset + n > end:
        raise fail("corrupt", f"a field at byte {start + offset} runs past the end of its box")
    return read_at(f, start + offset, n)


def _tail(f: IO[bytes], size: int) -> bytes:
    """The last bytes, without trailing NUL padding some writers add."""
    n = min(size, 64)
    return read_at(f, size - n, n).rstrip(b"\x00")


def _bomb_check(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise fail("decompression_bomb", f"{width}x{height} is over {limit} pixels")


def probe_pillow(f: IO[bytes], size: int, fmt: str) -> tuple[int, int]:
    f.seek(0)
    try:
        with _PIL_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's remarks on odd files are not ours to print
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f, formats=[fmt.upper()]) as im:  # header only
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise fail("decompression_bomb", str(exc)) from None
    except Exception as exc:  # untrusted input: any Pillow failure means a broken file
        if "Decompressed data too large" in str(exc):  # a text/ICC chunk bomb
            raise fail("decompression_bomb", str(exc)) from None
        raise fail("corrupt", f"{fmt}: {type(exc).__name__}: {exc}") from None
    tail = _tail(f, size)
    if fmt == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise fail("corrupt", "JPEG does not end with an EOI marker (truncated?)")
    if fmt == "png" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise fail("corrupt", "PNG does not end with an IEND chunk (truncated?)")
    return width, height


def probe_webp(f: IO[bytes], size: int) -> tuple[int, int]:
    if int.from_bytes(read_at(f, 4, 4), "little") + 8 > size:
        raise fail("corrupt", "WebP is shorter than its RIFF header says (truncated?)")
    b = read_at(f, 12, min(18, size - 12))
    if b[:4] == b"VP8X" and len(b) >= 18:
        width, height = (
            1 + int.from_bytes(b[12:15], "little"),
            1 + int.from_bytes(b[15:18], "little"),
        )
    elif b[:4] == b"VP8L" and len(b) >= 13 and b[8] == 0x2F:
        bits = int.from_bytes(b[9:13], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif b[:4] == b"VP8 " and len(b) >= 18 and b[11:14] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", b[14:18])
        width, height = width & 0x3FFF, height & 0x3FFF
    else:
        raise fail("corrupt", "WebP has no VP8/VP8L/VP8X header")
    _bomb_check(width, height)
    return width, height


_MAX_BOXES: Final = 100_000


def _walk(
    f: IO[bytes], size: int, containers: Mapping[bytes, int]
) -> Iterator[tuple[tuple[bytes, ...], tuple[int, int]]]:
    """ISO-BMFF boxes depth-first, iteratively: ``(path of types, (payload start, box end))``.

    Descends only into ``containers`` (value: bytes to skip before children, 4 for a FullBox).
    A box running past its parent (or the file) is ``corrupt``.
    """
    stack: list[tuple[tuple[bytes, ...], int, int]] = [((), 0, size)]
    seen = 0
    while stack:
        path, pos, end = stack.pop()
        while pos + 8 <= end:
            box_size, box = struct.unpack(">I4s", read_at(f, pos, 8))
            header = 8
            if box_size == 1:
                box_size, header = struct.unpack(">Q", read_at(f, pos + 8, 8))[0], 16
            elif box_size == 0:
                box_size = end - pos
            seen += 1
            if seen > _MAX_BOXES:
                raise fail("corrupt", f"more than {_MAX_BOXES} boxes")
            if box_size < header or pos + box_size > end:
                where = b"/".join((*path, box)).decode("latin-1")
                raise fail("corrupt", f"box {where} at byte {pos} overruns its container")
            yield (*path, box), (pos + header, pos + box_size)
            if box in containers:
                stack.append((path, pos + box_size, end))
                path, pos, end = (*path, box), pos + header + containers[box], pos + box_size
            else:
                pos += box_size


def probe_heif(f: IO[bytes], size: int) -> tuple[int, int]:
    """The largest ``ispe`` (image spatial extent) under meta/iprp/ipco: the primary image
    or its grid, not a thumbnail or tile."""
    best: tuple[int, int] | None = None
    for path, payload in _walk(f, size, {b"meta": 4, b"iprp": 0, b"ipco": 0}):
        if path[-1] == b"ispe":
            width, height = struct.unpack(">II", _read_in(f, payload, 4, 8))
            if best is None or width * height > best[0] * best[1]:
                best = width, height
    if best is None:
        raise fail("corrupt", "HEIF has no image size (ispe) property")
    _bomb_check(*best)
    return best


@dataclass(slots=True)
class _Track:
    handler: bytes = b""
    width: int = 0
    height: int = 0
    timescale: int = 0
    duration: int = 0
    samples: int = 0
    ticks: int = 0


_MP4_CONTAINERS: Final = {b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"stbl": 0}
_STTS_MAX_ENTRIES: Final = 16_384  # enough for fps; a longer table is sampled from its start


def _timescale_duration(f: IO[bytes], box: tuple[int, int]) -> tuple[int, int]:
    """mvhd and mdhd share a layout: version, times, timescale, duration (32 or 64 bit)."""
    v1 = _read_in(f, box, 0, 1)[0] == 1
    raw = _read_in(f, box, 20, 12) if v1 else _read_in(f, box, 12, 8)
    scale, duration = struct.unpack(">IQ" if v1 else ">II", raw)
    return scale, duration


def probe_mp4(f: IO[bytes], size: int) -> tuple[int, int, float, float | None]:
    movie_scale = movie_duration = 0
    tracks: list[_Track] = []
    moov = False
    for path, box in _walk(f, size, _MP4_CONTAINERS):
        kind, parent = path[-1], path[-2] if len(path) > 1 else b""
        if kind == b"moov":
            moov = True
        elif kind == b"mvhd":
            movie_scale, movie_duration = _timescale_duration(f, box)
        elif kind == b"trak":
            tracks.append(_Track())
        elif not tracks or b"trak" not in path:
            continue
        elif kind == b"tkhd":  # 16.16 fixed-point size; the rotation matrix is ignored, as
            # every rule is symmetric in width and height
            offset = 88 if _read_in(f, box, 0, 1)[0] == 1 else 76
            width, height = struct.unpack(">II", _read_in(f, box, offset, 8))
            tracks[-1].width, tracks[-1].height = width >> 16, height >> 16
        elif kind == b"hdlr" and parent == b"mdia":
            tracks[-1].handler = _read_in(f, box, 8, 4)
        elif kind == b"mdhd":
            tracks[-1].timescale, tracks[-1].duration = _timescale_duration(f, box)
        elif kind == b"stsd" and tracks[-1].handler == b"vide" and not tracks[-1].width:
            tracks[-1].width, tracks[-1].height = struct.unpack(">HH", _read_in(f, box, 40, 4))
        elif kind == b"stts":
            count = min(int.from_bytes(_read_in(f, box, 4, 4), "big"), _STTS_MAX_ENTRIES)
            for n, delta in struct.iter_unpack(">II", _read_in(f, box, 8, 8 * count)):
                tracks[-1].samples += n
                tracks[-1].ticks += n * delta
    if not moov:
        raise fail("corrupt", "no moov box (truncated or incomplete MP4/MOV)")
    video = next((t for t in tracks if t.handler == b"vide"), None)
    if video is None:
        raise fail("no_video_track", "the MP4/MOV has no video track")
    if not (video.width and video.height):
        raise fail("corrupt", "the video track has no width/height")
    if movie_scale and movie_duration:
        duration = movie_duration / movie_scale
    elif video.timescale and video.duration:
        duration = video.duration / video.timescale
    else:
        raise fail("corrupt", "the MP4/MOV does not state its duration")
    fps = video.samples * video.timescale / video.ticks if video.ticks and video.timescale else None
    return video.width, video.height, duration, fps


def probe_wav(f: IO[bytes], size: int) -> float:
    pos, byte_rate = 12, 0
    for _ in range(1024):  # chunks: fmt, fact, LIST, ..., data
        if pos + 8 > size:
            break
        header = read_at(f, pos, 8)
        chunk, length = header[:4], int.from_bytes(header[4:], "little")
        if chunk == b"fmt " and length >= 16:
            byte_rate = int.from_bytes(read_at(f, pos + 16, 4), "little")
        elif chunk == b"data":
            available = size - pos - 8
            if length in (0, 0xFFFFFFFF):  # streamed: "until the end of the file"
                length = available
            if not byte_rate or length > available:
                raise fail("corrupt", "WAV data chunk is truncated or has no fmt before it")
            return length / byte_rate
        pos += 8 + length + (length & 1)
    raise fail("corrupt", "WAV has no data chunk")


def probe_mp3(f: IO[bytes], size: int) -> float:
    """Duration from a Xing/Info frame count, else the first frame's bitrate (CBR)."""
    start, end = 0, size
    head = read_at(f, 0, min(size, 10))
    if head[:3] == b"ID3" and len(head) == 10:
        id3_size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        start = 10 + id3_size + (10 if head[5] & 0x10 else 0)
    if size >= 128 and read_at(f, size - 128, 3) == b"TAG":
        end -= 128  # ID3v1 trailer
    window = read_at(f, start, max(0, min(end - start, 64 * 1024)))
    i, frame = next(
        ((i, fr) for i in range(len(window) - 3) if (fr := mp3_frame(window[i : i + 4]))),
        (0, None),
    )
    if frame is None:
        raise fail("corrupt", "no MPEG audio frame found")
    mpeg1, layer, kbps, rate, mode = frame
    per_frame = 384 if layer == 3 else (1152 if mpeg1 or layer == 2 else 576)
    xing = i + (4 + (32 if mode != 3 else 17) if mpeg1 else 4 + (17 if mode != 3 else 9))
    tag = window[xing : xing + 12]
    if tag[:4] in (b"Xing", b"Info") and len(tag) == 12 and tag[7] & 1:
        return int.from_bytes(tag[8:12], "big") * per_frame / rate
    return (end - start - i) * 8 / (kbps * 1000)
