"""The CSV and JSONL manifest readers (see :mod:`.sources` for the guarantees)."""

from __future__ import annotations

import codecs
import csv
import json
import os
import stat
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import BinaryIO, Final, TextIO
from urllib.parse import urlsplit

from .._core.logs import redact_url
from ..media import LIMITS
from .items import BadItem, SourceError, SourceItem
from .naming import NAME_MAX

__all__ = ["MANIFEST_SUFFIXES", "MAX_LINE", "KeySet", "iter_csv", "iter_jsonl", "url_has_userinfo"]

_FIELDS: Final = ("key", "path", "url", "name", "label", "asset_type")
_ASSET_TYPES: Final = {t.lower(): t for t in LIMITS}
#: the longest manifest line (a CSV record, a JSONL line) read, in characters (JSONL: bytes)
MAX_LINE: Final = 64 * 1024
MANIFEST_SUFFIXES: Final = {".csv": "CSV", ".jsonl": "JSONL", ".ndjson": "JSONL"}


class KeySet:
    """A set of 64-bit key hashes in an ``array('Q')`` with linear probing (0 = empty);
    the ingest pipeline uses it too, for keys and asset Names."""

    __slots__ = ("_count", "_mask", "_slots")

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * 1024))
        self._mask = 1023
        self._count = 0

    def add(self, key: str) -> bool:
        """Add ``key``; False when it (or a key with the same hash) was already there."""
        digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        h = int.from_bytes(digest, "little") or 1
        if not self._insert(self._slots, self._mask, h):
            return False
        self._count += 1
        if self._count * 3 > len(self._slots) * 2:
            self._grow()
        return True

    @staticmethod
    def _insert(slots: array[int], mask: int, h: int) -> bool:
        i = h & mask
        while (v := slots[i]) != 0:
            if v == h:
                return False
            i = (i + 1) & mask
        slots[i] = h
        return True

    def _grow(self) -> None:
        bigger = array("Q", bytes(16 * len(self._slots)))
        mask = len(bigger) - 1
        for h in self._slots:
            if h:
                self._insert(bigger, mask, h)
        self._slots, self._mask = bigger, mask


def _is_text(value: str) -> bool:
    """False for text holding undecodable bytes (surrogates) or NUL."""
    if "\0" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def url_has_userinfo(url: str) -> bool:
    """True for a URL with ``user[:password]@`` before its host (refused: ``bad_url``)."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return "@" in url


@dataclass(frozen=True, slots=True)
class _Base:
    """The manifest's folder, and whether paths may leave it."""

    folder: Path
    real: str
    allow_outside: bool

    @classmethod
    def of(cls, manifest: Path, allow_outside: bool) -> _Base:
        return cls(manifest.parent, os.path.realpath(manifest.parent), allow_outside)

    def outside(self, local: Path) -> bool:
        if self.allow_outside:
            return False
        real = os.path.realpath(local)
        return real != self.real and not real.startswith(self.real.rstrip(os.sep) + os.sep)


def _make_item(
    raw: Mapping[str, str | None], line: int, base: _Base, seen: KeySet
) -> SourceItem | BadItem:
    """Validate one manifest row (CSV or JSONL, already strings or None) into an item."""
    v = {f: (s.strip() or None) if s is not None else None for f, s in raw.items()}
    key = v.get("key") or v.get("url") or v.get("path")
    shown = key if key is not None and _is_text(key) else f"<line {line}>"
    url = v.get("url")
    if url and url_has_userinfo(url):  # never keep the credentials, not even in the key
        shown = redact_url(shown) if shown == url else shown
        return BadItem(
            shown, "bad_url", "the URL carries credentials (user:password@); refused", line
        )
    if key is not None and shown == key and not seen.add(key):
        return BadItem(key, "duplicate_key", f"key {key!r} already appeared above", line)
    for field, value in v.items():
        if value is not None and not _is_text(value):
            return BadItem(shown, "bad_value", f"{field} is not valid UTF-8 text or has NUL", line)
    path = v.get("path")
    if path and url:
        return BadItem(shown, "bad_value", "give either a path or a url, not both", line)
    if not path and not url:
        return BadItem(shown, "missing_field", "each row needs a path or a url", line)
    if url:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            shown_url = redact_url(url)
            return BadItem(
                shown, "bad_url", f"only http(s) URLs are accepted, not {shown_url!r}", line
            )
    asset_type = v.get("asset_type")
    if asset_type is not None:
        if asset_type.lower() not in _ASSET_TYPES:
            expected = ", ".join(LIMITS)
            return BadItem(shown, "bad_value", f"asset_type {asset_type!r}: not {expected}", line)
        asset_type = _ASSET_TYPES[asset_type.lower()]
    name = v.get("name")
    if name is not None:
        if len(name) > NAME_MAX:
            msg = f"name has {len(name)} characters; at most {NAME_MAX}"
            return BadItem(shown, "name_too_long", msg, line)
        if any(ord(c) < 0x20 or c == "\x7f" for c in name):
            return BadItem(shown, "bad_value", "name contains control characters", line)
    local = (base.folder / path) if path else None  # `shown` is the key: path or url is set
    if local is not None and base.outside(local):
        msg = "the path leads outside the manifest's folder (allow it with --allow-outside-paths)"
        return BadItem(shown, "outside_manifest", msg, line)
    return SourceItem(shown, local, url, name, v.get("label"), asset_type, line)


def _open_regular(path: Path, kind: str) -> int:
    """A descriptor of ``path`` opened without blocking, proven a regular file by ``fstat``
    of that same descriptor (a FIFO, a device or a directory is a SourceError at once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise SourceError(f"{path}: a directory, not a {kind} manifest") from None
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot open the {kind} manifest: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file (FIFO, device)"
        raise SourceError(f"{path}: {what}; a {kind} manifest must be a regular file")
    os.set_blocking(fd, True)
    return fd


class _Overlong(Exception):
    """Raised through ``csv.reader`` by :class:`_CappedLines` (the reader resets its state
    at its next row, so the over-long record is dropped and reading goes on)."""


_EOL: Final = ("\n", "\r")


class _CappedLines:
    """The physical lines of a text file for ``csv.reader``, each record at most ``cap``
    characters. A record that grows past it is skipped to its end, read ``cap`` characters
    at a time (the end: a line end after an even number of ``"`` in the record, which is
    exact for RFC 4180 quoting), then :class:`_Overlong` is raised. ``count`` is the number
    of physical lines consumed; :meth:`new_record` is called before each row."""

    def __init__(self, f: TextIO, cap: int) -> None:
        self._f, self._cap = f, cap
        self.count = 0
        self._record = self._quotes = 0

    def new_record(self) -> None:
        self._record = self._quotes = 0

    def __iter__(self) -> _CappedLines:
        return self

    def __next__(self) -> str:
        text = self._f.readline(self._cap - self._record + 1)
        if not text:
            raise StopIteration
        self.count += text.endswith(_EOL)
        self._record += len(text)
        self._quotes += text.count('"')
        if self._record <= self._cap:
            return text
        while text and not (text.endswith(_EOL) and self._quotes % 2 == 0):
            text = self._f.readline(self._cap)
            self.count += text.endswith(_EOL)
            self._quotes += text.count('"')
        raise _Overlong


def iter_csv(
    path: str | os.PathLike[str], *, allow_outside: bool = False
) -> Iterator[SourceItem | BadItem]:
    """Rows of a CSV manifest (UTF-8, BOM and CRLF accepted), streamed.

    A header row is required (SourceError otherwise, raised by this call, before the first
    item), with a ``path`` and/or ``url`` column and optionally ``name``, ``label``,
    ``asset_type``, ``key`` (case-insensitive; other columns are ignored). Relative paths
    are joined to the manifest's directory; a path leading outside it is
    ``outside_manifest`` unless ``allow_outside``. ``key`` is the ``key`` column, else the
    url, else the path as written; a key seen before (even on a bad row) makes the later
    row a ``duplicate_key``. ``line`` is the row's first physical line. A bad row becomes
    a BadItem and reading goes on; a record over :data:`MAX_LINE` characters is
    ``bad_csv``.
    """
    manifest = Path(path).absolute()
    fd = _open_regular(manifest, "CSV")
    f = open(fd, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115
    try:
        lines = _CappedLines(f, MAX_LINE)
        reader = csv.reader(lines)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise SourceError(f"{manifest}: empty CSV; a header row is required") from None
        except _Overlong:
            msg = f"{manifest}: the header row is longer than {MAX_LINE} characters"
            raise SourceError(msg) from None
        except csv.Error as exc:
            raise SourceError(f"{manifest}: the header row is not valid CSV: {exc}") from None
        if not {"path", "url"} & set(header):
            shown = header if len(header) <= 20 else [*header[:20], "..."]
            raise SourceError(
                f"{manifest}: the header row needs a 'path' or 'url' column, found {shown}"
            )
        if len(set(header)) != len(header):
            raise SourceError(f"{manifest}: repeated column names in the header {header}")
    except BaseException:
        f.close()
        raise
    return _csv_rows(f, lines, reader, header, _Base.of(manifest, allow_outside))


def _csv_rows(
    f: TextIO, lines: _CappedLines, reader: Iterator[list[str]], header: list[str], base: _Base
) -> Iterator[SourceItem | BadItem]:
    columns = [(i, h) for i, h in enumerate(header) if h in _FIELDS]
    seen = KeySet()
    with f:
        while True:
            line = lines.count + 1
            lines.new_record()
            try:
                row = next(reader)
            except StopIteration:
                return
            except _Overlong:
                msg = f"record longer than {MAX_LINE} characters"
                yield BadItem(f"<line {line}>", "bad_csv", msg, line)
                continue
            except csv.Error as exc:
                yield BadItem(f"<line {line}>", "bad_csv", str(exc), line)
                continue
            if not any(cell.strip() for cell in row):
                continue
            fields = {h: (row[i] if i < len(row) else None) for i, h in columns}
            extra = row[len(header) :]
            if any(cell.strip() for cell in extra):
                item = _make_item(fields, line, base, seen)
                msg = f"{len(row)} fields but the header has {len(header)}"
                yield BadItem(item.key, "bad_value", msg, line)
                continue
            yield _make_item(fields, line, base, seen)


def iter_jsonl(
    path: str | os.PathLike[str], *, allow_outside: bool = False
) -> Iterator[SourceItem | BadItem]:
    """Objects of a JSON Lines manifest, one per line, with the same fields as the CSV.

    Blank lines are skipped. A line that is not a JSON object (or is longer than
    :data:`MAX_LINE` bytes, or not UTF-8) is ``bad_json``; a field that is neither a string
    nor null is ``bad_value``. SourceError (raised by this call) if the manifest is not a
    regular file.
    """
    manifest = Path(path).absolute()
    fd = _open_regular(manifest, "JSONL")
    return _jsonl_rows(open(fd, "rb"), _Base.of(manifest, allow_outside))


def _jsonl_rows(f: BinaryIO, base: _Base) -> Iterator[SourceItem | BadItem]:
    seen = KeySet()
    with f:
        line = 0
        while raw := f.readline(MAX_LINE + 1):
            line += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                    raw = f.readline(MAX_LINE)
                msg = f"line longer than {MAX_LINE} bytes"
                yield BadItem(f"<line {line}>", "bad_json", msg, line)
                continue
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                yield BadItem(f"<line {line}>", "bad_json", f"invalid JSON: {exc}", line)
                continue
            if not isinstance(obj, dict):
                kind = type(obj).__name__
                yield BadItem(f"<line {line}>", "bad_json", f"expected an object, got {kind}", line)
                continue
            fields: dict[str, str | None] = {}
            wrong: list[str] = []
            for field in _FIELDS:
                value = obj.get(field)
                if value is None or isinstance(value, str):
                    fields[field] = value
                else:
                    wrong.append(f"{field} must be a string, not {type(value).__name__}")
            if wrong:
                ok = {k: s for k, s in fields.items() if k in ("key", "url", "path")}
                item = _make_item(ok, line, base, seen)
                yield BadItem(item.key, "bad_value", "; ".join(wrong), line)
                continue
            yield _make_item(fields, line, base, seen)
