"""The bytes the emulator makes: generated sample media and signed content URLs.

Samples are served at ``/_emulator/media/<kind>/<W>x<H>.<ext>``.

``emu.media_url(kind="png", width=800, height=1200)`` points here; CreateAsset resolves
these URLs locally (no socket). Images are drawn with Pillow; ``mp4``/``mov`` are minimal
but well-formed ISO-BMFF files (ftyp, moov with one video track: tkhd, mdhd, hdlr, stsd,
stts) that state size, duration and frame rate; ``wav`` is PCM silence; ``html`` and
``txt`` are deliberately not media. Results are cached by their parameters.

The URLs are unauthenticated, so what one may cost is bounded: an image has at most
``max_sample_pixels`` pixels (:class:`SampleTooLarge` otherwise; the route answers 400),
samples are rendered one at a time, and the cache holds at most ``sample_cache_bytes``.

Signed content URLs are ``<path>?expires=<unix seconds>&signature=<hex>``: HMAC-SHA256
under a per-emulator secret (kept in the data directory, so URLs survive a restart) over
``kind`` (a Chenyu URL cannot be replayed as an Ark one), the asset id and ``expires``,
compared in constant time. A URL is valid only as issued: exactly one canonical ``expires``
and one lower-case hex ``signature``, nothing else (no two parsers can disagree).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
import threading
import wave
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

__all__ = [
    "KINDS",
    "SampleMedia",
    "SampleSpec",
    "SampleTooLarge",
    "UrlKind",
    "UrlSigner",
    "parse_sample_path",
]

UrlKind = Literal["chenyu", "ark"]

#: kind -> (file extension, MIME type)
KINDS: dict[str, tuple[str, str]] = {
    "png": ("png", "image/png"),
    "jpeg": ("jpg", "image/jpeg"),
    "webp": ("webp", "image/webp"),
    "gif": ("gif", "image/gif"),
    "bmp": ("bmp", "image/bmp"),
    "tiff": ("tiff", "image/tiff"),
    "mp4": ("mp4", "video/mp4"),
    "mov": ("mov", "video/quicktime"),
    "wav": ("wav", "audio/wav"),
    "html": ("html", "text/html; charset=utf-8"),
    "txt": ("txt", "text/plain; charset=utf-8"),
}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}
_PIL_FORMAT["tiff"] = "TIFF"
_MAX_SIDE = 8192
_MAX_DURATION = 120.0
_DEFAULT_PIXELS = 4096 * 4096
_DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


class SampleTooLarge(ValueError):
    """An image sample over the pixel cap."""


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """What to generate."""

    kind: str
    width: int = 800
    height: int = 1200
    duration: float = 5.0
    fps: float = 30.0

    def validate(self) -> None:
        """Raise ValueError for parameters outside the generator's range."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown sample kind {self.kind!r}; one of {sorted(KINDS)}")
        if not (0 <= self.width <= _MAX_SIDE and 0 <= self.height <= _MAX_SIDE):
            raise ValueError(f"width and height must be within 0..{_MAX_SIDE}")
        visual = self.kind in _PIL_FORMAT or self.kind in ("mp4", "mov")
        if visual and (self.width < 1 or self.height < 1):
            raise ValueError("width and height must be positive")
        if not (0 < self.duration <= _MAX_DURATION):
            raise ValueError(f"duration must be within (0, {_MAX_DURATION}] seconds")
        if not (1 <= self.fps <= 240):
            raise ValueError("fps must be within 1..240")

    def path(self) -> str:
        """The URL path (and query) that serves this sample."""
        ext = KINDS[self.kind][0]
        base = f"/_emulator/media/{self.kind}/{self.width}x{self.height}.{ext}"
        if self.kind in ("mp4", "mov"):
            return f"{base}?duration={self.duration:g}&fps={self.fps:g}"
        if self.kind == "wav":
            return f"{base}?duration={self.duration:g}"
        return base


def parse_sample_path(path: str, query: Mapping[str, str]) -> SampleSpec | None:
    """The sample a ``/_emulator/media/<kind>/<W>x<H>.<ext>`` path names, or None."""
    parts = path.split("/")
    if len(parts) != 5 or parts[:3] != ["", "_emulator", "media"]:
        return None
    kind, name = parts[3], parts[4]
    stem = name.rsplit(".", 1)[0]
    width_s, sep, height_s = stem.partition("x")
    if not sep or not width_s.isdigit() or not height_s.isdigit():
        return None
    try:
        spec = SampleSpec(
            kind=kind,
            width=int(width_s),
            height=int(height_s),
            duration=float(query.get("duration", "5")),
            fps=float(query.get("fps", "30")),
        )
        spec.validate()
    except ValueError:
        return None
    return spec


class SampleMedia:
    """A thread-safe LRU cache of generated samples, bounded in bytes.

    ``max_pixels`` and ``cache_bytes`` are read on every call (the live config).
    """

    def __init__(
        self,
        *,
        max_pixels: Callable[[], int] = lambda: _DEFAULT_PIXELS,
        cache_bytes: Callable[[], int] = lambda: _DEFAULT_CACHE_BYTES,
    ) -> None:
        self._cache: OrderedDict[SampleSpec, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()  # one render at a time bounds peak memory
        self._max_pixels = max_pixels
        self._cache_bytes = cache_bytes

    def check(self, spec: SampleSpec) -> None:
        """Raise ValueError (:class:`SampleTooLarge` for the pixel cap) if ``spec`` is refused."""
        spec.validate()
        cap = self._max_pixels()
        if spec.kind in _PIL_FORMAT and spec.width * spec.height > cap:
            raise SampleTooLarge(
                f"an image sample may have at most {cap} pixels (width*height); "
                f"{spec.width}x{spec.height} is {spec.width * spec.height}"
            )

    def get(self, spec: SampleSpec) -> tuple[bytes, str]:
        """``(bytes, mime type)`` for ``spec`` (generated once, then cached)."""
        self.check(spec)
        mime = KINDS[spec.kind][1]
        data = self._lookup(spec)
        if data is not None:
            return data, mime
        with self._render_lock:
            data = self._lookup(spec)  # rendered by the thread we waited for?
            if data is None:
                data = _render(spec)
                self._keep(spec, data)
        return data, mime

    def _lookup(self, spec: SampleSpec) -> bytes | None:
        with self._lock:
            data = self._cache.get(spec)
            if data is not None:
                self._cache.move_to_end(spec)
            return data

    def _keep(self, spec: SampleSpec, data: bytes) -> None:
        budget = self._cache_bytes()
        with self._lock:
            if len(data) > budget or spec in self._cache:
                return
            self._cache[spec] = data
            self._size += len(data)
            while self._size > budget:
                _, old = self._cache.popitem(last=False)
                self._size -= len(old)

    def cached(self, spec: SampleSpec) -> bytes | None:
        """The cached bytes, without generating."""
        with self._lock:
            return self._cache.get(spec)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the cache now."""
        with self._lock:
            return self._size


def _render(spec: SampleSpec) -> bytes:
    if spec.kind in _PIL_FORMAT:
        return _image(spec)
    if spec.kind in ("mp4", "mov"):
        return _movie(spec)
    if spec.kind == "wav":
        return _wav(spec.duration)
    if spec.kind == "html":
        return b"<!doctype html><html><head><title>Not media</title></head><body>hi</body></html>"
    return b"this is plain text, not media\n"


def _image(spec: SampleSpec) -> bytes:
    img = Image.new("RGB", (spec.width, spec.height), (40, 90, 160))
    draw = ImageDraw.Draw(img)
    w, h = spec.width, spec.height
    draw.rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(230, 180, 60))
    draw.ellipse((w // 3, h // 3, 2 * w // 3, 2 * h // 3), fill=(200, 40, 60))
    out = io.BytesIO()
    img.save(out, format=_PIL_FORMAT[spec.kind])
    return out.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, payload: bytes, flags: int = 0) -> bytes:
    return _box(kind, struct.pack(">I", flags & 0xFFFFFF) + payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _movie(spec: SampleSpec) -> bytes:
    timescale = max(1, round(spec.fps * 1000))
    delta = 1000
    samples = max(1, round(spec.duration * spec.fps))
    duration = samples * delta
    brand = b"qt  " if spec.kind == "mov" else b"isom"
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0x200) + brand + b"mp41")
    mvhd = _full_box(
        b"mvhd",
        struct.pack(">IIIIIH10x", 0, 0, timescale, duration, 0x10000, 0x100)
        + _MATRIX
        + bytes(24)
        + struct.pack(">I", 2),
    )
    tkhd = _full_box(
        b"tkhd",
        struct.pack(">IIIII8xHHHH", 0, 0, 1, 0, duration, 0, 0, 0, 0)
        + _MATRIX
        + struct.pack(">II", spec.width << 16, spec.height << 16),
        flags=3,
    )
    mdhd = _full_box(b"mdhd", struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0))
    hdlr = _full_box(b"hdlr", struct.pack(">I4s12x", 0, b"vide") + b"VideoHandler\0")
    avc1 = _box(
        b"avc1",
        bytes(6)
        + struct.pack(">H", 1)
        + bytes(16)
        + struct.pack(">HHIII", spec.width, spec.height, 0x480000, 0x480000, 0)
        + struct.pack(">H", 1)
        + bytes(32)
        + struct.pack(">Hh", 0x18, -1),
    )
    stsd = _full_box(b"stsd", struct.pack(">I", 1) + avc1)
    stts = _full_box(b"stts", struct.pack(">III", 1, samples, delta))
    stsz = _full_box(b"stsz", struct.pack(">II", 4, samples))
    stsc = _full_box(b"stsc", struct.pack(">IIII", 1, 1, samples, 1))
    stco = _full_box(b"stco", struct.pack(">II", 1, 0))
    stbl = _box(b"stbl", stsd + stts + stsc + stsz + stco)
    vmhd = _full_box(b"vmhd", bytes(8), flags=1)
    minf = _box(b"minf", vmhd + stbl)
    mdia = _box(b"mdia", mdhd + hdlr + minf)
    trak = _box(b"trak", tkhd + mdia)
    moov = _box(b"moov", mvhd + trak)
    mdat = _box(b"mdat", bytes(4 * samples))
    return ftyp + moov + mdat


def _wav(duration: float) -> bytes:
    rate = 8000
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * round(rate * duration)))
    return out.getvalue()


class UrlSigner:
    """Makes and checks signed-URL query parameters."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the URL-signing secret must be at least 16 bytes")
        self._secret = secret

    def signature(self, kind: UrlKind, asset_id: str, expires: int) -> str:
        """The hex signature for one (kind, asset, expiry)."""
        message = f"{kind}\n{asset_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def query(self, kind: UrlKind, asset_id: str, expires: int) -> str:
        """``expires=...&signature=...``."""
        return f"expires={expires}&signature={self.signature(kind, asset_id, expires)}"

    def check(
        self, kind: UrlKind, asset_id: str, query: Mapping[str, str], now: float
    ) -> str | None:
        """None when ``query`` (a multidict keeps repeated keys) is exactly a valid, unexpired
        ``expires=...&signature=...``; else why not."""
        expires_text = query.get("expires")
        signature = query.get("signature")
        if not expires_text or not signature:
            return "the URL is not signed"
        if len(query) != 2 or set(query) != {"expires", "signature"}:  # len counts repeats
            return "the URL has parameters besides one expires and one signature"
        if (
            not expires_text.isascii()
            or not expires_text.isdigit()
            or len(expires_text) > 12
            or expires_text != str(int(expires_text))
        ):
            return "the URL's expiry is malformed"
        expected = self.signature(kind, asset_id, int(expires_text))
        if not signature.isascii() or not hmac.compare_digest(expected, signature):
            return "the URL's signature does not match"
        if int(expires_text) < now:
            return "the signed URL has expired"
        return None

    def __repr__(self) -> str:
        return "UrlSigner(<secret>)"
