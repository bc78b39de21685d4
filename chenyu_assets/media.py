"""Local media checks against the service's published limits: one table, SDK and emulator.

The SDK calls :func:`check_file` before an upload or a CreateAsset (pre-flight); the emulator
runs the same functions on what it downloads and puts :func:`vendor_code` of the reason on the
``Failed`` asset. Both agree by construction: a limit changes in :data:`LIMITS` and nowhere else.

Probing reads headers only, with seeks and bounded reads, never a whole file: Pillow's lazy
``Image.open`` for jpeg/png/bmp/tiff/gif (pixels are never decoded) plus a tail check (JPEG
ends with EOI, PNG with IEND); the RIFF header for WebP (Pillow would read it whole); a small
ISO-BMFF box walker for MP4/MOV (mvhd, tkhd, hdlr, mdhd, stts) and HEIC/HEIF (ispe); RIFF
chunks for WAV; the first frame header for MP3 (Xing/Info frame count, else CBR bitrate).

``MediaCheckError.reason`` is a stable string: the keys of :data:`VENDOR_CODES`, each
explained there.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import IO, Final, Literal

from PIL import Image

from .errors import MediaCheckError

MiB: Final = 1024 * 1024
#: Chenyu's upload cap (api-reference §1, "at most 100 MB"), read as MiB like every "MB" here.
#: If the server counts decimal megabytes, a file between 100,000,000 and 104,857,600 bytes
#: passes this pre-flight and gets a 413 (PayloadTooLargeError) from the server instead.
UPLOAD_MAX_BYTES: Final = 100 * MiB

AssetType = Literal["Image", "Video", "Audio"]


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What one asset type accepts. ``None`` means "no such rule" for that type.

    Open intervals exclude both ends; ranges include both ends. ``max_bytes`` is the largest
    accepted size (inclusive).
    """

    formats: frozenset[str]
    max_bytes: int
    ratio_open_interval: tuple[float, float] | None = None
    side_open_interval: tuple[int, int] | None = None
    pixels_range: tuple[int, int] | None = None
    duration_range: tuple[float, float] | None = None
    fps_range: tuple[float, float] | None = None


#: api-reference §2.6. Image rules are the vendor's; video and audio rules are third-party
#: (newer BytePlus clients allow video of 2–30 s and 200 MB: change them here, only here).
LIMITS: Final[Mapping[str, MediaLimits]] = MappingProxyType(
    {
        "Image": MediaLimits(
            formats=frozenset({"jpeg", "png", "webp", "bmp", "tiff", "gif", "heic", "heif"}),
            max_bytes=30 * MiB - 1,  # "under 30 MB": exactly 30 MiB is refused
            ratio_open_interval=(0.4, 2.5),
            side_open_interval=(300, 6000),
        ),
        "Video": MediaLimits(
            formats=frozenset({"mp4", "mov"}),
            max_bytes=50 * MiB,
            ratio_open_interval=(0.4, 2.5),
            side_open_interval=(300, 6000),
            pixels_range=(409_600, 2_086_876),
            duration_range=(2.0, 15.0),
            fps_range=(24.0, 60.0),
        ),
        "Audio": MediaLimits(
            formats=frozenset({"wav", "mp3"}), max_bytes=15 * MiB, duration_range=(2.0, 15.0)
        ),
    }
)

#: Every ``MediaCheckError.reason`` -> the Ark error code the emulator puts on a Failed asset.
VENDOR_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "unrecognized": "InvalidParameter.UnsupportedMediaFormat",  # unknown bytes (HTML as .png)
        "empty": "InvalidParameter.EmptyFile",  # zero bytes
        "corrupt": "InvalidParameter.CorruptedMedia",  # no EOI/IEND, box past the end, Pillow error
        "decompression_bomb": "InvalidParameter.ImagePixels",  # > Image.MAX_IMAGE_PIXELS
        "type_mismatch": "InvalidParameter.AssetType",  # asked Image, the file is a Video
        "format": "InvalidParameter.UnsupportedMediaFormat",  # known, refused: AVIF, AVI, 3GP, M4A
        "too_large": "InvalidParameter.FileSize",  # over the type's max_bytes
        "image_ratio": "InvalidParameter.ImageRatio",  # width/height outside the open interval
        "image_side": "InvalidParameter.ImageSize",  # a side outside the open interval
        "video_ratio": "InvalidParameter.VideoRatio",
        "video_side": "InvalidParameter.VideoSize",
        "video_pixels": "InvalidParameter.VideoPixels",  # width*height outside the range
        "duration": "InvalidParameter.Duration",  # seconds outside the range (video, audio)
        "fps": "InvalidParameter.FrameRate",  # outside [24, 60]: 23.976 is refused
        "no_video_track": "InvalidParameter.VideoTrack",  # an MP4/MOV without video
    }
)


def vendor_code(reason: str) -> str:
    """The Ark error code for a reason; plain ``InvalidParameter`` for one not in the table."""
    return VENDOR_CODES.get(reason, "InvalidParameter")


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What probing found. ``fps`` is None when the container does not tell it cheaply."""

    asset_type: str
    format: str
    mime_type: str
    size: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: float | None = None


def _fail(reason: str, message: str) -> MediaCheckError:
    return MediaCheckError(message, reason=reason)


# --- sniffing -------------------------------------------------------------------------------

_Kind = tuple[str, str, str]
_HEIC: Final = ("Image", "heic", "image/heic")
_MP4: Final = ("Video", "mp4", "video/mp4")
_MOV: Final = ("Video", "mov", "video/quicktime")
#: (offset, magic bytes, kind), tried in order; ISO-BMFF (ftyp), BMP and MP3 need more logic.
_MAGIC: Final[tuple[tuple[int, bytes, _Kind], ...]] = (
    (0, b"\xff\xd8\xff", ("Image", "jpeg", "image/jpeg")),
    (0, b"\x89PNG\r\n\x1a\n", ("Image", "png", "image/png")),
    (0, b"GIF87a", ("Image", "gif", "image/gif")),
    (0, b"GIF89a", ("Image", "gif", "image/gif")),
    *((0, magic, ("Image", "tiff", "image/tiff")) for magic in (b"II*\0", b"MM\0*")),
    *((0, magic, ("Image", "tiff", "image/tiff")) for magic in (b"II+\0", b"MM\0+")),  # BigTIFF
    (8, b"WEBP", ("Image", "webp", "image/webp")),  # each RIFF form: after b"RIFF" and a size
    (8, b"WAVE", ("Audio", "wav", "audio/wav")),
    (8, b"AVI ", ("Video", "avi", "video/x-msvideo")),
    *((4, box, _MOV) for box in (b"moov", b"mdat", b"wide", b"pnot")),  # QuickTime before ftyp
)
_HEIC_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm"})
_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_MP4_BRANDS: Final = frozenset(
    {b"iso%d" % i for i in range(2, 10)}
    | {b"isom", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash", b"mmp4", b"f4v ", b"MSNV", b"XAVC"}
)
_BMP_DIB_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# MPEG audio: bitrates (kbit/s) by (MPEG-1?, layer bits) and sample rates by version bits.
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


def _mp3_frame(b: bytes) -> tuple[bool, int, int, int, int] | None:
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


def _sniff_ftyp(head: bytes) -> _Kind | None:
    end = min(len(head), int.from_bytes(head[:4], "big"))
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, end - 3, 4)]
    major, found = brands[0], set(brands)
    if major == b"qt  ":
        return _MOV
    if major in (b"M4A ", b"M4B ", b"M4P "):
        return ("Audio", "m4a", "audio/mp4")
    if major.startswith((b"3gp", b"3g2")):
        return ("Video", "3gp", "video/3gpp")
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and found & _AVIF_BRANDS):
        return ("Image", "avif", "image/avif")
    if major in _HEIC_BRANDS or (major in _HEIF_BRANDS and found & _HEIC_BRANDS):
        return _HEIC
    if major in _HEIF_BRANDS:
        return ("Image", "heif", "image/heif")
    if found & _MP4_BRANDS:
        return _MP4
    return _HEIC if found & _HEIC_BRANDS else None


def sniff(head: bytes) -> tuple[str, str, str] | None:
    """``(asset_type, format, mime_type)`` from the magic bytes in the first ≤64 bytes.

    None when the bytes match no known format. Formats the service refuses (AVIF, AVI, 3GP,
    M4A) are still recognised, so :func:`check` can say ``format`` rather than ``unrecognized``.
    """
    h = head[:64]
    for offset, magic, kind in _MAGIC:
        if h.startswith(magic, offset) and (offset != 8 or h.startswith(b"RIFF")):
            return kind
    if h[:2] == b"BM" and len(h) >= 18 and int.from_bytes(h[14:18], "little") in _BMP_DIB_SIZES:
        return ("Image", "bmp", "image/bmp")
    if h[4:8] == b"ftyp":
        return _sniff_ftyp(h)
    if h[:3] == b"ID3" or _mp3_frame(h) is not None:
        return ("Audio", "mp3", "audio/mpeg")
    return None


def media_type_for(head: bytes, filename: str | None = None) -> str:
    """Chenyu's ``media_type`` for an upload: ``image``, ``video``, ``audio`` or ``file``.

    The bytes decide: unknown content is ``file`` whatever its name (an HTML page named
    ``.png`` is not an image). The name only refines a generic MP4 called ``.m4a``/``.aac``.
    """
    kind = sniff(head)
    if kind is None:
        return "file"
    if kind[1] == "mp4" and filename and filename.lower().endswith((".m4a", ".m4b", ".aac")):
        return "audio"
    return kind[0].lower()


# --- probing --------------------------------------------------------------------------------


def probe_bytes(data: bytes) -> MediaInfo:
    """Probe media held in memory. Raises MediaCheckError (``empty``, ``unrecognized``,
    ``corrupt``, ``decompression_bomb``, ``no_video_track``)."""
    return _probe(io.BytesIO(data), len(data))


def probe_file(path: str | os.PathLike[str]) -> MediaInfo:
    """Probe a file from its headers (bounded reads and seeks). OSError propagates."""
    with open(path, "rb") as f:
        return _probe(f, os.fstat(f.fileno()).st_size)


_PIL_FORMATS: Final = frozenset({"jpeg", "png", "bmp", "tiff", "gif"})  # Pillow names: upper
_PIL_LOCK: Final = threading.Lock()  # catch_warnings() is process-global before Python 3.14


def _probe(f: IO[bytes], size: int) -> MediaInfo:
    if size == 0:
        raise _fail("empty", "the file is empty")
    head = _read_at(f, 0, min(size, 64))
    kind = sniff(head)
    if kind is None:
        raise _fail("unrecognized", f"not a known media format (starts with {head[:16]!r})")
    asset_type, fmt, mime = kind
    width = height = None
    duration = fps = None
    if fmt in _PIL_FORMATS:
        width, height = _probe_pillow(f, size, fmt)
    elif fmt == "webp":
        width, height = _probe_webp(f, size)
    elif fmt in ("heic", "heif"):
        width, height = _probe_heif(f, size)
    elif fmt in ("mp4", "mov"):
        width, height, duration, fps = _probe_mp4(f, size)
    elif fmt == "wav":
        duration = _probe_wav(f, size)
    elif fmt == "mp3":
        duration = _probe_mp3(f, size)
    return MediaInfo(asset_type, fmt, mime, size, width, height, duration, fps)


def _read_at(f: IO[bytes], pos: int, n: int) -> bytes:
    f.seek(pos)
    data = f.read(n)
    if len(data) != n:
        raise _fail("corrupt", f"unexpected end of data at byte {pos + len(data)}")
    return data


def _read_in(f: IO[bytes], box: tuple[int, int], offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset`` into a box's payload ``(start, end)``; corrupt if past its end."""
    start, end = box
    if start + offset + n > end:
        raise _fail("corrupt", f"a field at byte {start + offset} runs past the end of its box")
    return _read_at(f, start + offset, n)


def _tail(f: IO[bytes], size: int) -> bytes:
    """The last bytes, without trailing NUL padding some writers add."""
    n = min(size, 64)
    return _read_at(f, size - n, n).rstrip(b"\x00")


def _bomb_check(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise _fail("decompression_bomb", f"{width}x{height} is over {limit} pixels")


def _probe_pillow(f: IO[bytes], size: int, fmt: str) -> tuple[int, int]:
    f.seek(0)
    try:
        with _PIL_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's remarks on odd files are not ours to print
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f, formats=[fmt.upper()]) as im:  # header only
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _fail("decompression_bomb", str(exc)) from None
    except Exception as exc:  # untrusted input: any Pillow failure means a broken file
        if "Decompressed data too large" in str(exc):  # a text/ICC chunk bomb
            raise _fail("decompression_bomb", str(exc)) from None
        raise _fail("corrupt", f"{fmt}: {type(exc).__name__}: {exc}") from None
    tail = _tail(f, size)
    if fmt == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise _fail("corrupt", "JPEG does not end with an EOI marker (truncated?)")
    if fmt == "png" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise _fail("corrupt", "PNG does not end with an IEND chunk (truncated?)")
    return width, height


def _probe_webp(f: IO[bytes], size: int) -> tuple[int, int]:
    if int.from_bytes(_read_at(f, 4, 4), "little") + 8 > size:
        raise _fail("corrupt", "WebP is shorter than its RIFF header says (truncated?)")
    b = _read_at(f, 12, min(18, size - 12))
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
        raise _fail("corrupt", "WebP has no VP8/VP8L/VP8X header")
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
            box_size, box = struct.unpack(">I4s", _read_at(f, pos, 8))
            header = 8
            if box_size == 1:
                box_size, header = struct.unpack(">Q", _read_at(f, pos + 8, 8))[0], 16
            elif box_size == 0:
                box_size = end - pos
            seen += 1
            if seen > _MAX_BOXES:
                raise _fail("corrupt", f"more than {_MAX_BOXES} boxes")
            if box_size < header or pos + box_size > end:
                where = b"/".join((*path, box)).decode("latin-1")
                raise _fail("corrupt", f"box {where} at byte {pos} overruns its container")
            yield (*path, box), (pos + header, pos + box_size)
            if box in containers:
                stack.append((path, pos + box_size, end))
                path, pos, end = (*path, box), pos + header + containers[box], pos + box_size
            else:
                pos += box_size


def _probe_heif(f: IO[bytes], size: int) -> tuple[int, int]:
    """The largest ``ispe`` (image spatial extent) under meta/iprp/ipco: the primary image
    or its grid, not a thumbnail or tile."""
    best: tuple[int, int] | None = None
    for path, payload in _walk(f, size, {b"meta": 4, b"iprp": 0, b"ipco": 0}):
        if path[-1] == b"ispe":
            width, height = struct.unpack(">II", _read_in(f, payload, 4, 8))
            if best is None or width * height > best[0] * best[1]:
                best = width, height
    if best is None:
        raise _fail("corrupt", "HEIF has no image size (ispe) property")
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


def _probe_mp4(f: IO[bytes], size: int) -> tuple[int, int, float, float | None]:
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
        raise _fail("corrupt", "no moov box (truncated or incomplete MP4/MOV)")
    video = next((t for t in tracks if t.handler == b"vide"), None)
    if video is None:
        raise _fail("no_video_track", "the MP4/MOV has no video track")
    if not (video.width and video.height):
        raise _fail("corrupt", "the video track has no width/height")
    if movie_scale and movie_duration:
        duration = movie_duration / movie_scale
    elif video.timescale and video.duration:
        duration = video.duration / video.timescale
    else:
        raise _fail("corrupt", "the MP4/MOV does not state its duration")
    fps = video.samples * video.timescale / video.ticks if video.ticks and video.timescale else None
    return video.width, video.height, duration, fps


def _probe_wav(f: IO[bytes], size: int) -> float:
    pos, byte_rate = 12, 0
    for _ in range(1024):  # chunks: fmt, fact, LIST, ..., data
        if pos + 8 > size:
            break
        header = _read_at(f, pos, 8)
        chunk, length = header[:4], int.from_bytes(header[4:], "little")
        if chunk == b"fmt " and length >= 16:
            byte_rate = int.from_bytes(_read_at(f, pos + 16, 4), "little")
        elif chunk == b"data":
            available = size - pos - 8
            if length in (0, 0xFFFFFFFF):  # streamed: "until the end of the file"
                length = available
            if not byte_rate or length > available:
                raise _fail("corrupt", "WAV data chunk is truncated or has no fmt before it")
            return length / byte_rate
        pos += 8 + length + (length & 1)
    raise _fail("corrupt", "WAV has no data chunk")


def _probe_mp3(f: IO[bytes], size: int) -> float:
    """Duration from a Xing/Info frame count, else the first frame's bitrate (CBR)."""
    start, end = 0, size
    head = _read_at(f, 0, min(size, 10))
    if head[:3] == b"ID3" and len(head) == 10:
        id3_size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        start = 10 + id3_size + (10 if head[5] & 0x10 else 0)
    if size >= 128 and _read_at(f, size - 128, 3) == b"TAG":
        end -= 128  # ID3v1 trailer
    window = _read_at(f, start, max(0, min(end - start, 64 * 1024)))
    i, frame = next(
        ((i, fr) for i in range(len(window) - 3) if (fr := _mp3_frame(window[i : i + 4]))),
        (0, None),
    )
    if frame is None:
        raise _fail("corrupt", "no MPEG audio frame found")
    mpeg1, layer, kbps, rate, mode = frame
    per_frame = 384 if layer == 3 else (1152 if mpeg1 or layer == 2 else 576)
    xing = i + (4 + (32 if mode != 3 else 17) if mpeg1 else 4 + (17 if mode != 3 else 9))
    tag = window[xing : xing + 12]
    if tag[:4] in (b"Xing", b"Info") and len(tag) == 12 and tag[7] & 1:
        return int.from_bytes(tag[8:12], "big") * per_frame / rate
    return (end - start - i) * 8 / (kbps * 1000)


# --- checking -------------------------------------------------------------------------------


def check(info: MediaInfo, asset_type: str | None = None) -> None:
    """Raise MediaCheckError when ``info`` breaks ``LIMITS[asset_type or info.asset_type]``.

    Order: empty, type_mismatch, format, too_large, ratio, side, pixels, duration, fps.
    An unknown fps is not checked. ValueError for an asset type not in LIMITS.
    """
    wanted = asset_type or info.asset_type
    limits = LIMITS.get(wanted)
    if limits is None:
        raise ValueError(f"unknown asset type {wanted!r}; expected one of {sorted(LIMITS)}")
    kind = wanted.lower()
    if info.size == 0:
        raise _fail("empty", "the file is empty")
    if info.asset_type != wanted:
        raise _fail("type_mismatch", f"asked for {wanted} but the file is {info.asset_type}")
    if info.format not in limits.formats:
        allowed = ", ".join(sorted(limits.formats))
        raise _fail("format", f"{wanted} does not accept {info.format} (only {allowed})")
    if info.size > limits.max_bytes:
        raise _fail("too_large", f"{info.size} bytes is over the {wanted} limit")
    if limits.ratio_open_interval or limits.side_open_interval or limits.pixels_range:
        if not (info.width and info.height):
            raise _fail("corrupt", f"the {kind}'s width and height are unknown")
        w, h = info.width, info.height
        if limits.ratio_open_interval:
            lo, hi = limits.ratio_open_interval
            if not Fraction(str(lo)) < Fraction(w, h) < Fraction(str(hi)):
                raise _fail(
                    f"{kind}_ratio", f"{w}x{h}: width/height {w / h:.4g} not in ({lo}, {hi})"
                )
        if limits.side_open_interval:
            lo_side, hi_side = limits.side_open_interval
            if not (lo_side < w < hi_side and lo_side < h < hi_side):
                raise _fail(f"{kind}_side", f"{w}x{h}: each side must be in ({lo_side}, {hi_side})")
        if limits.pixels_range:
            lo_px, hi_px = limits.pixels_range
            if not lo_px <= w * h <= hi_px:
                raise _fail(f"{kind}_pixels", f"{w}x{h} = {w * h} pixels not in [{lo_px}, {hi_px}]")
    if limits.duration_range:
        lo, hi = limits.duration_range
        if info.duration is None:
            raise _fail("corrupt", f"the {kind}'s duration is unknown")
        if not lo <= info.duration <= hi:
            raise _fail("duration", f"{info.duration:.3f} s is not in [{lo}, {hi}] s")
    if limits.fps_range and info.fps is not None:
        lo, hi = limits.fps_range
        if not lo <= info.fps <= hi:
            raise _fail("fps", f"{info.fps:.3f} frames/s is not in [{lo}, {hi}]")


def check_file(path: str | os.PathLike[str], asset_type: str | None = None) -> MediaInfo:
    """:func:`probe_file` then :func:`check`; returns what was found."""
    info = probe_file(path)
    check(info, asset_type)
    return info


def check_bytes(data: bytes, asset_type: str | None = None) -> MediaInfo:
    """:func:`probe_bytes` then :func:`check`; returns what was found."""
    info = probe_bytes(data)
    check(info, asset_type)
    return info
