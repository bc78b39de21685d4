"""Bulk ingest: a bounded pipeline from a source to Active assets, crash-safe and
duplicate-free.

::

    source ─► register ─► pre-flight ─► upload (local files) ─► create ─► watcher ─► results
              (journal)   (media check,  (Chenyu, signed URL,   (slot,      (the client's
                          URL safety)    or S3 + presigned URL) intent,     status sweep)
                                                                send)

Every stage is a fixed number of tasks joined by bounded memory streams (never one task
per item), so memory is flat whatever the manifest's size. All stages share the clients'
per-action limiters. A *processing slot* is taken before CreateAsset and given back when
the client's watcher (:mod:`chenyu_assets.watcher`, the one status sweep every caller of
the client shares) sees the asset ``Active`` or ``Failed``: at most ``max_processing`` of
the account's assets are ``Processing`` at once.

No duplicates: each item has a deterministic Name; the journal records the intent before
every CreateAsset and the outcome right after. An ambiguous outcome (timeout, reset, 5xx
after sending) is reconciled by listing the group for that exact Name, waiting a bounded
time for list lag, before any re-create. A resumed run does the same for items left in
``creating`` / ``unknown``, tracks ``created`` ones, and sends nothing for finished ones.

One failing item never stops the others: each ends as ``active``, ``failed`` (with a
reason code) or ``skipped``; an item whose key or asset Name an earlier item of the run
already has is skipped as ``duplicate_key`` / ``duplicate_name`` (two 8-byte hashes per
item). Bad credentials, a denied permission or a missing group stop new work at once with
the journal intact (``IngestReport.fatal``), whether a create, an upload or status polling
meets them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Iterator

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from chenyu_assets._core.logs import redact_text, redact_url
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch import hooks
from chenyu_assets.batch.adopt import Adoption, Found
from chenyu_assets.batch.checks import hash_and_check, url_problem
from chenyu_assets.batch.create import CreateStage
from chenyu_assets.batch.fingerprints import register_items, replace_asset
from chenyu_assets.batch.journal import TERMINAL, Entry, ItemState
from chenyu_assets.batch.journal_rows import OUTCOME_OF
from chenyu_assets.batch.journal_thread import JournalFacade, take
from chenyu_assets.batch.results import Results
from chenyu_assets.batch.reuse import Reuse
from chenyu_assets.batch.sources import (
    BadItem,
    IgnoredItem,
    KeySet,
    SourceItem,
    url_has_userinfo,
)
from chenyu_assets.batch.staging import S3Staging
from chenyu_assets.batch.tracking import Tracker
from chenyu_assets.batch.types import Event, IngestOptions, IngestReport, IngestResult, Outcome
from chenyu_assets.batch.upload import Uploads
from chenyu_assets.batch.work import NO_SEAMS, Fatal, Work, WorkerSeams
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    LimiterUnavailableError,
    MediaCheckError,
    PermissionDeniedError,
    TransportError,
)
from chenyu_assets.events import IngestEvent, next_call_id
from chenyu_assets.limits import Slots

__all__ = ["Pipeline"]


class Pipeline:
    """One ingest run (see :func:`open_ingest`): the stages, each given its collaborators.

    ``results`` is the run's sink, ``tracker`` the watcher side, ``uploads`` the URL
    provider and upload stage, ``reuse`` retries and adoption, ``creator`` the create
    stage; this class registers the source, dispatches each row and runs them all."""

    def __init__(
        self,
        ark: ArkFamilyClient,
        source: Iterable[SourceItem | BadItem | IgnoredItem],
        *,
        group_id: str,
        journal: JournalFacade,
        chenyu: ChenyuClient | None,
        options: IngestOptions,
        slots: Slots,
        on_event: Callable[[Event], None] | None,
        send_results: ObjectSendStream[IngestResult],
        check_keys: bool = True,
        staging: S3Staging | None = None,
        seams: WorkerSeams = NO_SEAMS,
    ) -> None:
        self.ark = ark
        self.seams = seams
        self.staging = staging
        self.source = source
        self.group_id = group_id
        self.journal = journal
        self.opt = options
        self.slots = slots
        self.report = IngestReport()
        on_finished = None
        if staging is not None:
            self.report.staging = staging.stats

            def on_finished(result: IngestResult) -> None:
                staging.finished(result.key, result.status is Outcome.ACTIVE)

        self.results = Results(
            journal,
            self.report,
            send_results,
            on_event=on_event,
            hook_set=ark.hooks,
            on_finished=on_finished,
            on_done=seams.done,
            on_asset=seams.asset,
        )
        self.on_event = on_event
        self.tracker = Tracker(ark, self.results, self.report, group_id=group_id, options=options)
        self.uploads = Uploads(
            journal, self.results, options=options, chenyu=chenyu, staging=staging, pace=seams.pace
        )
        self.creator = CreateStage(
            ark,
            journal,
            self.uploads,
            self.results,
            self.tracker,
            group_id=group_id,
            options=options,
            slots=slots,
            report=self.report,
            gate=seams.may_send,
        )
        self.reuse = Reuse(
            ark,
            journal,
            Adoption(ark, group_id),
            self.results,
            self.tracker,
            options=options,
            report=self.report,
            must_reconcile=seams.must_reconcile,
            reconcile=self._reconciled,
        )
        self._keys = KeySet() if check_keys else None  # see _unique
        self._names = KeySet()
        self.emit = self.results.emit
        self.finish = self.results.finish

    async def main(self, done: anyio.Event) -> None:
        """All stages, then the watcher until nothing of this run is processing; fatal stops
        cleanly."""
        started = asyncio.get_running_loop().time()
        base_retries, base_429 = self.ark.stats.retries, self.ark.stats.rate_limited

        hook, run_id = hooks.forwarder(self.emit), next_call_id()
        if self.on_event is not None:  # no hook: no event is built
            self.ark.add_hook(hook)
        if self.ark.hooks:
            self.ark.hooks.emit(IngestEvent("started", run_id, self.group_id))
        o, watcher = self.opt, self.ark.watcher
        saved = watcher.tuning()  # the run's poll options, restored at its end
        watcher.tune(
            min_interval=o.poll_min_interval,
            starved_interval=o.poll_starved_interval,
            starved_divisor=16,
            max_interval=o.poll_max_interval,
            lookback=o.poll_lookback,
            stale_after=o.stale_after,
        )
        base_calls = watcher.status_calls
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self.tracker.collect)
                await self._stages()
                await self.tracker.wait_idle()
                if self.staging is not None:
                    await self.staging.cleanup(self.results)
                outer.cancel_scope.cancel()
        except* (Fatal, LimiterUnavailableError) as group:  # a shared limiter lost: stop
            fatal = "; ".join(dict.fromkeys(str(e) for e in _leaves(group)))
            self.report.fatal = redact_text(fatal)
        finally:
            self.ark.remove_hook(hook)
            watcher.tune(**saved)
            self.report.elapsed = asyncio.get_running_loop().time() - started
            self.report.status_calls += watcher.status_calls - base_calls
            self.report.retries = self.ark.stats.retries - base_retries
            self.report.rate_limited = self.ark.stats.rate_limited - base_429
            if self.ark.hooks:
                self.ark.hooks.emit(hooks.ended(run_id, self.group_id, self.report))
            done.set()
            await self.results.send.aclose()

    async def _stages(self) -> None:
        o = self.opt
        size = o.queue_size
        to_pre, pre_in = anyio.create_memory_object_stream[Work](size)
        to_up, up_in = anyio.create_memory_object_stream[Work](size)
        to_create, create_in = anyio.create_memory_object_stream[Work](size)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.produce, to_pre, to_create.clone())
            for _ in range(o.preflight_concurrency):
                tg.start_soon(self.preflight, pre_in.clone(), to_up.clone())
            for _ in range(o.upload_concurrency):
                tg.start_soon(self.uploads.run, up_in.clone(), to_create.clone())
            for _ in range(o.create_concurrency):
                tg.start_soon(self.creator.run, create_in.clone())
            for stream in (pre_in, to_up, up_in, to_create, create_in):
                stream.close()

    async def _reconciled(self, name: str) -> Found | None:
        return Found.of(await self.creator.reconcile(name, wait=True))

    # -- stages ------------------------------------------------------------------------
    async def produce(self, out: ObjectSendStream[Work], resume: ObjectSendStream[Work]) -> None:
        batches, must = self.seams.batches, self.seams.must_reconcile
        # a work queue's claimed items (unique, no ignored ones); one whose Name must be
        # reconciled (waiting for list lag) is dispatched in a task: not in the others' way
        if batches is not None:
            async with out, resume, anyio.create_task_group() as tg:
                async for claimed in batches():
                    for entry, item in await register_items(self.journal, claimed):
                        if must and not isinstance(entry, BadItem) and must(entry.name):
                            tg.start_soon(self._dispatch, entry, item, out, resume)
                        else:
                            await self._dispatch(entry, item, out, resume)
            return
        async with out, resume:
            iterator = iter(self.source)
            while taken := await anyio.to_thread.run_sync(take, iterator, 256):
                batch = [self._unique(item) for item in self._drop_ignored(taken)]
                for entry, item in await register_items(self.journal, batch):
                    await self._dispatch(entry, item, out, resume)

    def _drop_ignored(
        self, taken: list[SourceItem | BadItem | IgnoredItem]
    ) -> list[SourceItem | BadItem]:
        """``taken`` without its :class:`IgnoredItem`, each counted (not a result: it
        changes no exit code) and emitted as an ``ignored`` event."""
        kept: list[SourceItem | BadItem] = []
        for item in taken:
            if isinstance(item, IgnoredItem):
                self.report.ignore(item.reason)
                self.emit("ignored", item.key, reason=item.reason)
            else:
                kept.append(item)
        return kept

    def _unique(self, item: SourceItem | BadItem) -> SourceItem | BadItem:
        """``item``, or a BadItem when an earlier item had its key (both would share one
        journal row) or its explicit asset Name (reconciliation finds assets by Name, so
        both could be mapped to one asset and one result lost).

        Memory stays at one 8-byte hash per item: a manifest reader already refuses
        duplicate keys (``check_keys=False`` then), and a generated Name carries a 64-bit
        hash of its key, so only explicit Names need a set of their own."""
        if isinstance(item, BadItem):
            return item
        if item.url is not None and url_has_userinfo(item.url):  # never journaled nor sent
            key = redact_url(item.key) if url_has_userinfo(item.key) else item.key
            msg = "the URL carries credentials (user:password@); refused"
            return BadItem(key, "bad_url", msg, item.line)
        if self._keys is not None and not self._keys.add(item.key):
            return BadItem(item.key, "duplicate_key", "the same key appeared above", item.line)
        if item.name and not self._names.add(item.name):
            msg = f"asset name {item.name!r} is already taken by an item above"
            return BadItem(item.key, "duplicate_name", msg, item.line)
        return item

    async def _dispatch(
        self,
        entry: Entry | BadItem,
        item: SourceItem | None,
        out: ObjectSendStream[Work],
        resume: ObjectSendStream[Work],
    ) -> None:
        if isinstance(entry, BadItem):
            await self.finish(
                IngestResult(
                    entry.key,
                    "",
                    Outcome.SKIPPED,
                    entry.key,
                    error_code=entry.reason,
                    message=entry.message,
                )
            )
            return
        self.emit("queued", entry.key)
        if entry.state in TERMINAL:
            entry = await self.reuse.retry_if_allowed(entry) or entry
        if entry.state in TERMINAL:
            if entry.changed and entry.state is ItemState.ACTIVE:
                if self.opt.replace_changed:
                    replaced = await self._replace(entry)
                    if replaced is not None:
                        await self._dispatch(replaced, item, out, resume)
                        return
                await self.finish(
                    IngestResult(
                        entry.key,
                        entry.name,
                        Outcome.SKIPPED,
                        entry.source,
                        entry.asset_id,
                        "source_changed",
                        "the file's content changed after its asset was created; the old "
                        "asset could not be deleted yet: rerun to try again"
                        if self.opt.replace_changed
                        else "the file's content changed after its asset was created; rerun "
                        "with --replace-changed (replace_changed=True) to delete the old "
                        "asset and create it anew",
                        resumed=True,
                    )
                )
                return
            await self.finish(
                IngestResult(
                    entry.key,
                    entry.name,
                    OUTCOME_OF[entry.state],
                    entry.source,
                    entry.asset_id,
                    entry.error_code,
                    entry.error_message,
                    resumed=True,
                )
            )
            return
        if self.opt.dry_run:
            await self.finish(IngestResult(entry.key, entry.name, Outcome.PLANNED, entry.source))
            return
        work = Work(entry, item)
        pending = entry.state in (ItemState.PENDING, ItemState.UPLOADED)
        if pending and not await self.reuse.drop_stale(entry):
            return
        if pending and await self.reuse.adopt_if_present(work, resume):
            return
        if entry.state in (ItemState.CREATED, ItemState.CREATING, ItemState.UNKNOWN):
            await resume.send(Work(entry, item, reconcile=entry.state is not ItemState.CREATED))
        else:
            await out.send(work)

    async def _replace(self, entry: Entry) -> Entry | None:
        """``replace_changed``: the old asset deleted and the row PENDING (None when the
        delete failed: the item is then reported ``source_changed``). The group's name
        index forgets the old asset first, so that it is never adopted once deleted."""
        try:
            if self.opt.adopt_existing:
                await self.reuse.forget(entry.name)
            return await replace_asset(self.ark, self.journal, entry)
        except (AuthenticationError, PermissionDeniedError) as exc:
            raise Fatal(f"DeleteAsset refused: {exc}") from exc
        except (APIError, TransportError) as exc:
            self.emit("retried", entry.key, reason=f"could not delete the old asset: {exc}")
            return None

    async def preflight(
        self, inbox: ObjectReceiveStream[Work], out: ObjectSendStream[Work]
    ) -> None:
        async with inbox, out:
            async for work in inbox:
                if await self._preflight_one(work):
                    await out.send(work)

    async def _preflight_one(self, work: Work) -> bool:
        entry, item = work.entry, work.item
        if item is None:
            item = SourceItem(
                key=entry.key,
                path=entry.path,
                url=None if entry.path else entry.source,
                name=entry.name,
                label=entry.label,
                asset_type=entry.asset_type,
            )
            work.item = item
        if item.url is not None:
            problem = url_problem(item.url, self.opt.allow_private_urls)
            if problem:
                await self.results.finish_entry(
                    entry,
                    Outcome.SKIPPED,
                    code="bad_url",
                    message=problem,
                )
                return False
            return True
        if item.path is None:
            await self.results.finish_entry(
                entry,
                Outcome.SKIPPED,
                code="no_source",
                message="item has neither a path nor a URL",
            )
            return False
        if not self.opt.preflight:
            return True
        try:
            digest, info = await anyio.to_thread.run_sync(
                hash_and_check, item.path, item.asset_type
            )
        except MediaCheckError as exc:
            await self.results.finish_entry(
                entry, Outcome.SKIPPED, code=exc.reason, message=str(exc)
            )
            return False
        except OSError as exc:
            await self.results.finish_entry(
                entry,
                Outcome.SKIPPED,
                code="unreadable",
                message=f"{item.path}: {exc.strerror or exc}",
            )
            return False
        asset_type = item.asset_type or info.asset_type
        work.item = dataclasses.replace(item, asset_type=asset_type)
        if entry.content_hash != digest:
            # first hash, or the same size and mtime but other bytes (then the row resets)
            work.entry = await self.journal.register(
                entry.key,
                name=entry.name,
                source=item.path,
                content_hash=digest,
                size=info.size,
                asset_type=asset_type,
                label=item.label,
            )
        return True


def _leaves(group: BaseExceptionGroup[Exception]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
