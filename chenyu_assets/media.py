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
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import IO, Final, Literal

from chenyu_assets._probe import (
    fail,
    mp3_frame,
    probe_heif,
    probe_mp3,
    probe_mp4,
    probe_pillow,
    probe_wav,
    probe_webp,
    read_at,
)

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


# --- sniffing -------------------------------------------------------------------------------

#: File-name suffixes of media (lower case) -> the asset type they suggest. A directory walk
#: takes a file with one of these suffixes whatever its bytes (the pre-flight then judges
#: it); a file without one is taken only when :func:`sniff` recognises its first bytes, and
#: is otherwise *ignored* as not media (``README.md``, ``Thumbs.db``, ``notes.txt``).
MEDIA_SUFFIXES: Final[Mapping[str, str]] = MappingProxyType(
    {
        **dict.fromkeys(
            (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"), "Image"
        ),
        **dict.fromkeys((".heic", ".heif", ".avif"), "Image"),
        **dict.fromkeys((".mp4", ".mov", ".m4v", ".avi", ".3gp"), "Video"),
        **dict.fromkeys((".wav", ".mp3", ".m4a", ".aac"), "Audio"),
    }
)

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
    if h[:3] == b"ID3" or mp3_frame(h) is not None:
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


def _probe(f: IO[bytes], size: int) -> MediaInfo:
    if size == 0:
        raise fail("empty", "the file is empty")
    head = read_at(f, 0, min(size, 64))
    kind = sniff(head)
    if kind is None:
        raise fail("unrecognized", f"not a known media format (starts with {head[:16]!r})")
    asset_type, fmt, mime = kind
    width = height = None
    duration = fps = None
    if fmt in _PIL_FORMATS:
        width, height = probe_pillow(f, size, fmt)
    elif fmt == "webp":
        width, height = probe_webp(f, size)
    elif fmt in ("heic", "heif"):
        width, height = probe_heif(f, size)
    elif fmt in ("mp4", "mov"):
        width, height, duration, fps = probe_mp4(f, size)
    elif fmt == "wav":
        duration = probe_wav(f, size)
    elif fmt == "mp3":
        duration = probe_mp3(f, size)
    return MediaInfo(asset_type, fmt, mime, size, width, height, duration, fps)


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
        raise fail("empty", "the file is empty")
    if info.asset_type != wanted:
        raise fail("type_mismatch", f"asked for {wanted} but the file is {info.asset_type}")
    if info.format not in limits.formats:
        allowed = ", ".join(sorted(limits.formats))
        raise fail("format", f"{wanted} does not accept {info.format} (only {allowed})")
    if info.size > limits.max_bytes:
        raise fail("too_large", f"{info.size} bytes is over the {wanted} limit")
    if limits.ratio_open_interval or limits.side_open_interval or limits.pixels_range:
        if not (info.width and info.height):
            raise fail("corrupt", f"the {kind}'s width and height are unknown")
        w, h = info.width, info.height
        if limits.ratio_open_interval:
            lo, hi = limits.ratio_open_interval
            if not Fraction(str(lo)) < Fraction(w, h) < Fraction(str(hi)):
                raise fail(
                    f"{kind}_ratio", f"{w}x{h}: width/height {w / h:.4g} not in ({lo}, {hi})"
                )
        if limits.side_open_interval:
            lo_side, hi_side = limits.side_open_interval
            if not (lo_side < w < hi_side and lo_side < h < hi_side):
                raise fail(f"{kind}_side", f"{w}x{h}: each side must be in ({lo_side}, {hi_side})")
        if limits.pixels_range:
            lo_px, hi_px = limits.pixels_range
            if not lo_px <= w * h <= hi_px:
                raise fail(f"{kind}_pixels", f"{w}x{h} = {w * h} pixels not in [{lo_px}, {hi_px}]")
    if limits.duration_range:
        lo, hi = limits.duration_range
        if info.duration is None:
            raise fail("corrupt", f"the {kind}'s duration is unknown")
        if not lo <= info.duration <= hi:
            raise fail("duration", f"{info.duration:.3f} s is not in [{lo}, {hi}] s")
    if limits.fps_range and info.fps is not None:
        lo, hi = limits.fps_range
        if not lo <= info.fps <= hi:
            raise fail("fps", f"{info.fps:.3f} frames/s is not in [{lo}, {hi}]")


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
