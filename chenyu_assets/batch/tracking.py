"""The watcher side of an ingest: each created (or adopted, or found) asset is handed to
the client's status watcher with its Processing slot, and its end becomes the item's result.

:class:`Tracker` counts what is still processing (``max_processing_seen``) and what is not
reported yet (:meth:`Tracker.wait_idle`), and turns a terminal asset into a result:
``Active`` → active, ``Failed`` → failed with the service's code (a transient code such as
``DownloadFailed`` is retryable, see :func:`~.types.retryable`), still ``Processing`` after
``processing_timeout`` → failed / ``processing_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import anyio

from chenyu_assets._api import AssetAPI
from chenyu_assets.batch.types import IngestOptions, IngestReport, Outcome
from chenyu_assets.batch.work import EventSink, Fatal, Tracked
from chenyu_assets.errors import APIError, TransportError, WaitTimeoutError
from chenyu_assets.models.ark import Asset
from chenyu_assets.watcher import Slot

__all__ = ["Tracker"]


class Tracker:
    """Watches the run's assets through ``client.watcher`` and reports each one's end."""

    def __init__(
        self,
        client: AssetAPI,
        sink: EventSink,
        report: IngestReport,
        *,
        group_id: str,
        options: IngestOptions,
    ) -> None:
        self.client = client
        self.sink = sink
        self.report = report
        self.group_id = group_id
        self.opt = options
        self._in_flight = 0  # items whose asset is Processing (as far as the run knows)
        self._unreported = 0  # items handed to the watcher whose end is not reported yet
        self._idle = anyio.Event()
        self._idle.set()
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[Tracked, "asyncio.Future[Asset]"]
        ](math.inf)

    def track(self, tracked: Tracked, slot: Slot) -> None:
        """Hand the asset (and its slot) to the watcher; :meth:`collect` reports its end."""
        self._in_flight += 1
        self._unreported += 1
        self.report.max_processing_seen = max(self.report.max_processing_seen, self._in_flight)
        if self._idle.is_set():
            self._idle = anyio.Event()
        fut = self.client.watcher.watch(
            tracked.asset_id,
            project=self.client.project_name,
            group_id=self.group_id,
            timeout=self.opt.processing_timeout,
            slot=slot,
        )

        def done(f: asyncio.Future[Asset]) -> None:
            self._in_flight -= 1
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._send.send_nowait((tracked, f))  # unless the run is over

        fut.add_done_callback(done)

    async def wait_idle(self) -> None:
        """Until every tracked asset's end is reported."""
        while self._unreported:
            await self._idle.wait()

    async def collect(self) -> None:
        """Report each watched asset's end (the watcher's sweep resolves them)."""
        async with self._receive:
            async for tracked, fut in self._receive:
                self._unreported -= 1
                try:
                    if fut.cancelled():  # the client was closed under us
                        raise Fatal("the client's status watcher was closed")
                    exc = fut.exception()
                    if isinstance(exc, WaitTimeoutError):
                        still = {"Id": tracked.asset_id, "Status": "Processing"}
                        await self.ended(tracked, Asset.model_validate(still), timed_out=True)
                    elif isinstance(exc, APIError | TransportError):
                        raise Fatal(f"status polling refused: {exc}") from exc
                    elif exc is not None:
                        raise exc
                    else:
                        await self.ended(tracked, fut.result())
                finally:
                    if not self._unreported:
                        self._idle.set()

    async def ended(self, tracked: Tracked, asset: Asset, *, timed_out: bool = False) -> None:
        """The result of an item whose asset left Processing (or timed out in it)."""
        self.sink.emit("polled", tracked.key, status=asset.status)
        finish = self.sink.finish_entry
        if timed_out:
            await finish(
                tracked,
                Outcome.FAILED,
                asset_id=asset.id,
                code="processing_timeout",
                message=f"still {asset.status} after the timeout",
            )
        elif asset.status == "Active":
            await finish(tracked, Outcome.ACTIVE, asset_id=asset.id)
        else:
            err = asset.error
            await finish(
                tracked,
                Outcome.FAILED,
                asset_id=asset.id,
                code=(err.code if err else None) or "Failed",
                message=err.message if err else None,
            )
