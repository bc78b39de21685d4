"""Before an item is uploaded and created: what an earlier run or another journal left.

:class:`Reuse` decides, per item, whether the run creates it at all:

- a finished journal row that this run retries (:meth:`Reuse.retry_if_allowed`): a
  ``failed`` row with a retryable code, and with ``retry_failed`` every ``failed`` or
  ``skipped`` row, goes back to PENDING, its Failed asset deleted first (the service
  never retries one and the Name stays unique);
- a row that new content reset while its Failed asset is still in the group
  (:meth:`Reuse.drop_stale`): that asset is deleted before the new content is created;
- an asset the group already holds under the item's Name (:meth:`Reuse.adopt_if_present`,
  see :mod:`.adopt`): adopted instead of created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import ObjectSendStream

from chenyu_assets._api import AssetAPI
from chenyu_assets.batch.adopt import Adoption, Found, delete_failed, may_retry
from chenyu_assets.batch.journal import Entry, ItemState
from chenyu_assets.batch.journal_thread import JournalFacade
from chenyu_assets.batch.tracking import Tracker
from chenyu_assets.batch.types import IngestOptions, IngestReport, Outcome
from chenyu_assets.batch.work import EventSink, Fatal, Tracked, Work
from chenyu_assets.errors import APIError, TransportError, is_transient

__all__ = ["Reuse"]


class Reuse:
    """Retries and adoption for one run, given the client, the journal, the group's name
    index, the sink and the tracker (an adopted Active or Failed asset is reported
    through it, a Processing one goes to the create stage to be watched)."""

    def __init__(
        self,
        client: AssetAPI,
        journal: JournalFacade,
        adoption: Adoption,
        sink: EventSink,
        tracker: Tracker,
        *,
        options: IngestOptions,
        report: IngestReport,
        must_reconcile: Callable[[str], bool] | None = None,
        reconcile: Callable[[str], Awaitable[Found | None]] | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.adoption = adoption
        self.sink = sink
        self.tracker = tracker
        self.opt = options
        self.report = report
        # names a create may have been sent for elsewhere: found by ``reconcile`` instead
        self.must_reconcile = must_reconcile
        self.reconcile = reconcile

    async def retry_if_allowed(self, entry: Entry) -> Entry | None:
        """A finished row that this run tries again, back to PENDING; None when it stays
        as it is (see the module docstring)."""
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
            if await delete_failed(self.client, entry.asset_id) is not None:
                return None  # reported as it stands; the next run tries again
            self.report.deleted_failed += 1
        await self.journal.reset_to_pending(entry.key)
        reason = f"retrying an earlier failure ({entry.error_code})"
        self.sink.emit("retried", entry.key, reason=reason)
        return await self.journal.get(entry.key)

    async def forget(self, name: str) -> None:
        """The asset of ``name`` is about to be deleted: the name index drops it (the
        group's listing, taken now if not yet, must not predate the delete)."""
        await self._find_existing(name)  # builds the index, retried like adoption's walk
        await self.adoption.forget(name)

    async def drop_stale(self, entry: Entry) -> bool:
        """Delete the asset a row had before new content reset it (``Entry.stale_asset``:
        a Failed asset still holds the item's Name). True: go on and create. When the
        delete fails the item is reported ``failed`` / ``delete_failed`` (retryable), the
        old asset id journaled, so that the next run deletes it first."""
        if entry.stale_asset is None:
            return True
        if self.opt.adopt_existing:  # the group's listing must not predate the delete
            await self.adoption.forget(entry.name)
        problem = await delete_failed(self.client, entry.stale_asset)
        if problem is None:
            self.report.deleted_failed += 1
            self.sink.emit("retried", entry.key, reason="new content: its Failed asset deleted")
            return True
        await self.sink.finish_entry(
            entry, Outcome.FAILED, asset_id=entry.stale_asset, code="delete_failed", message=problem
        )
        return False

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
            problem = await delete_failed(self.client, found.asset_id)
            if problem is None:
                await self.adoption.forget(entry.name)
                self.report.deleted_failed += 1
                return False
            await self.sink.finish_entry(  # still PENDING: the next run tries again
                entry,
                Outcome.FAILED,
                asset_id=found.asset_id,
                code=found.error_code,
                message=problem,
                record=False,
            )
            return True
        await self.journal.adopt(entry.key, found.asset_id)
        self.report.adopted += 1
        self.sink.adopted(entry.key)
        self.sink.emit("adopted", entry.key, asset_id=found.asset_id, status=found.status)
        if found.status == "Processing":  # the create stage hands it to the watcher
            work.entry = await self.journal.get(entry.key)
            await resume.send(work)
            return True
        tracked = Tracked(entry.key, entry.name, found.asset_id, entry.source)
        await self.tracker.ended(tracked, found.asset())
        return True

    async def _find_existing(self, name: str) -> Found | None:
        """The group's asset named ``name`` from the adoption index. The group's listing
        is retried like reconciliation's (a listing that failed proves nothing): a refusal
        or ``reconcile_timeout`` s of failures stop the run, every item resumable."""
        must, reconcile = self.must_reconcile, self.reconcile
        if must is not None and reconcile is not None and must(name):
            return await reconcile(name)
        give_up = asyncio.get_running_loop().time() + self.opt.reconcile_timeout
        while True:
            try:
                return await self.adoption.find(name)
            except (APIError, TransportError) as exc:
                if not is_transient(exc):  # refused, or an answer we can't read
                    raise Fatal(f"ListAssets refused (listing the group's names): {exc}") from exc
                if asyncio.get_running_loop().time() >= give_up:
                    msg = f"cannot list the group's names: ListAssets keeps failing: {exc}"
                    raise Fatal(msg) from exc
            await anyio.sleep(self.opt.reconcile_interval)
