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
``bad_value``, ``bad_url``, ``name_too_long``, ``duplicate_key``, ``outside_manifest``,
``bad_csv``, ``bad_json`` (manifests). A bad row's key is the key it would have had, else
``<line N>``.

Hostile manifests cannot hurt: a manifest must be a regular file (a FIFO, a device such as
``/dev/zero`` or a directory named ``.csv`` is a :class:`SourceError` at once, never a hang);
a CSV record or JSONL line longer than :data:`MAX_LINE` (64 KiB) is a ``bad_csv`` /
``bad_json`` item, skipped while reading at most ``MAX_LINE`` characters at a time, so memory
is bounded by the cap whatever the file holds (an over-long header refuses the manifest); a
``path`` that leads outside the manifest's folder (absolute, ``..``, or a symlink out) is
``outside_manifest`` unless ``allow_outside=True``; a URL carrying ``user:password@`` is
``bad_url`` and its credentials are neither kept in the key nor shown.

A directory walk also yields :class:`IgnoredItem` (``not_media``, ``excluded``,
``symlinked_directory``, ``already_walked``): files it passes over on purpose, counted but
neither ingested nor skipped. "Not media" is only the cheap test (no media suffix and no
media magic bytes, :data:`~chenyu_assets.media.MEDIA_SUFFIXES`); whether a file really is
acceptable media is the pre-flight's verdict (and it infers the asset type when the manifest
does not give one). ``--include``/``--exclude`` rules: :mod:`.filters`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chenyu_assets import media

from .filters import PathFilter
from .items import BadItem, IgnoredItem, SourceError, SourceItem
from .manifests import MANIFEST_SUFFIXES, MAX_LINE, KeySet, iter_csv, iter_jsonl, url_has_userinfo
from .naming import item_key_for_path

__all__ = [
    "MAX_LINE",
    "BadItem",
    "IgnoredItem",
    "KeySet",
    "PathFilter",
    "SourceError",
    "SourceItem",
    "iter_csv",
    "iter_directory",
    "iter_jsonl",
    "open_source",
    "url_has_userinfo",
]


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
    root: str | os.PathLike[str],
    *,
    follow_symlinks_inside: bool = True,
    follow_symlinks: bool = False,
    filters: PathFilter | None = None,
) -> Iterator[SourceItem | BadItem | IgnoredItem]:
    """Regular files under ``root``, depth first, sorted by name (bytes) at each level.

    Hidden names (leading ``.``) are skipped silently. A symlink to a *file* is followed only
    when its target stays inside ``root`` (the item's ``path`` is then the resolved target,
    its key the link's own relative path). A symlink to a *directory* is not followed (an
    :class:`IgnoredItem` ``symlinked_directory``) unless ``follow_symlinks=True``; then it is
    followed when it stays inside ``root``, and every directory is walked once: one reached
    again below itself is a ``symlink_loop`` BadItem, one reached again elsewhere an
    ``already_walked`` IgnoredItem (a set of (device, inode) pairs, one per directory).
    With ``follow_symlinks_inside=False`` every symlink is a ``symlink_not_followed``
    BadItem.

    ``filters`` (see :mod:`.filters`) leaves files out as ``excluded`` (and does not list a
    directory an exclude rule covers whole). A file with no media suffix
    (:data:`~chenyu_assets.media.MEDIA_SUFFIXES`) whose first bytes are no known media is
    ``not_media``. Both are IgnoredItems: counted, never skipped. Readability is proven by
    opening each file (``O_RDONLY``), so ``unreadable`` reflects the real permissions of the
    running user. Iterative: one sorted listing per open directory level.
    NotADirectoryError if ``root`` is not a directory.
    """
    root_real = os.path.realpath(root)
    root_st = os.stat(root_real)
    if not stat.S_ISDIR(root_st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
    prefix = root_real.rstrip(os.sep) + os.sep
    rules = filters if filters is not None and filters.active else None

    def inside(target: str) -> bool:
        return target == root_real or target.startswith(prefix)

    def key_of(rel: str) -> str:
        return item_key_for_path(root_real, os.path.join(root_real, rel))

    walked = {(root_st.st_dev, root_st.st_ino)}
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
        linked = False
        try:
            if entry.is_symlink():
                if not follow_symlinks_inside:
                    yield BadItem(key_of(rel), "symlink_not_followed", "symlinks are not followed")
                    continue
                linked = True
                real = os.path.realpath(entry.path)
                try:
                    st = os.stat(entry.path)
                except OSError as exc:
                    yield _bad_link(key_of(rel), exc, inside(real), real)
                    continue
                if stat.S_ISDIR(st.st_mode) and not follow_symlinks:
                    msg = "a symlinked directory (follow it with --follow-symlinks)"
                    yield IgnoredItem(key_of(rel), "symlinked_directory", msg)
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
            if ident in walked:
                msg = "this directory was already walked under another path"
                yield IgnoredItem(key_of(rel), "already_walked", msg)
                continue
            if rules is not None and rules.prunes(rel):
                yield IgnoredItem(key_of(rel) + "/", "excluded", "the directory is excluded")
                continue
            walked.add(ident)
            try:
                stack.append(_Frame(_listing(real), 0, rel, ident))
            except OSError as exc:
                yield BadItem(key_of(rel), "unreadable", f"cannot list: {exc.strerror}")
        elif rules is not None and not rules.wants(rel):
            yield IgnoredItem(key_of(rel), "excluded", "left out by --include/--exclude")
        elif not stat.S_ISREG(st.st_mode):
            yield BadItem(
                key_of(rel), "not_regular_file", "not a regular file (FIFO, socket, device)"
            )
        else:
            try:  # O_NONBLOCK: never hang if the file was swapped for a FIFO since the stat
                fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                yield BadItem(key_of(rel), "unreadable", f"cannot open: {exc.strerror}")
                continue
            try:
                names = (entry.name, os.path.basename(real)) if linked else (entry.name,)
                media_like = _media_like(fd, *names)
            finally:
                os.close(fd)
            if not media_like:
                msg = "not media (no media suffix, no media signature)"
                yield IgnoredItem(key_of(rel), "not_media", msg)
                continue
            yield SourceItem(key_of(rel), Path(real), None)


def _media_like(fd: int, *names: str) -> bool:
    """A media suffix on any of ``names``, or media magic in the file's first 64 bytes."""
    if any(os.path.splitext(n)[1].lower() in media.MEDIA_SUFFIXES for n in names):
        return True
    try:
        head = os.pread(fd, 64, 0)
    except OSError:
        return True  # let the pre-flight say what is wrong with it
    return media.sniff(head) is not None


def _bad_link(key: str, exc: OSError, target_inside: bool, target: str) -> BadItem:
    if exc.errno == errno.ELOOP:
        return BadItem(key, "symlink_loop", "the symlink chain loops")
    if not target_inside:
        return BadItem(key, "symlink_escape", f"points outside the root: {target}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return BadItem(key, "dangling_symlink", f"the target does not exist: {target}")
    return BadItem(key, "unreadable", f"cannot stat the target: {exc.strerror}")


def open_source(
    spec: str | os.PathLike[str],
    *,
    allow_outside: bool = False,
    follow_symlinks: bool = False,
    filters: PathFilter | None = None,
) -> Iterator[SourceItem | BadItem | IgnoredItem]:
    """The reader for ``spec``: a directory, a ``.csv``, a ``.jsonl``/``.ndjson`` manifest, or
    any other regular file as a one-item source (its key is its file name; the pre-flight
    decides whether it is media).

    SourceError (checked now, not at the first item) for a path that does not exist, a
    manifest that is not a regular file, a CSV without a usable header, or a non-manifest
    path that is not a regular file. ``allow_outside`` lets manifest paths leave the
    manifest's folder. ``follow_symlinks`` and ``filters`` apply to a directory walk only
    (see :func:`iter_directory`); a manifest lists exactly what it means.
    """
    source = Path(spec)
    kind = MANIFEST_SUFFIXES.get(source.suffix.lower())
    if kind == "CSV":
        return iter_csv(source, allow_outside=allow_outside)
    if kind == "JSONL":
        return iter_jsonl(source, allow_outside=allow_outside)
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise SourceError(f"{source}: no such file or directory") from None
    except OSError as exc:
        raise SourceError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        return iter_directory(source, follow_symlinks=follow_symlinks, filters=filters)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(
            f"{source}: not a regular file (FIFO, device, socket); give a directory, "
            "a file, or a .csv / .jsonl manifest"
        )
    return _one_file(source)


def _one_file(path: Path) -> Iterator[SourceItem | BadItem]:
    real = os.path.realpath(path)
    yield SourceItem(item_key_for_path(os.path.dirname(real), real), Path(real), None)
