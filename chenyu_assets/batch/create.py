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
from collections.abc import Awaitable, Callable
from enum import Enum

import anyio
from anyio.abc import ObjectReceiveStream

from chenyu_assets._api import AssetAPI
from chenyu_assets.batch.checks import asset_type_for
from chenyu_assets.batch.journal import Entry, ItemState
from chenyu_assets.batch.journal_thread import JournalFacade
from chenyu_assets.batch.tracking import Tracker
from chenyu_assets.batch.types import IngestOptions, IngestReport, IngestResult, Outcome
from chenyu_assets.batch.work import EventSink, Fatal, Tracked, UrlProvider, Work
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    APIError,
    BadRequestError,
    LimiterUnavailableError,
    NotFoundError,
    RateLimitError,
    TransportError,
    is_transient,
)
from chenyu_assets.limits import Slots
from chenyu_assets.models.ark import Asset
from chenyu_assets.watcher import Slot

__all__ = ["CREATE_TRIES", "CreateStage", "Sent"]

#: CreateAsset sends per item and run (a try ends created, refused, or - after an ambiguous
#: outcome - reconciled as absent); past them the item fails this run and stays resumable.
CREATE_TRIES = 5
#: 400 codes about the request rather than the item (a skewed clock): they stop the run
#: instead of failing every item in turn.
REQUEST_LEVEL_CODES = frozenset({"InvalidTimestamp"})
#: codes (last dotted part) of a server that refuses a second asset with one Name in a
#: group; the documented service does not (names are not unique there), but where one
#: does, a create that lost such a race is reconciled by Name and adopts the winner's asset
DUPLICATE_NAME_CODES = frozenset({"DuplicateName", "NameAlreadyExists", "AlreadyExists"})


class Sent(Enum):
    """What one CreateAsset send came to (see :meth:`CreateStage.send`)."""

    CREATED = "created"  # an asset id
    AMBIGUOUS = "ambiguous"  # sent, outcome unknown: reconcile before anything else
    THROTTLED = "throttled"  # a 429: nothing created, try again
    FAILED = "failed"  # a 400 on the item: its verdict
    REFUSED = "refused"  # 401/403/404, a request-level 400, a service that stays down
    DUPLICATE = "duplicate"  # the server refused the Name as taken: adopt the holder


class CreateStage:
    """The create stage, given its collaborators: the client (``create_asset``,
    ``list_assets`` to reconcile, its ``watcher`` for slots), the journal, where a local
    file's URL comes from, where results go, and the tracker that hands each new asset to
    the watcher."""

    def __init__(
        self,
        client: AssetAPI,
        journal: JournalFacade,
        urls: UrlProvider,
        sink: EventSink,
        tracker: Tracker,
        *,
        group_id: str,
        options: IngestOptions,
        slots: Slots,
        report: IngestReport,
        gate: Callable[[Entry], Awaitable[bool]] | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.urls = urls
        self.sink = sink
        self.tracker = tracker
        self.group_id = group_id
        self.opt = options
        self.slots = slots
        self.report = report
        self.gate = gate  # False: another worker owns the item now (it releases it)

    async def run(self, inbox: ObjectReceiveStream[Work]) -> None:
        """Create each item of ``inbox`` (one of ``create_concurrency`` tasks)."""
        watcher = self.client.watcher
        async with inbox:
            async for work in inbox:
                slot = await watcher.reserve(self.slots)  # the sweep ticks faster meanwhile
                tracked = False
                try:
                    tracked = await self.create_one(work, slot)
                finally:
                    if not tracked:
                        await watcher.release(slot)

    async def create_one(self, work: Work, slot: Slot) -> bool:
        """Create (or find) the asset; True when the watcher now watches it (with ``slot``)."""
        entry = work.entry
        if entry.state is ItemState.CREATED and entry.asset_id:
            self.tracker.track(Tracked(entry.key, entry.name, entry.asset_id, entry.source), slot)
            return True
        if self.gate is not None and not await self.gate(entry):
            self.sink.emit("retried", entry.key, reason="taken over by another worker")
            return False
        if work.reconcile:
            found = await self.reconcile(entry.name, wait=True)
            if found is not None:
                self.report.recovered += 1
                self.sink.emit("recovered", entry.key, asset_id=found.id)
                return await self._found(entry, found, slot)
            await self.journal.reset_to_pending(entry.key)
            work.entry = entry = await self.journal.get(entry.key)
            work.reconcile = False
            if not await self.urls.ensure(work):
                return False
            entry = work.entry
        item = work.item
        await self.urls.refresh(work)
        url = item.url if item is not None and item.url else (work.url or entry.upload_url)
        if not url:
            await self.sink.finish_entry(
                entry, Outcome.FAILED, code="no_url", message="no URL to create from"
            )
            return False
        asset_type = (
            asset_type_for(item, None) if item is not None else (entry.asset_type or "Image")
        )
        for _ in range(CREATE_TRIES):
            sent, value = await self.send(entry, url, asset_type, slot)
            if sent is Sent.CREATED:
                assert isinstance(value, str)
                self.sink.emit("created", entry.key, asset_id=value)
                self.tracker.track(Tracked(entry.key, entry.name, value, entry.source), slot)
                return True
            assert isinstance(value, Exception)
            if sent is Sent.FAILED:
                code = value.code if isinstance(value, APIError) else None
                msg = value.message if isinstance(value, APIError) else str(value)
                await self.sink.finish(
                    IngestResult(
                        entry.key,
                        entry.name,
                        Outcome.FAILED,
                        entry.source,
                        None,
                        code or "InvalidParameter",
                        msg,
                    )
                )
                return False
            if sent is Sent.REFUSED:
                if isinstance(value, NotFoundError):
                    raise Fatal(f"group {self.group_id} not found: {value}")
                raise Fatal(f"CreateAsset refused: {value}")
            if sent is Sent.THROTTLED:
                self.sink.emit("retried", entry.key, reason="rate limited")
                await anyio.sleep(1.0)
                continue
            if sent is Sent.DUPLICATE:
                return await self._taken(entry, value, slot)
            found = await self.reconcile(entry.name, wait=True)  # Sent.AMBIGUOUS
            if found is not None:
                self.report.recovered += 1
                self.sink.emit("recovered", entry.key, asset_id=found.id)
                return await self._found(entry, found, slot)
            await self.journal.reset_to_pending(entry.key)
            self.sink.emit("retried", entry.key, reason="not found after an ambiguous create")
        await self.sink.finish_entry(  # every try failed transiently: a rerun tries again
            entry,
            Outcome.FAILED,
            code="create_retries_exhausted",
            message=f"CreateAsset did not succeed after {CREATE_TRIES} tries; rerun to retry",
            record=False,
        )
        return False

    async def send(
        self, entry: Entry, url: str, asset_type: str, slot: Slot
    ) -> tuple[Sent, str | Exception]:
        """Intent, send, outcome, journaled as one unit that cancellation cannot split (a
        fatal stop or Ctrl-C waits for it, at most ``create_unit_timeout`` seconds; past
        that the item stays ``creating`` and the next run reconciles it).

        ``(Sent.CREATED, asset id)``, else the :class:`Sent` kind and its error.
        """
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.opt.create_unit_timeout
            await self.journal.mark_intent(entry.key)
            try:
                asset_id = await self.client.create_asset(
                    group_id=self.group_id,
                    url=url,
                    asset_type=asset_type,
                    name=entry.name,
                    slot=slot,
                )
            except LimiterUnavailableError:  # the limiter refused before anything was sent
                await self.journal.reset_to_pending(entry.key)
                raise
            except AmbiguousOutcomeError as exc:
                await self.journal.mark_unknown(
                    entry.key, error_code=type(exc.cause).__name__, message=str(exc)
                )
                return Sent.AMBIGUOUS, exc
            except (APIError, TransportError) as exc:  # nothing was created
                return await self._refused(entry, exc), exc
            self.report.creates += 1
            await self.journal.mark_created(entry.key, asset_id)
            return Sent.CREATED, asset_id
        raise Fatal(
            f"{entry.key}: CreateAsset did not finish within {self.opt.create_unit_timeout:g} s"
        )  # pragma: no cover

    async def _refused(self, entry: Entry, exc: APIError | TransportError) -> Sent:
        """Journal a refused create (in the shielded unit of :meth:`send`): a taken Name
        stays to be reconciled, a 400 on the item is its verdict, the rest (a 429, a
        request-level 400, 401/403/404, a service that stays down) go back to PENDING."""
        if isinstance(exc, APIError) and _duplicate_name(exc):
            await self.journal.mark_unknown(entry.key, error_code=exc.code, message=str(exc))
            return Sent.DUPLICATE
        if isinstance(exc, BadRequestError) and exc.code not in REQUEST_LEVEL_CODES:
            await self.journal.mark_done(
                entry.key,
                ItemState.FAILED,
                error_code=exc.code or "InvalidParameter",
                message=exc.message,
            )
            return Sent.FAILED
        await self.journal.reset_to_pending(entry.key)
        return Sent.THROTTLED if isinstance(exc, RateLimitError) else Sent.REFUSED

    async def _taken(self, entry: Entry, error: Exception, slot: Slot) -> bool:
        """A create refused because the group holds the Name (another run won the race):
        that asset is adopted; absent after the list-lag wait, the refusal is the verdict."""
        found = await self.reconcile(entry.name, wait=True)
        if found is not None:
            self.report.adopted += 1
            self.sink.adopted(entry.key)
            self.sink.emit("adopted", entry.key, asset_id=found.id, status=found.status)
            return await self._found(entry, found, slot)
        code = error.code if isinstance(error, APIError) else None
        await self.sink.finish_entry(
            entry, Outcome.FAILED, code=code or "DuplicateName", message=str(error)
        )
        return False

    async def _found(self, entry: Entry, asset: Asset, slot: Slot) -> bool:
        await self.journal.mark_created(entry.key, asset.id)
        tracked = Tracked(entry.key, entry.name, asset.id, entry.source)
        if asset.is_terminal:  # the caller frees the slot
            await self.tracker.ended(tracked, asset)
            return False
        self.tracker.track(tracked, slot)
        return True

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
                async for asset in self.client.list_assets(
                    group_ids=[self.group_id],
                    name=name,
                    deadline=max(1.0, self.opt.reconcile_timeout),
                ):
                    if asset.name == name:
                        matches.append(asset)
            except (APIError, TransportError) as exc:
                if not is_transient(exc):  # refused (401, 403, clock skew...)
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


def _duplicate_name(exc: APIError) -> bool:
    code = (exc.code or "").rpartition(".")[2]
    return exc.status in (400, 409) and code in DUPLICATE_NAME_CODES
