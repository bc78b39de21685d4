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
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from chenyu_assets._core.logs import redact_text, redact_url
from chenyu_assets._core.ratelimit import Slots
from chenyu_assets._core.retry import Decision, classify
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch import hooks
from chenyu_assets.batch.adopt import Adoption
from chenyu_assets.batch.checks import hash_and_check, url_problem
from chenyu_assets.batch.create import CreateStage, Fatal, Tracked, Work
from chenyu_assets.batch.fingerprints import register_items, replace_asset
from chenyu_assets.batch.journal import TERMINAL, Entry, ItemState
from chenyu_assets.batch.journal_thread import JournalThread, take
from chenyu_assets.batch.sources import (
    BadItem,
    IgnoredItem,
    KeySet,
    SourceItem,
    url_has_userinfo,
)
from chenyu_assets.batch.staging import S3Staging
from chenyu_assets.batch.types import Event, IngestOptions, IngestReport, IngestResult, Status
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    LimiterUnavailableError,
    MediaCheckError,
    PermissionDeniedError,
    TransportError,
    UploadError,
)
from chenyu_assets.events import IngestEvent, next_call_id
from chenyu_assets.models.ark import Asset

__all__ = ["Pipeline"]

#: Uploads of one item per run (each a whole client call with its own retries), and the
#: pause before the next one (× the try number) while the client's retry budget refills.
UPLOAD_TRIES = 3
UPLOAD_PAUSE = 1.0

T = TypeVar("T")


class Pipeline(CreateStage):
    """One ingest run; see :func:`open_ingest`."""

    def __init__(
        self,
        ark: ArkFamilyClient,
        source: Iterable[SourceItem | BadItem | IgnoredItem],
        *,
        group_id: str,
        journal: JournalThread,
        chenyu: ChenyuClient | None,
        options: IngestOptions,
        slots: Slots,
        on_event: Callable[[Event], None] | None,
        send_results: ObjectSendStream[IngestResult],
        check_keys: bool = True,
        staging: S3Staging | None = None,
    ) -> None:
        self.ark = ark
        self.staging = staging
        self.source = source
        self.group_id = group_id
        self.journal = journal
        self.chenyu = chenyu
        self.opt = options
        self.slots = slots
        self.on_event = on_event
        self.results = send_results
        self.report = IngestReport()
        self.items: dict[str, SourceItem] = {}
        self._in_flight = 0  # items whose asset is Processing (as far as the run knows)
        self._unreported = 0  # items handed to the watcher whose end is not reported yet
        self._idle = anyio.Event()
        self._idle.set()
        self._watched_send, self._watched = anyio.create_memory_object_stream[
            tuple[Tracked, "asyncio.Future[Asset]"]
        ](math.inf)
        self.adoption = Adoption(ark, group_id)
        self._adopted: set[str] = set()  # adopted keys whose result is not out yet
        self._keys = KeySet() if check_keys else None  # see _unique
        self._names = KeySet()

    # -- plumbing ----------------------------------------------------------------------
    def emit(self, kind: str, key: str | None = None, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(Event(kind, key, data))
        if self.ark.hooks and (event := hooks.item_event(kind, key, data)) is not None:
            self.ark.hooks.emit(event)

    async def finish(self, result: IngestResult) -> None:
        if result.message:  # server text may echo credentials: masked before any output
            result = dataclasses.replace(result, message=redact_text(result.message))
        self.items.pop(result.key, None)
        if result.key in self._adopted:
            self._adopted.discard(result.key)
            result = dataclasses.replace(result, adopted=True)
        if self.staging is not None:
            self.staging.finished(result.key, result.status == "active")
        self.report.count(result)
        self.emit("done", result.key, status=result.status, error_code=result.error_code)
        if self.ark.hooks:
            self.ark.hooks.emit(hooks.result_event(result))
        await self.results.send(result)

    async def finish_entry(
        self,
        entry: Entry,
        status: Status,
        *,
        asset_id: str | None = None,
        code: str | None = None,
        message: str | None = None,
        journal_state: ItemState | None,
    ) -> None:
        if journal_state is not None:
            await self.journal.call(
                "mark_done",
                entry.key,
                journal_state,
                asset_id=asset_id,
                error_code=code,
                message=message,
            )
        await self.finish(
            IngestResult(entry.key, entry.name, status, entry.source, asset_id, code, message)
        )

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
                outer.start_soon(self._collect)
                await self._stages()
                while self._unreported:
                    await self._idle.wait()
                if self.staging is not None:
                    await self.staging.cleanup(self)
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
            await self.results.aclose()

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
                tg.start_soon(self.upload, up_in.clone(), to_create.clone())
            for _ in range(o.create_concurrency):
                tg.start_soon(self.create, create_in.clone())
            for stream in (pre_in, to_up, up_in, to_create, create_in):
                stream.close()

    # -- stages ------------------------------------------------------------------------
    async def produce(self, out: ObjectSendStream[Work], resume: ObjectSendStream[Work]) -> None:
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
                    "skipped",
                    entry.key,
                    error_code=entry.reason,
                    message=entry.message,
                )
            )
            return
        self.emit("queued", entry.key)
        if entry.state in TERMINAL:
            entry = await self.retry_if_allowed(entry) or entry
        if entry.state in TERMINAL:
            status: Status = entry.state.value  # type: ignore[assignment]
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
                        "skipped",
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
                    status,
                    entry.source,
                    entry.asset_id,
                    entry.error_code,
                    entry.error_message,
                    resumed=True,
                )
            )
            return
        if self.opt.dry_run:
            await self.finish(IngestResult(entry.key, entry.name, "planned", entry.source))
            return
        if item is not None:
            self.items[entry.key] = item
        work = Work(entry, item)
        if entry.state in (ItemState.PENDING, ItemState.UPLOADED) and await self.adopt_if_present(
            work, resume
        ):
            return
        if entry.state in (ItemState.CREATED, ItemState.CREATING, ItemState.UNKNOWN):
            await resume.send(Work(entry, item, reconcile=entry.state is not ItemState.CREATED))
        else:
            await out.send(work)

    async def _replace(self, entry: Entry) -> Entry | None:
        """``replace_changed``: the old asset deleted and the row PENDING (None when the
        delete failed: the item is then reported ``source_changed``)."""
        try:
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
                await self.finish_entry(
                    entry,
                    "skipped",
                    code="bad_url",
                    message=problem,
                    journal_state=ItemState.SKIPPED,
                )
                return False
            return True
        if item.path is None:
            await self.finish_entry(
                entry,
                "skipped",
                code="no_source",
                message="item has neither a path nor a URL",
                journal_state=ItemState.SKIPPED,
            )
            return False
        if not self.opt.preflight:
            return True
        try:
            digest, info = await anyio.to_thread.run_sync(
                hash_and_check, item.path, item.asset_type
            )
        except MediaCheckError as exc:
            await self.finish_entry(
                entry, "skipped", code=exc.reason, message=str(exc), journal_state=ItemState.SKIPPED
            )
            return False
        except OSError as exc:
            await self.finish_entry(
                entry,
                "skipped",
                code="unreadable",
                message=f"{item.path}: {exc.strerror or exc}",
                journal_state=ItemState.SKIPPED,
            )
            return False
        asset_type = item.asset_type or info.asset_type
        work.item = dataclasses.replace(item, asset_type=asset_type)
        if entry.content_hash != digest:
            # first hash, or the same size and mtime but other bytes (then the row resets)
            work.entry = await self.journal.call(
                "register",
                entry.key,
                name=entry.name,
                source=item.path,
                content_hash=digest,
                size=info.size,
                asset_type=asset_type,
                label=item.label,
            )
        return True

    async def upload(self, inbox: ObjectReceiveStream[Work], out: ObjectSendStream[Work]) -> None:
        async with inbox, out:
            async for work in inbox:
                if await self._ensure_url(work):
                    await out.send(work)

    async def _ensure_url(self, work: Work) -> bool:
        item = work.item
        if item is None or item.url is not None:
            return True
        if self.staging is not None:
            return await self.staging.ensure(self, work)
        entry = work.entry
        fresh_until = time.time() + self.opt.url_min_validity
        if entry.upload_url and (entry.upload_expires_at or 0) > fresh_until:
            return True
        if self.chenyu is None:
            raise Fatal(
                "local files need a stage: a Chenyu client (chenyu=...) or an S3 bucket "
                "(IngestOptions(stage=S3Stage(...)), --stage s3://bucket/prefix)"
            )
        if item.path is None:  # pragma: no cover - URL items returned above
            raise Fatal(f"item {entry.key!r} has no path")
        for attempt in range(1, UPLOAD_TRIES + 1):
            try:
                up = await self.chenyu.upload(item.path, ttl_hours=self.opt.upload_ttl_hours)
                break
            except UploadError as exc:
                await self.finish_entry(
                    entry,
                    "skipped",
                    code=exc.reason,
                    message=str(exc),
                    journal_state=ItemState.SKIPPED,
                )
                return False
            except (AuthenticationError, PermissionDeniedError) as exc:
                raise Fatal(f"upload refused: {exc}") from exc
            except (APIError, TransportError) as exc:
                # transient (the client's retries or retry budget ran out): pause and try
                # again; if it still fails, the item stays resumable for a rerun
                transient = classify(exc) is Decision.RETRY
                if transient and attempt < UPLOAD_TRIES:
                    self.emit("retried", entry.key, reason=f"upload failed: {exc}")
                    await anyio.sleep(UPLOAD_PAUSE * attempt)
                    continue
                await self.finish_entry(
                    entry,
                    "failed",
                    code="upload_failed",
                    message=str(exc),
                    journal_state=None if transient else ItemState.FAILED,
                )
                return False
        url = up.signed_url or up.url or up.content_url
        if not url:
            await self.finish_entry(
                entry,
                "failed",
                code="upload_failed",
                message="upload answer has no URL",
                journal_state=ItemState.FAILED,
            )
            return False
        expires = up.signed_url_expires()
        if expires is None and up.expires_at is not None:
            expires = int(up.expires_at.timestamp())
        await self.journal.call("mark_uploaded", entry.key, url=url, expires_at=expires)
        work.entry = await self.journal.call("get", entry.key)
        self.emit("uploaded", entry.key, size=up.size_bytes)
        return True

    async def _refresh_url(self, work: Work) -> None:
        if self.staging is not None:
            await self.staging.refresh(self, work)

    async def _polled(self, tracked: Tracked, asset: Asset, timed_out: bool) -> None:
        entry_stub = Entry(
            tracked.key,
            self._source_of(tracked.key),
            None,
            None,
            None,
            None,
            tracked.name,
            None,
            None,
            ItemState.CREATED,
            asset.id,
            None,
            None,
            0,
            None,
            None,
            0.0,
        )
        self.emit("polled", tracked.key, status=asset.status)
        if timed_out:
            await self.finish_entry(
                entry_stub,
                "failed",
                asset_id=asset.id,
                code="processing_timeout",
                message=f"still {asset.status} after the timeout",
                journal_state=ItemState.FAILED,
            )
        elif asset.status == "Active":
            await self.finish_entry(
                entry_stub, "active", asset_id=asset.id, journal_state=ItemState.ACTIVE
            )
        else:
            err = asset.error
            await self.finish_entry(
                entry_stub,
                "failed",
                asset_id=asset.id,
                code=(err.code if err else None) or "Failed",
                message=err.message if err else None,
                journal_state=ItemState.FAILED,
            )

    def _source_of(self, key: str) -> str:
        item = self.items.get(key)
        if item is None:
            return key
        if item.path is not None:  # as the journal shows it: undecodable bytes as \xNN
            return os.fsencode(item.path).decode("utf-8", "backslashreplace")
        return item.url or key


def _leaves(group: BaseExceptionGroup[Exception]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
