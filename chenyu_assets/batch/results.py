"""Where an ingest's stages report: :class:`Results`, the run's :class:`~.work.EventSink`.

Progress goes to ``on_event`` and the client's typed hooks; each item's end is masked
(server text may echo a credential), counted in the report, journaled when asked, and
sent to the results stream the caller reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import ObjectSendStream

from chenyu_assets._core.logs import redact_text
from chenyu_assets.batch import hooks
from chenyu_assets.batch.journal_rows import STATE_OF
from chenyu_assets.batch.journal_thread import JournalFacade
from chenyu_assets.batch.types import Event, IngestReport, IngestResult, Outcome
from chenyu_assets.batch.work import ItemRef
from chenyu_assets.events import HookSet

__all__ = ["Results"]

_ASSET_KINDS = frozenset({"created", "recovered", "adopted"})


class Results:
    """The :class:`~.work.EventSink` of one run."""

    def __init__(
        self,
        journal: JournalFacade,
        report: IngestReport,
        send: ObjectSendStream[IngestResult],
        *,
        on_event: Callable[[Event], None] | None = None,
        hook_set: HookSet | None = None,
        on_finished: Callable[[IngestResult], None] | None = None,
        on_done: Callable[[IngestResult], Awaitable[None]] | None = None,
        on_asset: Callable[[str, str], None] | None = None,
    ) -> None:
        self.journal = journal
        self.report = report
        self.send = send
        self.on_event = on_event
        self.hooks = hook_set
        self.on_finished = on_finished
        self.on_done = on_done  # awaited with each result first (a work queue records it)
        self.on_asset = on_asset  # (key, asset id) of created / recovered / adopted events
        self._adopted: set[str] = set()  # adopted keys whose result is not out yet

    def emit(self, kind: str, key: str | None = None, **data: Any) -> None:
        if self.on_asset is not None and key is not None and kind in _ASSET_KINDS:
            self.on_asset(key, str(data.get("asset_id") or ""))
        if self.on_event is not None:
            self.on_event(Event(kind, key, data))
        if self.hooks and (event := hooks.item_event(kind, key, data)) is not None:
            self.hooks.emit(event)

    def adopted(self, key: str) -> None:
        self._adopted.add(key)

    async def finish(self, result: IngestResult) -> None:
        if self.on_done is not None:
            await self.on_done(result)
        if result.message:  # server text may echo credentials: masked before any output
            result = dataclasses.replace(result, message=redact_text(result.message))
        if result.key in self._adopted:
            self._adopted.discard(result.key)
            result = dataclasses.replace(result, adopted=True)
        if self.on_finished is not None:
            self.on_finished(result)
        self.report.count(result)
        self.emit("done", result.key, status=result.status, error_code=result.error_code)
        if self.hooks:
            self.hooks.emit(hooks.result_event(result))
        await self.send.send(result)

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
        if record:
            await self.journal.mark_done(
                item.key, STATE_OF[outcome], asset_id=asset_id, error_code=code, message=message
            )
        await self.finish(
            IngestResult(item.key, item.name, outcome, item.source, asset_id, code, message)
        )
