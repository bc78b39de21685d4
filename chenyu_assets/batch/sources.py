"""Streaming readers of what to ingest: a directory tree, a CSV manifest or a JSONL manifest.

Each reader is a generator of :class:`SourceItem` (something to ingest) and :class:`BadItem`
(a file or row that cannot become an item: the batch records it as ``skipped`` with the
stable ``reason`` and goes on). Nothing reads a whole manifest: memory is one row plus, for
manifests, the set of keys seen so far (to refuse duplicates), kept as 8-byte hashes in an
open-addressing table — about 12 to 24 bytes per key, so ~16 MiB for a million rows. Two
different keys share a 64-bit hash with probability ~n²/2⁶⁵ (3·10⁻⁸ for a million keys); the
later one would then be reported as a ``duplicate_key`` it is not.

BadItem reasons: ``symlink_escape``, ``dangling_symlink``, ``symlink_loop``,
``symlink_not_followed``, ``not_regular_file``, ``unreadable`` (directories); ``missing_field``,
``bad_value``, ``bad_url``, ``name_too_long``, ``duplicate_key``, ``bad_csv``, ``bad_json``
(manifests). A bad row's key is the key it would have had, else ``<line N>``.

Whether a file is really media is not decided here: the pre-flight check does that (and
infers the asset type when the manifest does not give one).
"""

from __future__ import annotations

import codecs
import csv
import errno
import json
import os
import stat
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ..media import LIMITS
from .naming import NAME_MAX, item_key_for_path

__all__ = ["BadItem", "SourceItem", "iter_csv", "iter_directory", "iter_jsonl", "open_source"]

_FIELDS: Final = ("key", "path", "url", "name", "label", "asset_type")
_ASSET_TYPES: Final = {t.lower(): t for t in LIMITS}
_MAX_JSON_LINE: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One thing to ingest: a local file (``path``, absolute) or a public URL (``url``)."""

    key: str
    path: Path | None
    url: str | None
    name: str | None = None
    label: str | None = None
    asset_type: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class BadItem:
    """A file or manifest row that cannot become an item; ``reason`` is stable."""

    key: str
    reason: str
    message: str
    line: int | None = None


# --- directories ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Frame:
    entries: list[os.DirEntry[str]]
    pos: int
    rel: str  # logical POSIX path under root ("" for root)
    ident: tuple[int, int]  # (st_dev, st_ino), for loop detection


def _listing(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    entries.sort(key=lambda e: os.fsencode(e.name))
    return entries


def iter_directory(
    root: str | os.PathLike[str], *, follow_symlinks_inside: bool = True
) -> Iterator[SourceItem | BadItem]:
    """Regular files under ``root``, depth first, sorted by name (bytes) at each level.

    Hidden names (leading ``.``) are skipped silently. A symlink is followed only when its
    target stays inside ``root`` (the item's ``path`` is then the resolved target, its key
    the link's own relative path); with ``follow_symlinks_inside=False`` every symlink is a
    ``symlink_not_followed`` BadItem. A directory reached again below itself is a
    ``symlink_loop``. Readability is proven by opening each file (``O_RDONLY``), so
    ``unreadable`` reflects the real permissions of the running user. Iterative: one sorted
    listing per open directory level. NotADirectoryError if ``root`` is not a directory.
    """
    root_real = os.path.realpath(root)
    root_st = os.stat(root_real)
    if not stat.S_ISDIR(root_st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
    prefix = root_real.rstrip(os.sep) + os.sep

    def inside(target: str) -> bool:
        return target == root_real or target.startswith(prefix)

    def key_of(rel: str) -> str:
        return item_key_for_path(root_real, os.path.join(root_real, rel))

    stack = [_Frame(_listing(root_real), 0, "", (root_st.st_dev, root_st.st_ino))]
    while stack:
        frame = stack[-1]
        if frame.pos >= len(frame.entries):
            stack.pop()
            continue
        entry = frame.entries[frame.pos]
        frame.pos += 1
        rel = f"{frame.rel}/{entry.name}" if frame.rel else entry.name
        real = entry.path
        try:
            if entry.is_symlink():
                if not follow_symlinks_inside:
                    yield BadItem(key_of(rel), "symlink_not_followed", "symlinks are not followed")
                    continue
                real = os.path.realpath(entry.path)
                try:
                    st = os.stat(entry.path)
                except OSError as exc:
                    yield _bad_link(key_of(rel), exc, inside(real), real)
                    continue
                if not inside(real):
                    yield BadItem(key_of(rel), "symlink_escape", f"points outside the root: {real}")
                    continue
            else:
                st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            yield BadItem(key_of(rel), "unreadable", f"cannot stat: {exc.strerror}")
            continue
        if stat.S_ISDIR(st.st_mode):
            ident = (st.st_dev, st.st_ino)
            if any(f.ident == ident for f in stack):
                yield BadItem(key_of(rel), "symlink_loop", "leads back to a directory above it")
                continue
            try:
                stack.append(_Frame(_listing(real), 0, rel, ident))
            except OSError as exc:
                yield BadItem(key_of(rel), "unreadable", f"cannot list: {exc.strerror}")
        elif not stat.S_ISREG(st.st_mode):
            yield BadItem(
                key_of(rel), "not_regular_file", "not a regular file (FIFO, socket, device)"
            )
        else:
            try:  # O_NONBLOCK: never hang if the file was swapped for a FIFO since the stat
                os.close(os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError as exc:
                yield BadItem(key_of(rel), "unreadable", f"cannot open: {exc.strerror}")
                continue
            yield SourceItem(key_of(rel), Path(real), None)


def _bad_link(key: str, exc: OSError, target_inside: bool, target: str) -> BadItem:
    if exc.errno == errno.ELOOP:
        return BadItem(key, "symlink_loop", "the symlink chain loops")
    if not target_inside:
        return BadItem(key, "symlink_escape", f"points outside the root: {target}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return BadItem(key, "dangling_symlink", f"the target does not exist: {target}")
    return BadItem(key, "unreadable", f"cannot stat the target: {exc.strerror}")


# --- manifests ------------------------------------------------------------------------------


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


def _make_item(
    raw: Mapping[str, str | None], line: int, base: Path, seen: KeySet
) -> SourceItem | BadItem:
    """Validate one manifest row (CSV or JSONL, already strings or None) into an item."""
    v = {f: (s.strip() or None) if s is not None else None for f, s in raw.items()}
    key = v.get("key") or v.get("url") or v.get("path")
    shown = key if key is not None and _is_text(key) else f"<line {line}>"
    if key is not None and shown == key and not seen.add(key):
        return BadItem(key, "duplicate_key", f"key {key!r} already appeared above", line)
    for field, value in v.items():
        if value is not None and not _is_text(value):
            return BadItem(shown, "bad_value", f"{field} is not valid UTF-8 text or has NUL", line)
    path, url = v.get("path"), v.get("url")
    if path and url:
        return BadItem(shown, "bad_value", "give either a path or a url, not both", line)
    if not path and not url:
        return BadItem(shown, "missing_field", "each row needs a path or a url", line)
    if url:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            return BadItem(shown, "bad_url", f"only http(s) URLs are accepted, not {url!r}", line)
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
    local = (base / path) if path else None  # `shown` is the key here: path or url is set
    return SourceItem(shown, local, url, name, v.get("label"), asset_type, line)


def iter_csv(path: str | os.PathLike[str]) -> Iterator[SourceItem | BadItem]:
    """Rows of a CSV manifest (UTF-8, BOM and CRLF accepted), streamed.

    A header row is required (ValueError otherwise), with a ``path`` and/or ``url`` column
    and optionally ``name``, ``label``, ``asset_type``, ``key`` (case-insensitive; other
    columns are ignored). Relative paths are joined to the manifest's directory. ``key`` is
    the ``key`` column, else the url, else the path as written; a key seen before (even on a
    bad row) makes the later row a ``duplicate_key``. ``line`` is the row's first physical
    line. A bad row becomes a BadItem and reading goes on.
    """
    manifest = Path(path).absolute()
    with open(manifest, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{manifest}: empty CSV; a header row is required") from None
        if not {"path", "url"} & set(header):
            raise ValueError(
                f"{manifest}: the header row needs a 'path' or 'url' column, found {header}"
            )
        if len(set(header)) != len(header):
            raise ValueError(f"{manifest}: repeated column names in the header {header}")
        columns = [(i, h) for i, h in enumerate(header) if h in _FIELDS]
        seen = KeySet()
        end = reader.line_num
        while True:
            line = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = reader.line_num
                yield BadItem(f"<line {line}>", "bad_csv", str(exc), line)
                continue
            end = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            fields = {h: (row[i] if i < len(row) else None) for i, h in columns}
            extra = row[len(header) :]
            if any(cell.strip() for cell in extra):
                item = _make_item(fields, line, manifest.parent, seen)
                msg = f"{len(row)} fields but the header has {len(header)}"
                yield BadItem(item.key, "bad_value", msg, line)
                continue
            yield _make_item(fields, line, manifest.parent, seen)


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[SourceItem | BadItem]:
    """Objects of a JSON Lines manifest, one per line, with the same fields as the CSV.

    Blank lines are skipped. A line that is not a JSON object (or is longer than 1 MiB, or
    not UTF-8) is ``bad_json``; a field that is neither a string nor null is ``bad_value``.
    """
    manifest = Path(path).absolute()
    seen = KeySet()
    with open(manifest, "rb") as f:
        line = 0
        while raw := f.readline(_MAX_JSON_LINE + 1):
            line += 1
            if len(raw) > _MAX_JSON_LINE and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                    raw = f.readline(_MAX_JSON_LINE)
                yield BadItem(f"<line {line}>", "bad_json", "line longer than 1 MiB", line)
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
                item = _make_item(ok, line, manifest.parent, seen)
                yield BadItem(item.key, "bad_value", "; ".join(wrong), line)
                continue
            yield _make_item(fields, line, manifest.parent, seen)


def open_source(spec: str | os.PathLike[str]) -> Iterator[SourceItem | BadItem]:
    """The reader for ``spec``: a directory, a ``.csv``, or a ``.jsonl``/``.ndjson`` manifest.

    ValueError (checked now, not at the first item) for a path that does not exist or has
    another suffix.
    """
    source = Path(spec)
    if source.is_dir():
        return iter_directory(source)
    if not source.exists():
        raise ValueError(f"{source}: no such file or directory")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return iter_csv(source)
    if suffix in (".jsonl", ".ndjson"):
        return iter_jsonl(source)
    raise ValueError(
        f"{source}: unsupported source; give a directory, a .csv manifest or a .jsonl/.ndjson one"
    )
