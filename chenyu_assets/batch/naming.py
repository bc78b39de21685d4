"""Deterministic names and keys for bulk ingest.

Every source item has a *key* (its stable identity within the source: a relative path, a URL
or a manifest's ``key`` column) and a deterministic Ark asset *Name* derived from it. The name
is what makes a crash recoverable: after an ambiguous CreateAsset the batch engine lists the
group for exactly this name to learn whether the asset exists, instead of creating it twice.

``asset_name`` = ``<readable>-<h>``, at most :data:`NAME_MAX` characters, where ``h`` is the
first 16 hex digits of ``sha256(key + "\\0" + content_hash)``. The readable part is only for
people; ``h`` is what separates two items (48 bits: for one million items whose readable parts
coincide, the chance of any collision is about 0.2 %; distinct readable parts never collide).

Directory keys are relative POSIX paths. File names that are not valid UTF-8 are made valid
text with *backslash escapes*: each undecodable byte becomes ``\\xNN`` (two lower-case hex
digits) and a literal backslash becomes ``\\\\``. Escaping the escape character keeps keys
unique and reversible (:func:`path_bytes_for_key`); backslashes were preferred over
percent-encoding because ``%`` is common in real file names and ``\\`` is rare on POSIX, so
almost every key is exactly the path as ``ls`` shows it.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import PurePath, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlsplit

from chenyu_assets.spec import NAME_MAX

__all__ = [
    "HASH_HEX",
    "NAME_MAX",
    "asset_name",
    "item_key_for_path",
    "path_bytes_for_key",
    "shard_of",
]

#: Hex digits of the hash suffix.
HASH_HEX: Final = 16
_READABLE_MAX: Final = NAME_MAX - 1 - HASH_HEX  # room for "-" + hash
_FALLBACK: Final = "asset"
_TRIM: Final = "-._"

#: Kept as is besides ``[A-Za-z0-9._-]``: Han ideographs (URO, extensions A–G, compatibility),
#: Hiragana, Katakana and Hangul syllables.
_CJK_RANGES: Final = (
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3134F),
)
_ASCII_OK: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_DASHES: Final = re.compile(r"-{2,}")
_ESCAPE: Final = re.compile(r"\\(\\|x[0-9a-f]{2})")


def _keep(ch: str) -> bool:
    if ch in _ASCII_OK:
        return True
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _sanitise(text: str) -> str:
    """NFC, then every character outside the kept set becomes ``-``; runs collapse; ends trim."""
    text = unicodedata.normalize("NFC", text)
    out = "".join(ch if _keep(ch) else "-" for ch in text)
    return _DASHES.sub("-", out).strip(_TRIM)


def _readable_from_key(key: str) -> str:
    """The file stem of a path key, or of the last path segment of a URL key."""
    if "://" in key:
        segment = unquote(urlsplit(key).path.rstrip("/").rpartition("/")[2])
    else:
        segment = key.rstrip("/").rpartition("/")[2]
    return PurePosixPath(segment).stem if segment else ""


def asset_name(key: str, *, label: str | None = None, content_hash: str | None = None) -> str:
    """The deterministic Ark asset Name of an item: ``<readable>-<16 hex>``, ≤ 64 characters.

    The readable part is ``label`` when given (and non-empty once sanitised), else the key's
    file stem or a URL's last path segment, sanitised to ``[A-Za-z0-9._-]`` plus CJK and cut
    so the whole name fits :data:`NAME_MAX` characters (at most 51 readable characters; the
    UTF-8 length is therefore at most 51 × 4 + 13 = 217 bytes). The hash covers ``key`` and
    ``content_hash``, so the same inputs always give the same name and different keys give
    different names; the label does not enter the hash.
    """
    readable = _sanitise(label) if label else ""
    if not readable:
        readable = _sanitise(_readable_from_key(key))
    readable = readable[:_READABLE_MAX].rstrip(_TRIM) or _FALLBACK
    material = f"{key}\0{content_hash or ''}".encode("utf-8", "surrogatepass")
    return f"{readable}-{hashlib.sha256(material).hexdigest()[:HASH_HEX]}"


def _escape(text: str) -> str:
    if "\\" not in text and text.isascii():
        return text
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def item_key_for_path(
    root: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
) -> str:
    """The key of ``path`` under ``root``: its relative POSIX path, always valid UTF-8 text.

    Undecodable bytes become ``\\xNN`` and ``\\`` becomes ``\\\\`` (see the module docstring);
    :func:`path_bytes_for_key` reverses it. ValueError if ``path`` is not under ``root``.
    """
    rel = PurePath(os.fsdecode(path)).relative_to(os.fsdecode(root))
    return _escape(rel.as_posix())


def path_bytes_for_key(key: str) -> bytes:
    """The relative path bytes a directory key stands for (the inverse of the escaping)."""
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(key):
        out += key[pos : match.start()].encode("utf-8", "surrogateescape")
        esc = match.group(1)
        out += b"\\" if esc == "\\" else bytes([int(esc[1:], 16)])
        pos = match.end()
    out += key[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)


def shard_of(key: str, n: int) -> int:
    """Which of ``n`` shards an item belongs to: ``int(sha256(key)[:16], 16) % n``, stable
    across runs, machines and Python versions (unlike ``hash()``)."""
    if n < 1:
        raise ValueError(f"the number of shards must be at least 1, not {n}")
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return int(digest[:16], 16) % n
