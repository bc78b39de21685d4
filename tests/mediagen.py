"""Small, valid test media made on the fly (and a few broken variants).

Every function returns the file's bytes, except the ``big_*`` writers, which make a file of an
exact large size on disk as a sparse file (a private PNG chunk / an MP4 ``mdat`` of zeros), so
memory and disk use stay small. Images come from Pillow; MP4, HEIC and MP3 are assembled
here box by box / frame by frame, just enough to satisfy ``chenyu_assets.media`` and look
sane to other tools (no real codec payload).
"""

from __future__ import annotations

import io
import os
import struct
import wave
import zlib
from pathlib import Path

from PIL import Image

__all__ = [
    "big_mp4",
    "big_png",
    "heic",
    "html",
    "image",
    "jpeg",
    "mp3",
    "mp4",
    "png",
    "png_declared",
    "truncated",
    "wav",
    "webp_declared",
    "write",
]

_COLOR = (90, 140, 200)


def image(fmt: str, width: int, height: int, *, mode: str = "RGB") -> bytes:
    """A solid-colour image in any format Pillow writes (``PNG``, ``JPEG``, ``WEBP``, ``BMP``,
    ``TIFF``, ``GIF``...)."""
    color: int | tuple[int, ...] = _COLOR if mode == "RGB" else 128
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format=fmt)
    return buf.getvalue()


def png(width: int, height: int, *, mode: str = "RGB") -> bytes:
    """A solid-colour PNG (a few KB even at 5999×2500; ``mode="L"`` is faster to make)."""
    return image("PNG", width, height, mode=mode)


def jpeg(width: int, height: int, quality: int = 80) -> bytes:
    """A solid-colour baseline JPEG ending with its EOI marker."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), _COLOR).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I4s", len(data), kind) + data + struct.pack(">I", crc)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = _chunk(b"IEND", b"")


def png_declared(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width``×``height`` but whose IDAT holds one tiny row: the
    shape of a decompression bomb, without paying to compress gigabytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return _PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _IEND


def webp_declared(width: int, height: int) -> bytes:
    """A WebP (extended, VP8X) header declaring ``width``×``height`` with no image data."""
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def html() -> bytes:
    """An HTML error page, the usual thing served under a media URL by mistake."""
    return b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>\n"


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of ``data`` (at least one byte): a cut-off download."""
    return data[: max(1, int(len(data) * keep))]


def write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


# --- ISO-BMFF (MP4 / MOV / HEIC) -------------------------------------------------------------


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", flags), *payload)  # version 0


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    return _box(b"ftyp", major, struct.pack(">I", 0x200), major, *compatible)


def _track(
    width: int, height: int, n: int, timing: tuple[int, int, int], handler: bytes, offset: int
) -> bytes:
    scale, delta, movie_ms = timing
    tkhd = _full_box(
        b"tkhd",
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, movie_ms),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0 if handler == b"vide" else 0x100, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16) if handler == b"vide" else bytes(8),
    )
    mdhd = _full_box(b"mdhd", 0, struct.pack(">IIIIHH", 0, 0, scale, n * delta, 0x55C4, 0))
    name = b"VideoHandler\0" if handler == b"vide" else b"SoundHandler\0"
    hdlr = _full_box(b"hdlr", 0, bytes(4), handler, bytes(12), name)
    if handler == b"vide":
        media_header = _full_box(b"vmhd", 1, bytes(8))
        entry = _box(
            b"avc1",
            bytes(6),
            struct.pack(">H", 1),
            bytes(16),
            struct.pack(">HHII", width, height, 0x480000, 0x480000),
            bytes(4),
            struct.pack(">H", 1),
            bytes(32),
            struct.pack(">Hh", 0x18, -1),
        )
    else:
        media_header = _full_box(b"smhd", 0, bytes(4))
        entry = _box(b"mp4a", bytes(6), struct.pack(">HQHHHHI", 1, 0, 2, 16, 0, 0, 48000 << 16))
    dinf = _box(b"dinf", _full_box(b"dref", 0, struct.pack(">I", 1), _full_box(b"url ", 1)))
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, struct.pack(">I", 1), entry),
        _full_box(b"stts", 0, struct.pack(">III", 1, n, delta)),
        _full_box(b"stsc", 0, struct.pack(">IIII", 1, 1, n, 1)),
        _full_box(b"stsz", 0, struct.pack(">II", 0, n), b"\x00\x00\x00\x10" * n),
        _full_box(b"stco", 0, struct.pack(">II", 1, offset)),  # where the mdat payload starts
    )
    minf = _box(b"minf", media_header, dinf, stbl)
    return _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))


def mp4(
    width: int,
    height: int,
    duration_s: float,
    fps: float = 30,
    *,
    brand: bytes = b"isom",
    handler: bytes = b"vide",
    moov_first: bool = True,
) -> bytes:
    """A structurally valid MP4 (``brand=b"qt  "`` for a MOV): ftyp, moov(mvhd, trak(tkhd,
    mdia(mdhd, hdlr, minf(vmhd, dinf, stbl(stsd, stts, stsc, stsz, stco))))), mdat.

    One track of ``round(duration_s * fps)`` 16-byte samples; the media timescale is
    ``fps * 1000`` with a delta of 1000, so a fractional fps (29.97) is exact.
    ``handler=b"soun"`` makes an audio-only file; ``moov_first=False`` puts moov after mdat.
    """
    n = max(1, round(duration_s * fps))
    movie_ms = round(duration_s * 1000)
    mvhd = _full_box(
        b"mvhd",
        0,
        struct.pack(">IIIIIH", 0, 0, 1000, movie_ms, 0x10000, 0x100),
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", 2),
    )
    timing = (round(fps * 1000), 1000, movie_ms)
    ftyp = _ftyp(brand, *((b"qt  ",) if brand == b"qt  " else (b"isom", b"mp41")))
    mdat = _box(b"mdat", bytes(16 * n))
    if not moov_first:
        moov = _box(b"moov", mvhd, _track(width, height, n, timing, handler, len(ftyp) + 8))
        return ftyp + mdat + moov
    moov_size = len(_box(b"moov", mvhd, _track(width, height, n, timing, handler, 0)))
    offset = len(ftyp) + moov_size + 8
    return ftyp + _box(b"moov", mvhd, _track(width, height, n, timing, handler, offset)) + mdat


def heic(width: int, height: int, *, brand: bytes = b"heic") -> bytes:
    """A HEIF container with one coded item whose ``ispe`` says ``width``×``height``
    (``brand=b"mif1"`` for generic HEIF, ``b"avif"`` for AVIF). The item data is zeros."""
    ispe = _full_box(b"ispe", 0, struct.pack(">II", width, height))
    ipma = _full_box(b"ipma", 0, struct.pack(">IHBB", 1, 1, 1, 0x81))
    meta = _full_box(
        b"meta",
        0,
        _full_box(b"hdlr", 0, bytes(4), b"pict", bytes(12), b"\0"),
        _full_box(b"pitm", 0, struct.pack(">H", 1)),
        _box(b"iprp", _box(b"ipco", ispe), ipma),
    )
    return _ftyp(brand, b"mif1", brand) + meta + _box(b"mdat", bytes(32))


# --- audio -----------------------------------------------------------------------------------


def wav(duration_s: float, rate: int = 8000) -> bytes:
    """A silent 16-bit mono PCM WAV (written by the stdlib ``wave`` module)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * round(duration_s * rate)))
    return buf.getvalue()


# MPEG-1 Layer III, 128 kbit/s, 48 kHz, stereo, no CRC: 384-byte frames of 24 ms, no padding.
_MP3_HEADER = b"\xff\xfb\x94\x00"
_MP3_FRAME = 384


def mp3(duration_s: float, *, xing: bool = False, id3: bool = False) -> bytes:
    """A CBR MP3 of silent-looking frames (zeros after each header), 24 ms a frame.

    ``xing=True`` starts with a Xing frame carrying the frame count (as LAME writes for VBR);
    ``id3=True`` prepends an ID3v2 tag with 20 bytes of padding.
    """
    n = max(1, round(duration_s / 0.024))
    frame = _MP3_HEADER + bytes(_MP3_FRAME - 4)
    out = b"ID3\x04\x00\x00\x00\x00\x00\x14" + bytes(20) if id3 else b""
    if xing:
        info = b"Xing" + struct.pack(">II", 1, n)
        out += _MP3_HEADER + bytes(32) + info + bytes(_MP3_FRAME - 36 - len(info))
    return out + frame * n


# --- big sparse files ------------------------------------------------------------------------


def big_png(path: str | os.PathLike[str], size: int, width: int = 640, height: int = 480) -> Path:
    """A valid PNG of exactly ``size`` bytes: a small image plus a private ``juNk`` chunk of
    zeros before IEND, written sparsely."""
    small = png(width, height)[: -len(_IEND)]
    length = size - len(small) - 12 - len(_IEND)
    if length < 0:
        raise ValueError(f"size {size} is too small for a {width}x{height} PNG")
    crc = zlib.crc32(b"juNk")
    for done in range(0, length, 1 << 20):
        crc = zlib.crc32(bytes(min(1 << 20, length - done)), crc)
    p = Path(path)
    with p.open("wb") as f:
        f.write(small + struct.pack(">I4s", length, b"juNk"))
        f.seek(length, os.SEEK_CUR)
        f.write(struct.pack(">I", crc) + _IEND)
    return p


def big_mp4(path: str | os.PathLike[str], size: int, width: int = 1280, height: int = 720) -> Path:
    """A valid-looking 5 s MP4 of exactly ``size`` bytes: ftyp, moov, then a sparse mdat."""
    head = mp4(width, height, 5)
    head = head[: head.rindex(b"mdat") - 4]
    mdat_size = size - len(head)
    if mdat_size < 8:
        raise ValueError(f"size {size} is too small for an MP4")
    p = Path(path)
    with p.open("wb") as f:
        f.write(head + struct.pack(">I4s", mdat_size, b"mdat"))
        f.truncate(size)
    return p
