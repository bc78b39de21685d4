"""chenyu_assets.media: sniffing, probing and the limits table, boundaries first."""

from __future__ import annotations

import dataclasses
import random
import struct
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mediagen
import pytest

from chenyu_assets.errors import MediaCheckError
from chenyu_assets.media import (
    LIMITS,
    UPLOAD_MAX_BYTES,
    VENDOR_CODES,
    MediaInfo,
    check,
    check_bytes,
    check_file,
    media_type_for,
    probe_bytes,
    probe_file,
    sniff,
    vendor_code,
)

MiB = 1024 * 1024


def _reason(data: bytes, asset_type: str | None, tmp_path: Path) -> str | None:
    """The reason check_bytes and check_file give (they must agree), or None when accepted."""
    reasons: list[str | None] = []
    path = mediagen.write(tmp_path / "media.bin", data)
    runs: list[Callable[[], MediaInfo]] = [
        lambda: check_bytes(data, asset_type),
        lambda: check_file(path, asset_type),
    ]
    for run in runs:
        try:
            run()
        except MediaCheckError as exc:
            reasons.append(exc.reason)
        else:
            reasons.append(None)
    assert reasons[0] == reasons[1]
    return reasons[0]


# --- images ---------------------------------------------------------------------------------

IMAGE_BOUNDARIES = [
    pytest.param(400, 1000, "image_ratio", id="ratio-0.4-exact"),
    pytest.param(2500, 1000, "image_ratio", id="ratio-2.5-exact"),
    pytest.param(399, 1000, "image_ratio", id="ratio-0.399"),
    pytest.param(2501, 1000, "image_ratio", id="ratio-2.501"),
    pytest.param(410, 1000, None, id="ratio-0.41"),
    pytest.param(2490, 1000, None, id="ratio-2.49"),
    pytest.param(401, 1000, None, id="ratio-0.401"),
    pytest.param(300, 300, "image_side", id="side-300"),
    pytest.param(300, 700, "image_side", id="side-300-tall"),
    pytest.param(6000, 3000, "image_side", id="side-6000"),
    pytest.param(3000, 6000, "image_side", id="side-6000-tall"),
    pytest.param(301, 301, None, id="side-301"),
    pytest.param(5999, 2500, None, id="side-5999"),
    pytest.param(2500, 5999, None, id="side-5999-tall"),
]


@pytest.mark.parametrize(("width", "height", "reason"), IMAGE_BOUNDARIES)
def test_image_boundaries(width: int, height: int, reason: str | None, tmp_path: Path) -> None:
    data = mediagen.png(width, height, mode="L")
    assert _reason(data, "Image", tmp_path) == reason
    assert _reason(data, None, tmp_path) == reason
    info = probe_bytes(data)
    assert (info.width, info.height) == (width, height)


def test_jpeg_boundary_agrees_with_png(tmp_path: Path) -> None:
    assert _reason(mediagen.jpeg(400, 1000), "Image", tmp_path) == "image_ratio"
    assert _reason(mediagen.jpeg(410, 1000), "Image", tmp_path) is None


PILLOW_FORMATS = [
    pytest.param(fmt, mime, mode, id=f"{fmt}-{mode}")
    for fmt, mime in [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
        ("GIF", "image/gif"),
    ]
    for mode in ("RGB", "RGBA", "L")
    if not (fmt == "JPEG" and mode == "RGBA")  # JPEG has no alpha
]


@pytest.mark.parametrize(("fmt", "mime", "mode"), PILLOW_FORMATS)
def test_every_pillow_format_is_sniffed_probed_and_accepted(
    fmt: str, mime: str, mode: str, tmp_path: Path
) -> None:
    data = mediagen.image(fmt, 640, 480, mode=mode)
    assert sniff(data[:64]) == ("Image", fmt.lower(), mime)
    info = check_file(mediagen.write(tmp_path / f"x.{fmt.lower()}", data), "Image")
    assert (info.format, info.mime_type, info.width, info.height) == (fmt.lower(), mime, 640, 480)
    assert info.size == len(data)


def test_lossless_webp_is_probed() -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (700, 500)).save(buf, format="WEBP", lossless=True)
    info = check_bytes(buf.getvalue(), "Image")
    assert (info.width, info.height) == (700, 500)


@pytest.mark.parametrize(
    ("brand", "fmt", "reason"),
    [(b"heic", "heic", None), (b"mif1", "heif", None), (b"avif", "avif", "format")],
)
def test_heif_family(brand: bytes, fmt: str, reason: str | None, tmp_path: Path) -> None:
    data = mediagen.heic(4032, 3024, brand=brand)
    kind = sniff(data)
    assert kind is not None
    assert kind[:2] == ("Image", fmt)
    assert _reason(data, "Image", tmp_path) == reason
    if reason is None:
        assert (probe_bytes(data).width, probe_bytes(data).height) == (4032, 3024)


def test_heic_ratio_is_checked() -> None:
    with pytest.raises(MediaCheckError) as exc:
        check_bytes(mediagen.heic(1000, 3000), "Image")
    assert exc.value.reason == "image_ratio"


def test_html_named_png_is_unrecognized(tmp_path: Path) -> None:
    path = mediagen.write(tmp_path / "photo.png", mediagen.html())
    with pytest.raises(MediaCheckError) as exc:
        check_file(path, "Image")
    assert exc.value.reason == "unrecognized"
    assert media_type_for(mediagen.html(), "photo.png") == "file"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(mediagen.truncated(mediagen.jpeg(1024, 768)), id="jpeg-half"),
        pytest.param(mediagen.jpeg(1024, 768)[:-2], id="jpeg-no-eoi"),
        pytest.param(mediagen.jpeg(1024, 768)[:40], id="jpeg-header-cut"),
        pytest.param(mediagen.truncated(mediagen.png(1024, 768)), id="png-half"),
        pytest.param(mediagen.png(1024, 768)[:-12], id="png-no-iend"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"garbage!" * 8, id="png-garbage"),
        pytest.param(mediagen.truncated(mediagen.image("GIF", 640, 480), 0.01), id="gif-cut"),
        pytest.param(mediagen.truncated(mediagen.image("WEBP", 640, 480)), id="webp-half"),
        pytest.param(mediagen.heic(800, 600)[:40], id="heic-cut"),
    ],
)
def test_broken_images_are_corrupt(data: bytes, tmp_path: Path) -> None:
    assert _reason(data, "Image", tmp_path) == "corrupt"


def test_trailing_nul_padding_after_jpeg_eoi_is_tolerated() -> None:
    assert check_bytes(mediagen.jpeg(640, 480) + bytes(7), "Image").width == 640


def test_empty(tmp_path: Path) -> None:
    assert _reason(b"", "Image", tmp_path) == "empty"
    assert _reason(b"", None, tmp_path) == "empty"
    with pytest.raises(MediaCheckError) as exc:
        check(MediaInfo("Image", "png", "image/png", 0, 640, 480))
    assert exc.value.reason == "empty"


@pytest.mark.filterwarnings("error")  # Pillow's DecompressionBombWarning must not leak
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(mediagen.png_declared(20_000, 20_000), id="png-pillow-error"),
        pytest.param(mediagen.png_declared(10_000, 9_000), id="png-pillow-warning"),
        pytest.param(mediagen.webp_declared(20_000, 10_000), id="webp"),
        pytest.param(mediagen.heic(20_000, 10_000), id="heic"),
    ],
)
def test_decompression_bomb(data: bytes, tmp_path: Path) -> None:
    assert _reason(data, "Image", tmp_path) == "decompression_bomb"


def test_declared_size_below_the_bomb_limit_is_a_side_error() -> None:
    """The IDAT holds 64 bytes for 8000 rows: reaching the side rule proves no pixel decoding."""
    with pytest.raises(MediaCheckError) as exc:
        check_bytes(mediagen.png_declared(8000, 8000), "Image")
    assert exc.value.reason == "image_side"


# --- sizes ----------------------------------------------------------------------------------


def _valid_info(asset_type: str, size: int) -> MediaInfo:
    return {
        "Image": MediaInfo("Image", "png", "image/png", size, 640, 480),
        "Video": MediaInfo("Video", "mp4", "video/mp4", size, 1280, 720, 5.0, 30.0),
        "Audio": MediaInfo("Audio", "wav", "audio/wav", size, duration=5.0),
    }[asset_type]


@pytest.mark.parametrize(
    ("asset_type", "size", "reason"),
    [
        pytest.param("Image", 30 * MiB - 1, None, id="image-just-under-30MiB"),
        pytest.param("Image", 30 * MiB, "too_large", id="image-30MiB"),
        pytest.param("Video", 50 * MiB, None, id="video-50MiB"),
        pytest.param("Video", 50 * MiB + 1, "too_large", id="video-over-50MiB"),
        pytest.param("Audio", 15 * MiB, None, id="audio-15MiB"),
        pytest.param("Audio", 15 * MiB + 1, "too_large", id="audio-over-15MiB"),
    ],
)
def test_size_limits(asset_type: str, size: int, reason: str | None) -> None:
    info = _valid_info(asset_type, size)
    if reason is None:
        check(info)
    else:
        with pytest.raises(MediaCheckError) as exc:
            check(info)
        assert exc.value.reason == reason


def test_real_30_mib_png_is_too_large_and_one_byte_less_is_not(tmp_path: Path) -> None:
    with pytest.raises(MediaCheckError) as exc:
        check_file(mediagen.big_png(tmp_path / "a.png", 30 * MiB), "Image")
    assert exc.value.reason == "too_large"
    assert check_file(mediagen.big_png(tmp_path / "b.png", 30 * MiB - 1)).size == 30 * MiB - 1


def test_upload_cap_is_100_mib() -> None:
    assert UPLOAD_MAX_BYTES == 100 * 1024 * 1024


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(mediagen.big_png, id="png"),
        pytest.param(mediagen.big_mp4, id="mp4"),
    ],
)
def test_probe_file_does_not_read_a_big_file(
    make: Callable[[Path, int], Path], tmp_path: Path
) -> None:
    path = make(tmp_path / "big.bin", 60 * MiB)
    tracemalloc.start()
    try:
        info = probe_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.size == 60 * MiB
    assert peak < 5 * MiB, peak
    with pytest.raises(MediaCheckError) as exc:
        check(info)
    assert exc.value.reason == "too_large"


# --- video ----------------------------------------------------------------------------------

VIDEO_CASES = [
    pytest.param(1280, 720, 5, 30, None, id="720p-5s-30fps"),
    pytest.param(1920, 1080, 15, 60, None, id="1080p-15s-60fps"),
    pytest.param(720, 1280, 2, 24, None, id="portrait-2s-24fps"),
    pytest.param(640, 640, 5, 30, None, id="pixels-409600-min"),
    pytest.param(1280, 720, 1.999, 30, "duration", id="too-short"),
    pytest.param(1280, 720, 15.001, 30, "duration", id="too-long"),
    pytest.param(1280, 720, 5, 23.976, "fps", id="fps-23.976"),
    pytest.param(1280, 720, 5, 61, "fps", id="fps-61"),
    pytest.param(1280, 720, 5, 29.97, None, id="fps-29.97"),
    pytest.param(480, 1200, 5, 30, "video_ratio", id="ratio-0.4"),
    pytest.param(1250, 500, 5, 30, "video_ratio", id="ratio-2.5"),
    pytest.param(300, 700, 5, 30, "video_side", id="side-300"),
    pytest.param(600, 600, 5, 30, "video_pixels", id="pixels-360000"),
    pytest.param(1920, 1088, 5, 30, "video_pixels", id="pixels-2088960"),
]


@pytest.mark.parametrize(("width", "height", "seconds", "fps", "reason"), VIDEO_CASES)
def test_video_table(
    width: int, height: int, seconds: float, fps: float, reason: str | None, tmp_path: Path
) -> None:
    data = mediagen.mp4(width, height, seconds, fps)
    assert _reason(data, "Video", tmp_path) == reason
    info = probe_bytes(data)
    assert (info.width, info.height) == (width, height)
    assert info.duration == pytest.approx(seconds, abs=1e-3)
    assert info.fps == pytest.approx(fps, abs=1e-3)


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        pytest.param(1892, 1103, None, id="2086876-exact-max"),
        pytest.param(1103, 1892, None, id="2086876-exact-max-portrait"),
        pytest.param(1893, 1103, "video_pixels", id="2087979"),
        pytest.param(800, 512, None, id="409600-exact-min"),
        pytest.param(799, 512, "video_pixels", id="409088"),
    ],
)
def test_video_pixel_range_is_inclusive(width: int, height: int, reason: str | None) -> None:
    info = MediaInfo("Video", "mp4", "video/mp4", 1000, width, height, 5.0, 30.0)
    if reason is None:
        check(info)
    else:
        with pytest.raises(MediaCheckError) as exc:
            check(info)
        assert exc.value.reason == reason


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(mediagen.mp4(1280, 720, 5, brand=b"qt  "), id="mov"),
        pytest.param(mediagen.mp4(1280, 720, 5, moov_first=False), id="moov-at-end"),
        pytest.param(mediagen.mp4(1280, 720, 5, brand=b"mp42"), id="mp42"),
    ],
)
def test_video_containers_accepted(data: bytes, tmp_path: Path) -> None:
    assert _reason(data, "Video", tmp_path) is None


def test_mov_is_sniffed_as_quicktime() -> None:
    assert sniff(mediagen.mp4(1280, 720, 5, brand=b"qt  ")) == ("Video", "mov", "video/quicktime")


def test_video_without_fps_is_not_judged_on_fps() -> None:
    check(MediaInfo("Video", "mp4", "video/mp4", 1000, 1280, 720, 5.0, None))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(mediagen.truncated(mediagen.mp4(1280, 720, 5)), "corrupt", id="mdat-cut"),
        pytest.param(
            mediagen.truncated(mediagen.mp4(1280, 720, 5, moov_first=False), 0.9),
            "corrupt",
            id="moov-cut",
        ),
        pytest.param(mediagen.mp4(1280, 720, 5)[:32], "corrupt", id="ftyp-only"),
        pytest.param(
            mediagen.mp4(1280, 720, 5, handler=b"soun"), "no_video_track", id="audio-only"
        ),
    ],
)
def test_broken_videos(data: bytes, reason: str, tmp_path: Path) -> None:
    assert _reason(data, "Video", tmp_path) == reason


def test_box_smaller_than_its_header_is_corrupt() -> None:
    data = mediagen.mp4(1280, 720, 5)
    bad = data[:32] + struct.pack(">I4s", 4, b"moov") + data[40:]
    with pytest.raises(MediaCheckError) as exc:
        probe_bytes(bad)
    assert exc.value.reason == "corrupt"


def test_type_mismatch(tmp_path: Path) -> None:
    assert _reason(mediagen.png(640, 480), "Video", tmp_path) == "type_mismatch"
    assert _reason(mediagen.mp4(1280, 720, 5), "Image", tmp_path) == "type_mismatch"
    assert _reason(mediagen.wav(5), "Video", tmp_path) == "type_mismatch"


def test_unknown_asset_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown asset type"):
        check(_valid_info("Image", 1000), "Document")


# --- audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "reason"),
    [(1.99, "duration"), (2.0, None), (9.5, None), (15.0, None), (15.01, "duration")],
)
def test_wav_duration(seconds: float, reason: str | None, tmp_path: Path) -> None:
    data = mediagen.wav(seconds)
    assert _reason(data, "Audio", tmp_path) == reason
    assert probe_bytes(data).duration == pytest.approx(seconds)


def test_truncated_wav_is_corrupt(tmp_path: Path) -> None:
    assert _reason(mediagen.truncated(mediagen.wav(5)), "Audio", tmp_path) == "corrupt"


@pytest.mark.parametrize(
    ("kwargs", "seconds"),
    [({}, 5), ({"xing": True}, 5), ({"id3": True}, 5), ({"id3": True, "xing": True}, 14)],
)
def test_mp3_duration(kwargs: dict[str, bool], seconds: float, tmp_path: Path) -> None:
    data = mediagen.mp3(seconds, **kwargs)
    assert sniff(data) == ("Audio", "mp3", "audio/mpeg")
    assert _reason(data, "Audio", tmp_path) is None
    assert probe_bytes(data).duration == pytest.approx(seconds, abs=0.03)


def test_short_mp3_and_broken_mp3(tmp_path: Path) -> None:
    assert _reason(mediagen.mp3(1), "Audio", tmp_path) == "duration"
    assert _reason(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(500), "Audio", tmp_path) == "corrupt"


# --- sniff, media_type_for, vendor codes, table ---------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"II*\x00" + bytes(60), ("Image", "tiff", "image/tiff")),
        (b"MM\x00+" + bytes(60), ("Image", "tiff", "image/tiff")),
        (b"\x00\x00\x00\x18ftypheix\x00\x00\x00\x00mif1heix", ("Image", "heic", "image/heic")),
        (b"\x00\x00\x00\x18ftypmsf1\x00\x00\x00\x00msf1hevc", ("Image", "heic", "image/heic")),
        (b"\x00\x00\x00\x14ftypmsf1\x00\x00\x00\x00msf1", ("Image", "heif", "image/heif")),
        (b"\x00\x00\x00\x14ftypmp42\x00\x00\x00\x00isom", ("Video", "mp4", "video/mp4")),
        (b"\x00\x00\x00\x14ftypM4A \x00\x00\x00\x00M4A ", ("Audio", "m4a", "audio/mp4")),
        (b"\x00\x00\x00\x14ftyp3gp4\x00\x00\x00\x00isom", ("Video", "3gp", "video/3gpp")),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x08mdat", ("Video", "mov", "video/quicktime")),
        (b"RIFF\x00\x00\x00\x00AVI LIST", ("Video", "avi", "video/x-msvideo")),
        (b"\xff\xfb\x90\x00" + bytes(60), ("Audio", "mp3", "audio/mpeg")),
        (b"\xff\xf1\x50\x80" + bytes(60), None),  # AAC ADTS, not MPEG layer I-III
        (b"RIFF\x00\x00\x00\x00XXXX", None),
        (b"BM" + bytes(16), None),  # "BM" text with no DIB header
        (b"%PDF-1.7\n", None),
        (b"", None),
    ],
)
def test_sniff_table(head: bytes, expected: tuple[str, str, str] | None) -> None:
    assert sniff(head) == expected


def test_sniff_looks_at_64_bytes_at_most() -> None:
    assert sniff(bytes(64) + b"\xff\xd8\xff") is None


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (mediagen.png(640, 480), "x.png", "image"),
        (mediagen.png(640, 480), None, "image"),
        (mediagen.jpeg(640, 480), "x.mp4", "image"),  # the bytes decide
        (mediagen.mp4(1280, 720, 5), "clip.mp4", "video"),
        (mediagen.mp4(1280, 720, 5), "song.m4a", "audio"),
        (mediagen.mp4(1280, 720, 5, brand=b"qt  "), "clip.mov", "video"),
        (mediagen.wav(3), "a.wav", "audio"),
        (mediagen.mp3(3), "a.mp3", "audio"),
        (mediagen.html(), "a.png", "file"),
        (b"%PDF-1.7\n", "doc.pdf", "file"),
        (b"", "empty.png", "file"),
    ],
)
def test_media_type_for(data: bytes, filename: str | None, expected: str) -> None:
    assert media_type_for(data[:64], filename) == expected


REASONS = {
    "unrecognized",
    "corrupt",
    "type_mismatch",
    "format",
    "too_large",
    "empty",
    "image_ratio",
    "image_side",
    "video_ratio",
    "video_side",
    "video_pixels",
    "duration",
    "fps",
    "decompression_bomb",
    "no_video_track",
}


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_vendor_code_for_every_reason(reason: str) -> None:
    code = vendor_code(reason)
    assert code.startswith("InvalidParameter.")
    assert code.split(".", 1)[1].isidentifier()


def test_vendor_codes_table() -> None:
    assert set(VENDOR_CODES) == REASONS
    assert vendor_code("image_ratio") == "InvalidParameter.ImageRatio"
    assert vendor_code("something_new") == "InvalidParameter"


def test_limits_table() -> None:
    assert set(LIMITS) == {"Image", "Video", "Audio"}
    image, video, audio = LIMITS["Image"], LIMITS["Video"], LIMITS["Audio"]
    assert image.formats == {"jpeg", "png", "webp", "bmp", "tiff", "gif", "heic", "heif"}
    assert image.max_bytes == 30 * MiB - 1
    assert image.ratio_open_interval == video.ratio_open_interval == (0.4, 2.5)
    assert image.side_open_interval == video.side_open_interval == (300, 6000)
    assert video.formats == {"mp4", "mov"}
    assert video.max_bytes == 50 * MiB
    assert video.pixels_range == (409_600, 2_086_876)
    assert video.duration_range == audio.duration_range == (2.0, 15.0)
    assert video.fps_range == (24.0, 60.0)
    assert audio.formats == {"wav", "mp3"}
    assert audio.max_bytes == 15 * MiB
    with pytest.raises(TypeError):
        LIMITS["Image"] = video  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.max_bytes = 1  # type: ignore[misc]


def test_probe_file_accepts_str_and_missing_file_raises_oserror(tmp_path: Path) -> None:
    path = mediagen.write(tmp_path / "a.jpg", mediagen.jpeg(640, 480))
    assert probe_file(str(path)) == probe_file(path)
    with pytest.raises(FileNotFoundError):
        probe_file(tmp_path / "missing.jpg")


@pytest.mark.filterwarnings("error")
def test_concurrent_probes_in_threads_agree() -> None:
    """Pillow probes run under a lock (catch_warnings is process-global): threads racing
    bombs and good images each get their own answer and no warning escapes."""
    bomb, good = mediagen.png_declared(10_000, 9_000), mediagen.png(800, 600)

    def reason(data: bytes) -> str | None:
        try:
            check_bytes(data, "Image")
        except MediaCheckError as exc:
            return exc.reason
        return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(reason, [bomb, good] * 100))
    assert results == ["decompression_bomb", None] * 100


FUZZ_SEEDS = {
    "png": mediagen.png(640, 480),
    "jpeg": mediagen.jpeg(640, 480),
    "webp": mediagen.image("WEBP", 640, 480),
    "gif": mediagen.image("GIF", 640, 480),
    "tiff": mediagen.image("TIFF", 64, 48),
    "heic": mediagen.heic(800, 600),
    "mp4": mediagen.mp4(1280, 720, 5),
    "mov-moov-last": mediagen.mp4(1280, 720, 5, brand=b"qt  ", moov_first=False),
    "wav": mediagen.wav(3),
    "mp3": mediagen.mp3(3, xing=True, id3=True),
}


@pytest.mark.filterwarnings("error")  # Pillow's warnings on broken files must not leak either
@pytest.mark.parametrize("name", sorted(FUZZ_SEEDS))
def test_mangled_media_only_ever_raises_media_check_error(name: str) -> None:
    """Truncations and overwritten header bytes: probe answers or raises MediaCheckError,
    never an IndexError/struct.error/ZeroDivisionError from a parser."""
    rng = random.Random(name)
    seed = FUZZ_SEEDS[name]
    reasons: set[str] = set()
    for _ in range(300):
        data = bytearray(seed)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(min(len(data), 400))
                data[pos : pos + 4] = rng.randbytes(4)
        try:
            probe_bytes(bytes(data))
        except MediaCheckError as exc:
            reasons.add(exc.reason)
    assert reasons <= set(VENDOR_CODES)
