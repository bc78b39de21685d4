"""What moves between the stages of an ingest, and the seams the stages are built on.

Each stage is a class *given* its collaborators: the client (:class:`~chenyu_assets._api.AssetAPI`),
the journal (:class:`~chenyu_assets.batch.journal_thread.JournalFacade`), where results and
progress go (:class:`EventSink`), and, for the create stage, where a local file's URL comes
from (:class:`UrlProvider`). Nothing is filled in by a subclass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from chenyu_assets.batch.journal import Entry
from chenyu_assets.batch.sources import BadItem, SourceItem
from chenyu_assets.batch.types import IngestResult, Outcome
from chenyu_assets.errors import APIError, TransportError, UploadError, is_transient

T = TypeVar("T")

__all__ = [
    "NO_SEAMS",
    "EventSink",
    "Fatal",
    "ItemRef",
    "Tracked",
    "UrlProvider",
    "Work",
    "WorkerSeams",
]


class Fatal(Exception):
    """Stop all new work; the journal is consistent."""


@dataclass(frozen=True, slots=True)
class Tracked:
    """An item whose asset the watcher watches."""

    key: str
    name: str
    asset_id: str
    source: str


class ItemRef(Protocol):
    """What a result names: a journal :class:`Entry` or a :class:`Tracked` item."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...


class Work:
    """One item moving through the stages. ``url``/``url_expires``: a presigned URL of a
    staged file, kept in memory only (see :mod:`chenyu_assets.batch.staging`)."""

    __slots__ = ("entry", "item", "reconcile", "url", "url_expires")

    def __init__(self, entry: Entry, item: SourceItem | None, *, reconcile: bool = False) -> None:
        self.entry = entry
        self.item = item
        self.reconcile = reconcile
        self.url: str | None = None
        self.url_expires: float | None = None


class EventSink(Protocol):
    """Where the stages report: progress events, and each item's end."""

    def emit(self, kind: str, key: str | None = None, **data: Any) -> None: ...

    async def finish(self, result: IngestResult) -> None: ...

    async def finish_entry(
        self,
        item: ItemRef,
        outcome: Outcome,
        *,
        asset_id: str | None = None,
        code: str | None = None,
        message: str | None = None,
        record: bool = True,
    ) -> None:
        """The result of ``item``; with ``record`` its journal row is finished first (as
        the terminal state of ``outcome``), else it stays resumable for the next run."""
        ...

    def adopted(self, key: str) -> None:
        """``key``'s asset was adopted from the group: its result says so."""
        ...


class UrlProvider(Protocol):
    """A URL CreateAsset can fetch for a local file (uploaded to Chenyu, or staged in S3)."""

    async def ensure(self, work: Work) -> bool:
        """Give ``work`` a URL (journaled); False when the item ended instead."""
        ...

    async def refresh(self, work: Work) -> None:
        """Renew ``work.url`` if it would not stay valid long enough (staged files)."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerSeams:
    """What a run fed by a work queue (:mod:`chenyu_assets.batch.queue`) plugs into the
    engine, given to :func:`~chenyu_assets.batch.open_ingest` as one object; every field
    left None does nothing (the default run pays one ``is None`` test per use).

    - ``batches``: the items to ingest, a batch at a time (instead of the source); an
      item whose Name ``must_reconcile`` is dispatched in a task of its own;
    - ``must_reconcile(name)``: a create of this Name may have been sent elsewhere: the
      item is reconciled by its exact Name (waiting for list lag), not by the name index;
    - ``may_send(entry)``: awaited before an item's CreateAsset; False drops the item
      (the gate releases it; an ``retried`` event says why);
    - ``pace(path)``: awaited before a local file is uploaded or staged;
    - ``done(result)``: awaited with each result before it is reported;
    - ``asset(key, asset_id)``: an item's asset is known (created, recovered, adopted).
    """

    batches: Callable[[], AsyncIterator[list[SourceItem | BadItem]]] | None = None
    must_reconcile: Callable[[str], bool] | None = None
    may_send: Callable[[Entry], Awaitable[bool]] | None = None
    pace: Callable[[Path], Awaitable[None]] | None = None
    done: Callable[[IngestResult], Awaitable[None]] | None = None
    asset: Callable[[str, str], None] | None = None


NO_SEAMS = WorkerSeams()


async def tried(
    sink: EventSink,
    entry: Entry,
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    tries: int,
    pause: float,
    fatal: Callable[[APIError | TransportError], str | None],
) -> T | None:
    """``op()`` for one item's file (an upload, a staging), tried up to ``tries`` times;
    None when the item ended instead (``sink`` told). An :class:`UploadError` is the file's
    own fault: ``skipped`` with its reason. A transient failure (the client's retries or its
    budget ran out) pauses ``pause`` × the try number and tries again, and after the last try
    leaves the item ``retryable`` (not journaled as finished, so a rerun takes it); any other
    API or transport failure is ``failed``. ``fatal(exc)`` returns the message of a failure
    that must stop the run (credentials, a missing bucket), raised as :class:`Fatal`."""
    for attempt in range(1, tries + 1):
        try:
            return await op()
        except UploadError as exc:
            await sink.finish_entry(entry, Outcome.SKIPPED, code=exc.reason, message=str(exc))
            return None
        except (APIError, TransportError) as exc:
            stop = fatal(exc)
            if stop is not None:
                raise Fatal(stop) from None
            transient = is_transient(exc)
            if transient and attempt < tries:
                sink.emit("retried", entry.key, reason=f"{what} failed: {exc}")
                await anyio.sleep(pause * attempt)
                continue
            await sink.finish_entry(
                entry, Outcome.FAILED, code="upload_failed", message=str(exc), record=not transient
            )
            return None
    return None  # pragma: no cover - the last try returns above
