"""The items a source yields: :class:`SourceItem`, :class:`BadItem`, :class:`IgnoredItem`,
and the :class:`SourceError` of a source that cannot be read at all (see :mod:`.sources`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadItem", "IgnoredItem", "SourceError", "SourceItem"]


class SourceError(ValueError):
    """The source as a whole cannot be read: missing, not a regular file, an unsupported
    suffix, a CSV without a usable header. The message names the file."""


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


@dataclass(frozen=True, slots=True)
class IgnoredItem:
    """Something a directory walk passed over on purpose: not an item, not a failure.

    ``reason`` is stable: ``not_media`` (no media suffix and no media signature),
    ``excluded`` (an ``--include``/``--exclude`` rule; a pruned directory counts once),
    ``symlinked_directory`` (not followed without ``follow_symlinks``), ``already_walked``
    (a directory reached again through a symlink). The ingest counts these in
    ``IngestReport.ignored`` and they never change the exit code.
    """

    key: str
    reason: str
    message: str
