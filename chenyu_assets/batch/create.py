"""The create stage of a bulk ingest: processing slot → intent → CreateAsset → outcome.

The slot comes from the client's watcher (:meth:`~chenyu_assets.watcher.Watcher.reserve`),
taken before the intent is journaled; once CreateAsset returns an id the watcher owns it
and frees it when the asset leaves Processing.

Intent, send and outcome are journaled as one unit that cancellation cannot split, so a
fatal stop or Ctrl-C never leaves an item half-recorded. An ambiguous outcome is reconciled
by listing the group for the item's exact Name (waiting a bounded time for list lag)
before anything is sent again (a listing that fails proves nothing: it is retried); a
refusal (401/403/404, a skewed clock's InvalidTimestamp, or a service that stays
unreachable) stops the whole run with every item back in a resumable state, and an item
whose tries all failed transiently stays resumable too.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from chenyu_assets._core.ratelimit import Slots
from chenyu_assets._core.retry import Decision, classify
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch.adopt import Adoption, Found, delete_failed, may_retry
from chenyu_assets.batch.checks import asset_type_for
from chenyu_assets.batch.journal import Entry, ItemState
from chenyu_assets.batch.journal_thread import JournalThread
from chenyu_assets.batch.sources import SourceItem
from chenyu_assets.batch.types import IngestOptions, IngestReport, IngestResult, Status
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    APIError,
    BadRequestError,
    LimiterUnavailableError,
    NotFoundError,
    RateLimitError,
    TransportError,
    WaitTimeoutError,
)
from chenyu_assets.models.ark import Asset
from chenyu_assets.watcher import Slot

__all__ = ["CREATE_TRIES", "CreateStage", "Fatal", "Tracked", "Work"]

#: CreateAsset sends per item and run (a try ends created, refused, or - after an ambiguous
#: outcome - reconciled as absent); past them the item fails this run and stays resumable.
CREATE_TRIES = 5
#: 400 codes about the request rather than the item (a skewed clock): they stop the run
#: instead of failing every item in turn.
REQUEST_LEVEL_CODES = frozenset({"InvalidTimestamp"})


class Fatal(Exception):
    """Stop all new work; the journal is consistent."""


@dataclass(frozen=True, slots=True)
class Tracked:
    """An item whose asset the watcher watches."""

    key: str
    name: str
    asset_id: str


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


class CreateStage:
    """Base of the pipeline that owns the create stage. The pipeline provides the
    attributes and the four hooks declared here."""

    ark: ArkFamilyClient
    adoption: Adoption
    _adopted: set[str]
    group_id: str
    journal: JournalThread
    opt: IngestOptions
    slots: Slots
    report: IngestReport
    _in_flight: int
    _unreported: int
    _idle: anyio.Event
    _watched_send: MemoryObjectSendStream[tuple[Tracked, asyncio.Future[Asset]]]
    _watched: MemoryObjectReceiveStream[tuple[Tracked, asyncio.Future[Asset]]]

    def emit(self, kind: str, key: str | None = None, **data: Any) -> None:
        raise NotImplementedError

    async def finish(self, result: IngestResult) -> None:
        raise NotImplementedError

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
        raise NotImplementedError

    async def _ensure_url(self, work: Work) -> bool:
        raise NotImplementedError

    async def _polled(self, tracked: Tracked, asset: Asset, timed_out: bool) -> None:
        raise NotImplementedError

    async def _refresh_url(self, work: Work) -> None:
        """Renew ``work.url`` if it would not stay valid long enough (staged files)."""

    async def retry_if_allowed(self, entry: Entry) -> Entry | None:
        """A finished row that this run tries again, back to PENDING (its Failed asset
        deleted first: the service never retries one and the Name stays unique); None when
        it stays as it is. Retried: ``failed`` rows with a retryable code, and with
        ``retry_failed`` every ``failed`` or ``skipped`` row."""
        if self.opt.dry_run or entry.changed:
            return None
        if entry.state is ItemState.FAILED:
            if not may_retry(entry.error_code, retry_failed=self.opt.retry_failed):
                return None
        elif not (entry.state is ItemState.SKIPPED and self.opt.retry_failed):
            return None
        if entry.asset_id:
            if self.opt.adopt_existing:  # the group's listing must not predate the delete
                await self.adoption.forget(entry.name)
            if await delete_failed(self.ark, entry.asset_id) is not None:
                return None  # reported as it stands; the next run tries again
            self.report.deleted_failed += 1
        await self.journal.call("reset_to_pending", entry.key)
        self.emit("retried", entry.key, reason=f"retrying an earlier failure ({entry.error_code})")
        fresh: Entry = await self.journal.call("get", entry.key)
        return fresh

    async def adopt_if_present(self, work: Work, resume: ObjectSendStream[Work]) -> bool:
        """Adopt the asset the group already holds under the item's Name (True: handled,
        nothing is uploaded or created). A Failed one that may be retried is deleted and
        the item goes on to be created anew (False)."""
        entry = work.entry
        if not self.opt.adopt_existing:
            return False
        found = await self._find_existing(entry.name)
        if found is None:
            return False
        if found.status == "Failed" and may_retry(
            found.error_code, retry_failed=self.opt.retry_failed
        ):
            problem = await delete_failed(self.ark, found.asset_id)
            if problem is None:
                await self.adoption.forget(entry.name)
                self.report.deleted_failed += 1
                return False
            await self.finish_entry(  # still PENDING: the next run tries again
                entry,
                "failed",
                asset_id=found.asset_id,
                code=found.error_code,
                message=problem,
                journal_state=None,
            )
            return True
        await self.journal.call("adopt", entry.key, found.asset_id)
        self.report.adopted += 1
        self._adopted.add(entry.key)
        self.emit("adopted", entry.key, asset_id=found.asset_id, status=found.status)
        if found.status == "Processing":  # the create stage hands it to the watcher
            work.entry = await self.journal.call("get", entry.key)
            await resume.send(work)
            return True
        await self._polled(Tracked(entry.key, entry.name, found.asset_id), found.asset(), False)
        return True

    async def _find_existing(self, name: str) -> Found | None:
        """The group's asset named ``name`` from the adoption index. The group's listing
        is retried like reconciliation's (a listing that failed proves nothing): a refusal
        or ``reconcile_timeout`` s of failures stop the run, every item resumable."""
        give_up = asyncio.get_running_loop().time() + self.opt.reconcile_timeout
        while True:
            try:
                return await self.adoption.find(name)
            except (APIError, TransportError) as exc:
                if classify(exc) is not Decision.RETRY:  # refused, or an answer we can't read
                    raise Fatal(f"ListAssets refused (listing the group's names): {exc}") from exc
                if asyncio.get_running_loop().time() >= give_up:
                    msg = f"cannot list the group's names: ListAssets keeps failing: {exc}"
                    raise Fatal(msg) from exc
            await anyio.sleep(self.opt.reconcile_interval)

    async def create(self, inbox: ObjectReceiveStream[Work]) -> None:
        watcher = self.ark.watcher
        async with inbox:
            async for work in inbox:
                slot = await watcher.reserve(self.slots)  # the sweep ticks faster meanwhile
                tracked = False
                try:
                    tracked = await self._create_one(work, slot)
                finally:
                    if not tracked:
                        await watcher.release(slot)

    async def _create_one(self, work: Work, slot: Slot) -> bool:
        """Create (or find) the asset; True when the watcher now watches it (with ``slot``)."""
        entry = work.entry
        if entry.state is ItemState.CREATED and entry.asset_id:
            self._track(entry.key, entry.name, entry.asset_id, slot)
            return True
        if work.reconcile:
            found = await self.reconcile(entry.name, wait=True)
            if found is not None:
                self.report.recovered += 1
                self.emit("recovered", entry.key, asset_id=found.id)
                return await self._found(entry, found, slot)
            await self.journal.call("reset_to_pending", entry.key)
            work.entry = entry = await self.journal.call("get", entry.key)
            work.reconcile = False
            if not await self._ensure_url(work):
                return False
            entry = work.entry
        item = work.item
        await self._refresh_url(work)
        url = item.url if item is not None and item.url else (work.url or entry.upload_url)
        if not url:
            await self.finish_entry(
                entry,
                "failed",
                code="no_url",
                message="no URL to create from",
                journal_state=ItemState.FAILED,
            )
            return False
        asset_type = (
            asset_type_for(item, None) if item is not None else (entry.asset_type or "Image")
        )
        for _ in range(CREATE_TRIES):
            kind, value = await self._send_create(entry, url, asset_type, slot)
            if kind == "created":
                self.emit("created", entry.key, asset_id=value)
                self._track(entry.key, entry.name, str(value), slot)
                return True
            if kind == "failed":
                await self.finish(
                    IngestResult(
                        entry.key,
                        entry.name,
                        "failed",
                        entry.source,
                        None,
                        value.code or "InvalidParameter",
                        value.message,
                    )
                )
                return False
            if kind == "refused":
                if isinstance(value, NotFoundError):
                    raise Fatal(f"group {self.group_id} not found: {value}")
                raise Fatal(f"CreateAsset refused: {value}")
            if kind == "throttled":
                self.emit("retried", entry.key, reason="rate limited")
                await anyio.sleep(1.0)
                continue
            found = await self.reconcile(entry.name, wait=True)  # kind == "ambiguous"
            if found is not None:
                self.report.recovered += 1
                self.emit("recovered", entry.key, asset_id=found.id)
                return await self._found(entry, found, slot)
            await self.journal.call("reset_to_pending", entry.key)
            self.emit("retried", entry.key, reason="not found after an ambiguous create")
        await self.finish_entry(  # every try failed transiently: a rerun tries again
            entry,
            "failed",
            code="create_retries_exhausted",
            message=f"CreateAsset did not succeed after {CREATE_TRIES} tries; rerun to retry",
            journal_state=None,
        )
        return False

    async def _send_create(
        self, entry: Entry, url: str, asset_type: str, slot: Slot
    ) -> tuple[str, Any]:
        """Intent, send, outcome, journaled as one unit that cancellation cannot split (a
        fatal stop or Ctrl-C waits for it, at most ``create_unit_timeout`` seconds; past
        that the item stays ``creating`` and the next run reconciles it).

        Returns ("created", id) | ("ambiguous", exc) | ("throttled", exc) |
        ("failed", BadRequestError) | ("refused", exc).
        """
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.opt.create_unit_timeout
            await self.journal.call("mark_intent", entry.key)
            try:
                asset_id = await self.ark.create_asset(
                    group_id=self.group_id,
                    url=url,
                    asset_type=asset_type,
                    name=entry.name,
                    slot=slot,
                )
            except LimiterUnavailableError:  # the limiter refused before anything was sent
                await self.journal.call("reset_to_pending", entry.key)
                raise
            except AmbiguousOutcomeError as exc:
                await self.journal.call(
                    "mark_unknown", entry.key, error_code=type(exc.cause).__name__, message=str(exc)
                )
                return "ambiguous", exc
            except BadRequestError as exc:
                if exc.code in REQUEST_LEVEL_CODES:  # not this item's fault: every send fails
                    await self.journal.call("reset_to_pending", entry.key)
                    return "refused", exc
                await self.journal.call(
                    "mark_done",
                    entry.key,
                    ItemState.FAILED,
                    error_code=exc.code or "InvalidParameter",
                    message=exc.message,
                )
                return "failed", exc
            except (APIError, TransportError) as exc:  # refused: nothing was created
                await self.journal.call("reset_to_pending", entry.key)
                return ("throttled" if isinstance(exc, RateLimitError) else "refused"), exc
            self.report.creates += 1
            await self.journal.call("mark_created", entry.key, asset_id)
            return "created", asset_id
        raise Fatal(
            f"{entry.key}: CreateAsset did not finish within {self.opt.create_unit_timeout:g} s"
        )  # pragma: no cover

    async def _found(self, entry: Entry, asset: Asset, slot: Slot) -> bool:
        await self.journal.call("mark_created", entry.key, asset.id)
        if asset.is_terminal:  # the caller frees the slot
            await self._polled(Tracked(entry.key, entry.name, asset.id), asset, False)
            return False
        self._track(entry.key, entry.name, asset.id, slot)
        return True

    def _track(self, key: str, name: str, asset_id: str, slot: Slot) -> None:
        """Hand the asset (and its slot) to the watcher; :meth:`_collect` gets its end."""
        self._in_flight += 1
        self._unreported += 1
        self.report.max_processing_seen = max(self.report.max_processing_seen, self._in_flight)
        if self._idle.is_set():
            self._idle = anyio.Event()
        fut = self.ark.watcher.watch(
            asset_id,
            project=self.ark.project_name,
            group_id=self.group_id,
            timeout=self.opt.processing_timeout,
            slot=slot,
        )
        tracked = Tracked(key, name, asset_id)

        def done(f: asyncio.Future[Asset]) -> None:
            self._in_flight -= 1
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._watched_send.send_nowait((tracked, f))  # unless the run is over

        fut.add_done_callback(done)

    async def _collect(self) -> None:
        """Report each watched asset's end (the watcher's sweep resolves them)."""
        async with self._watched:
            async for tracked, fut in self._watched:
                self._unreported -= 1
                try:
                    if fut.cancelled():  # the client was closed under us
                        raise Fatal("the client's status watcher was closed")
                    exc = fut.exception()
                    if isinstance(exc, WaitTimeoutError):
                        still = {"Id": tracked.asset_id, "Status": "Processing"}
                        await self._polled(tracked, Asset.model_validate(still), True)
                    elif isinstance(exc, APIError | TransportError):
                        raise Fatal(f"status polling refused: {exc}") from exc
                    elif exc is not None:
                        raise exc
                    else:
                        await self._polled(tracked, fut.result(), False)
                finally:
                    if not self._unreported:
                        self._idle.set()

    async def reconcile(self, name: str, *, wait: bool) -> Asset | None:
        """The asset of this group named exactly ``name``, waiting for list lag if asked.

        None only when a complete listing that began after the wait found nothing: a
        listing that failed proves nothing, so it is tried again, and after
        ``reconcile_timeout`` more seconds of failures the run stops (the item stays to be
        reconciled by the next run)."""
        deadline = asyncio.get_running_loop().time() + (self.opt.reconcile_wait if wait else 0.0)
        give_up = deadline + self.opt.reconcile_timeout
        while True:
            began = asyncio.get_running_loop().time()
            matches: list[Asset] = []
            try:
                async for asset in self.ark.list_assets(
                    group_ids=[self.group_id],
                    name=name,
                    deadline=max(1.0, self.opt.reconcile_timeout),
                ):
                    if asset.name == name:
                        matches.append(asset)
            except (APIError, TransportError) as exc:
                if classify(exc) is not Decision.RETRY:  # refused (401, 403, clock skew...)
                    raise Fatal(f"ListAssets refused: {exc}") from exc
                if asyncio.get_running_loop().time() >= give_up:
                    msg = f"cannot reconcile {name!r}: ListAssets keeps failing: {exc}"
                    raise Fatal(msg) from exc
            else:
                if matches:
                    matches.sort(key=lambda a: (a.create_time is None, a.create_time, a.id))
                    return matches[0]
                if began >= deadline:
                    return None
            await anyio.sleep(self.opt.reconcile_interval)
