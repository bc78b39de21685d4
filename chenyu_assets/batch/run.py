"""Entry points of a bulk ingest: :func:`ingest` (a report) and :func:`open_ingest`
(results as they complete)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import ObjectReceiveStream

from chenyu_assets._core.logs import get_logger
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch.filters import PathFilter
from chenyu_assets.batch.journal_thread import AsyncJournal
from chenyu_assets.batch.orchestrator import Pipeline
from chenyu_assets.batch.sources import BadItem, IgnoredItem, SourceItem, open_source
from chenyu_assets.batch.staging import S3Staging
from chenyu_assets.batch.types import Event, IngestOptions, IngestReport, IngestResult
from chenyu_assets.batch.work import NO_SEAMS, WorkerSeams
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.limits import SlotPool, Slots

__all__ = ["IngestStream", "ingest", "open_ingest", "run_record"]

log = get_logger("chenyu_assets.batch")


class IngestStream:
    """Results of a running ingest, as they complete (``async for``); ``report`` is final
    once the iteration ends."""

    def __init__(self, run: Pipeline, results: ObjectReceiveStream[IngestResult]) -> None:
        self._run = run
        self._results = results
        self.done = anyio.Event()

    @property
    def report(self) -> IngestReport:
        return self._run.report

    def processing(self) -> int:
        """Processing slots in use now (for progress displays)."""
        return self._run.slots.in_use()

    async def __aiter__(self) -> AsyncIterator[IngestResult]:
        async with self._results:
            async for result in self._results:
                yield result


@asynccontextmanager
async def open_ingest(
    ark: ArkFamilyClient,
    source: str | os.PathLike[str] | Iterable[SourceItem | BadItem | IgnoredItem],
    *,
    group_id: str,
    journal: str | os.PathLike[str] | None = None,
    chenyu: ChenyuClient | None = None,
    options: IngestOptions | None = None,
    slots: Slots | None = None,
    on_event: Callable[[Event], None] | None = None,
    run_info: Mapping[str, str] | None = None,
    unique_keys: bool = False,
    seams: WorkerSeams = NO_SEAMS,
) -> AsyncIterator[IngestStream]:
    """Run an ingest in the background and yield its results as they complete::

        async with open_ingest(ark, "photos/", group_id=gid, journal="ingest.db",
                               chenyu=chenyu) as run:
            async for result in run:
                print(result.key, result.status, result.reference)
        print(run.report)

    ``source`` is a directory, a ``.csv`` / ``.jsonl`` manifest, or any iterable of
    :class:`SourceItem`. ``journal`` is the SQLite journal that makes a rerun resume
    (a temporary one when None: then nothing survives a crash). Local files are staged
    through ``chenyu`` or, with ``options.stage``, in your own S3 bucket (see
    :mod:`chenyu_assets.batch.staging`). Leaving the block early
    cancels the run; the journal stays consistent. ``unique_keys=True`` promises that
    the iterable never repeats a key (the manifest readers guarantee it), which saves one
    8-byte hash per item. ``seams`` plugs a work queue into the run (see
    :class:`~chenyu_assets.batch.work.WorkerSeams` and :mod:`chenyu_assets.batch.queue`).
    """
    opts = options or IngestOptions()
    if isinstance(source, str | os.PathLike):
        items: Iterable[SourceItem | BadItem | IgnoredItem] = open_source(
            Path(source),
            allow_outside=opts.allow_outside_paths,
            follow_symlinks=opts.follow_symlinks,
            filters=PathFilter(opts.include, opts.exclude, ignore_case=opts.ignore_case),
        )
        unique_keys = True  # the readers refuse duplicate keys themselves
    else:
        items = source
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if journal is None:
        tmp = tempfile.TemporaryDirectory(prefix="chenyu-ingest-")
        journal = Path(tmp.name) / "journal.db"
    jt = AsyncJournal()
    info = {"group_id": group_id, **(run_info or {})}
    stack = AsyncExitStack()
    try:
        staging = None
        if opts.stage is not None:  # the S3 client (and aiobotocore) only when asked for
            client = opts.stage.client(pool=max(2, opts.upload_concurrency + 2))
            staging = S3Staging(opts.stage, await stack.enter_async_context(client))
        await jt.open(journal, run_info=info)
        send, receive = anyio.create_memory_object_stream[IngestResult](opts.queue_size)
        run = Pipeline(
            ark,
            items,
            group_id=group_id,
            journal=jt,
            chenyu=chenyu,
            options=opts,
            slots=slots or _pool(ark, opts.max_processing),
            on_event=on_event,
            send_results=send,
            check_keys=not unique_keys,
            staging=staging,
            seams=seams,
        )
        stream = IngestStream(run, receive)
        started, finished = time.time(), False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run.main, stream.done)
                yield stream
                finished = stream.done.is_set()  # reached without a cancellation
                if not finished:  # the caller stopped early
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                record = run_record(run.report, started, finished, opts.dry_run)
                try:
                    await jt.set_meta("last_run", json.dumps(record))
                except Exception as exc:  # the run's own outcome matters more
                    log.warning("could not store the run record in the journal: %s", exc)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await stack.aclose()  # the S3 client's connections, even when cancelled
        await jt.close()
        if tmp is not None:
            tmp.cleanup()


def run_record(
    report: IngestReport, started: float, finished: bool, dry_run: bool
) -> dict[str, object]:
    """What ``meta.last_run`` holds at the end of each run (``chenyu-assets status``)."""
    status = "fatal" if report.fatal else "completed" if finished else "interrupted"
    fields = ("total", "active", "failed", "skipped", "planned", "resumed", "recovered")
    return {
        "started": round(started, 3),
        "ended": round(time.time(), 3),
        "status": status,
        "dry_run": dry_run,
        **{f: getattr(report, f) for f in fields},
        "creates": report.creates,
        "status_calls": report.status_calls,
        "rate_limited": report.rate_limited,
        "retries": report.retries,
        "elapsed": round(report.elapsed, 3),
        "fatal": report.fatal,
        "failures": dict(report.failures),
    }


def _pool(ark: ArkFamilyClient, limit: int) -> Slots:
    """The client's Processing slots when they have this limit (then the ingest and the
    client's other creates share the cap), else a pool of the ingest's own."""
    pool = ark.watcher.slots
    return pool if pool is not None and pool.limit == limit else SlotPool(limit)


async def ingest(
    ark: ArkFamilyClient,
    source: str | os.PathLike[str] | Iterable[SourceItem | BadItem | IgnoredItem],
    *,
    group_id: str,
    journal: str | os.PathLike[str] | None = None,
    chenyu: ChenyuClient | None = None,
    options: IngestOptions | None = None,
    slots: Slots | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_result: Callable[[IngestResult], None] | None = None,
) -> IngestReport:
    """Ingest ``source`` into ``group_id`` and return the report (see :func:`open_ingest`)."""
    async with open_ingest(
        ark,
        source,
        group_id=group_id,
        journal=journal,
        chenyu=chenyu,
        options=options,
        slots=slots,
        on_event=on_event,
    ) as run:
        async for result in run:
            if on_result is not None:
                on_result(result)
    return run.report
