"""The items a source yields: :class:`SourceItem`, :class:`BadItem`, and the
:class:`SourceError` of a source that cannot be read at all (see :mod:`.sources`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadItem", "SourceError", "SourceItem"]


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
