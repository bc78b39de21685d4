"""Processing: every new asset goes ``Processing`` -> ``Active`` or ``Failed``.

Each asset gets one ``loop.call_later`` timer (no task sleeps per asset). The delay is
``processing_delay ± processing_jitter`` (uniform, clipped at 0, from an RNG seeded with
``seed``), divided by ``time_scale``. When it fires:

* ``validate_media=False``: the asset becomes Active at once (fast mode for benchmarks);
* otherwise a task (at most 8 at a time) fetches the URL (:mod:`.fetch`) and checks the
  bytes with :func:`chenyu_assets.media.check_bytes` for the asset type: Active, or Failed
  with ``Error.Code`` = ``vendor_code(reason)`` / ``InvalidParameter.DownloadFailed``.

Fetched content (other than generated samples) is kept content-addressed under
``blobs/ark/<sha256>`` so GetAsset's signed URL can serve it. Assets marked *stuck* by a
fault are never scheduled. :meth:`Processor.close` cancels every timer and task.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path

from yarl import URL

from chenyu_assets import media
from chenyu_assets._core.logs import get_logger
from chenyu_assets.emulator.audit import AuditLog
from chenyu_assets.emulator.clock import Clock
from chenyu_assets.emulator.config import EmulatorConfig
from chenyu_assets.emulator.fetch import Fetcher, FetchError, parse_sample_path
from chenyu_assets.emulator.store import AssetRec, Store
from chenyu_assets.errors import MediaCheckError

__all__ = ["DOWNLOAD_FAILED", "Processor"]

logger = get_logger("chenyu_assets.emulator")

DOWNLOAD_FAILED = "InvalidParameter.DownloadFailed"
_CONCURRENCY = 8


class Processor:
    """Schedules and runs the Processing -> Active/Failed transition of assets."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        config: Callable[[], EmulatorConfig],
        fetcher: Fetcher,
        audit: AuditLog,
        blob_dir: Path,
        seed: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._fetcher = fetcher
        self._audit = audit
        self._blob_dir = blob_dir
        self._rng = random.Random(f"processing-{seed}")
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._closed = False

    def start(self) -> None:
        """Reschedule assets left Processing by a previous run (call inside the loop)."""
        self._sem = asyncio.Semaphore(_CONCURRENCY)
        for asset in self._store.processing_assets():
            self.schedule(asset)

    def delay(self) -> float:
        """The next processing delay in real seconds."""
        cfg = self._config()
        seconds = cfg.processing_delay
        if cfg.processing_jitter:
            seconds += self._rng.uniform(-cfg.processing_jitter, cfg.processing_jitter)
        return max(0.0, seconds) / cfg.time_scale

    def schedule(self, asset: AssetRec, *, stuck: bool = False) -> None:
        """Start the timer of a new Processing asset (none when ``stuck``)."""
        self._audit.processing_level(asset.account, self._store.processing_count(asset.account))
        if stuck or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._handles[asset.id] = loop.call_later(self.delay(), self._due, asset.id)

    def forget(self, asset_id: str) -> None:
        """Stop processing an asset (it was deleted)."""
        handle = self._handles.pop(asset_id, None)
        if handle is not None:
            handle.cancel()

    def pending(self) -> int:
        """Assets waiting for their timer or being validated."""
        return len(self._handles) + len(self._tasks)

    def _due(self, asset_id: str) -> None:
        self._handles.pop(asset_id, None)
        asset = self._store.asset_by_id(asset_id)
        if asset is None or asset.status != "Processing" or self._closed:
            return
        if not self._config().validate_media:
            self._finish(asset, "Active")
            return
        task = asyncio.get_running_loop().create_task(self._validate(asset_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(
        self,
        asset: AssetRec,
        status: str,
        code: str | None = None,
        message: str | None = None,
        blob: str | None = None,
    ) -> None:
        self._store.finish_asset(
            asset,
            status=status,
            now=self._clock.now(),
            t=self._clock.elapsed(),
            error_code=code,
            error_message=message,
            blob=blob,
        )

    async def _validate(self, asset_id: str) -> None:
        if self._sem is None:  # start() not called: behave as if it had been
            self._sem = asyncio.Semaphore(_CONCURRENCY)
        async with self._sem:
            asset = self._store.asset_by_id(asset_id)
            if asset is None or asset.status != "Processing":
                return
            try:
                outcome = await self._check(asset)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("processing asset %s failed unexpectedly", asset_id)
                outcome = ("Failed", "InternalError", "the emulator could not process it", None)
            status, code, message, blob = outcome
            current = self._store.asset_by_id(asset_id)
            if current is asset and asset.status == "Processing":
                self._finish(asset, status, code, message, blob)

    async def _check(self, asset: AssetRec) -> tuple[str, str | None, str | None, str | None]:
        limits = media.LIMITS.get(asset.asset_type)
        if limits is None:
            return "Failed", "InvalidParameter.AssetType", "unknown asset type", None
        try:
            data = await self._fetcher.fetch(asset.source_url, limits.max_bytes)
        except FetchError as exc:
            return "Failed", DOWNLOAD_FAILED, str(exc), None
        try:
            await asyncio.to_thread(media.check_bytes, data, asset.asset_type)
        except MediaCheckError as exc:
            return "Failed", media.vendor_code(exc.reason), str(exc), None
        url = URL(asset.source_url)
        if parse_sample_path(url.path, url.query) is not None:
            return "Active", None, None, None  # regenerated on demand, nothing to keep
        blob = await asyncio.to_thread(self._retain, data)
        return "Active", None, None, blob

    def _retain(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        name = f"ark/{digest}"
        target = self._blob_dir / name
        if target.exists():
            return name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{digest}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        return name

    async def close(self) -> None:
        """Cancel every timer and task; no processing outlives the emulator."""
        self._closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return f"Processor(timers={len(self._handles)}, tasks={len(self._tasks)})"
