"""Bulk ingest: a bounded pipeline from a source to Active assets, crash-safe and
duplicate-free.

::

    source ─► register ─► pre-flight ─► upload (local files) ─► create ─► poller ─► results
              (journal)   (media check,  (Chenyu, signed URL)   (slot,      (one ListAssets
                          URL safety)                           intent,     per tick)
                                                                send)

Every stage is a fixed number of tasks joined by bounded memory streams (never one task
per item), so memory is flat whatever the manifest's size. All stages share the clients'
per-action limiters. A *processing slot* is taken before CreateAsset and given back when
the poller sees the asset ``Active`` or ``Failed``: at most ``max_processing`` of the
account's assets are ``Processing`` at once.

No duplicates: each item has a deterministic Name; the journal records the intent before
every CreateAsset and the outcome right after. An ambiguous outcome (timeout, reset, 5xx
after sending) is reconciled by listing the group for that exact Name, waiting a bounded
time for list lag, before any re-create. A resumed run does the same for items left in
``creating`` / ``unknown``, tracks ``created`` ones, and sends nothing for finished ones.

One failing item never stops the others: each ends as ``active``, ``failed`` (with a
reason code) or ``skipped``. Bad credentials, a denied permission or a missing group stop
new work at once with the journal intact (``IngestReport.fatal``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from chenyu_assets import media
from chenyu_assets._core.ratelimit import SlotPool, Slots
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch.journal import TERMINAL, Entry, ItemState, Journal, Registration
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.poller import Poller, Tracked
from chenyu_assets.batch.sources import BadItem, SourceItem, open_source
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    APIError,
    AuthenticationError,
    BadRequestError,
    MediaCheckError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    TransportError,
    UploadError,
)
from chenyu_assets.limits import MAX_PROCESSING
from chenyu_assets.models.ark import Asset

__all__ = ["Event", "IngestOptions", "IngestReport", "IngestResult", "ingest", "open_ingest"]

T = TypeVar("T")
Status = Literal["active", "failed", "skipped", "planned"]
_VIDEO_EXT = {".mp4", ".mov", ".m4v"}
_AUDIO_EXT = {".wav", ".mp3", ".m4a", ".aac"}
_ASSET_MAY_EXIST = frozenset(
    {ItemState.CREATING, ItemState.CREATED, ItemState.UNKNOWN, ItemState.ACTIVE}
)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """Knobs of one ingest. Concurrency is per stage; all stages share the rate limits."""

    max_processing: int = MAX_PROCESSING
    preflight_concurrency: int = 2
    upload_concurrency: int = 4
    create_concurrency: int = 8
    queue_size: int = 64
    poll_min_interval: float = 0.25
    poll_max_interval: float = 10.0
    poll_lookback: float = 2.0
    stale_after: float = 15.0
    processing_timeout: float = 3600.0
    reconcile_wait: float = 10.0
    reconcile_interval: float = 0.5
    url_min_validity: float = 3600.0
    preflight: bool = True
    dry_run: bool = False
    allow_private_urls: bool = False
    upload_ttl_hours: int = 48
    create_unit_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The end of one item. ``resumed``: it had finished in an earlier run."""

    key: str
    name: str
    status: Status
    source: str
    asset_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    resumed: bool = False

    @property
    def reference(self) -> str | None:
        return f"asset://{self.asset_id}" if self.asset_id and self.status == "active" else None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "status": self.status,
            "source": self.source,
            "asset_id": self.asset_id,
            "reference": self.reference,
            "error_code": self.error_code,
            "message": self.message,
            "resumed": self.resumed,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """Progress: queued, uploaded, created, polled, done, retried, rate_limited, recovered."""

    kind: str
    key: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class IngestReport:
    total: int = 0
    active: int = 0
    failed: int = 0
    skipped: int = 0
    planned: int = 0
    resumed: int = 0
    recovered: int = 0
    creates: int = 0
    status_calls: int = 0
    rate_limited: int = 0
    retries: int = 0
    max_processing_seen: int = 0
    elapsed: float = 0.0
    fatal: str | None = None
    interrupted: bool = False
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def status_calls_per_asset(self) -> float:
        done = self.active + self.failed - self.resumed
        return self.status_calls / done if done > 0 else 0.0

    @property
    def finished(self) -> int:
        return self.active + self.failed + self.skipped + self.planned

    def count(self, result: IngestResult) -> None:
        self.total += 1
        self.resumed += result.resumed
        if result.status == "active":
            self.active += 1
        elif result.status == "failed":
            self.failed += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.planned += 1
        if result.status in ("failed", "skipped") and result.error_code:
            self.failures[result.error_code] = self.failures.get(result.error_code, 0) + 1


class _Fatal(Exception):
    """Stop all new work; the journal is consistent."""


@dataclass(slots=True)
class _Work:
    entry: Entry
    item: SourceItem | None
    reconcile: bool = False


class _JournalThread:
    """Runs every journal call on one dedicated thread (SQLite connections are per thread,
    and an fsync must not stall the event loop that paces requests)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chenyu-journal")
        self.journal: Journal | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        journal = self.journal
        if journal is None:
            raise RuntimeError("journal is not open")
        return await self.run(getattr(journal, method), *args, **kwargs)

    async def close(self) -> None:
        if self.journal is not None:
            await self.run(self.journal.close)
            self.journal = None
        self._pool.shutdown(wait=True)


def _url_problem(url: str, allow_private: bool) -> str | None:
    """Why a source URL must not be given to CreateAsset, or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "malformed URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    host = parts.hostname
    if not host:
        return "URL has no host"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return "URL points at localhost"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or (ip.is_multicast or ip.is_unspecified)
    ):
        return f"URL points at a non-public address ({ip})"
    return None


def _asset_type_for(item: SourceItem, info: media.MediaInfo | None) -> str:
    if item.asset_type:
        return item.asset_type
    if info is not None:
        return info.asset_type
    ext = Path(urlsplit(item.url or "").path or (item.path or Path()).name).suffix.lower()
    if ext in _VIDEO_EXT:
        return "Video"
    if ext in _AUDIO_EXT:
        return "Audio"
    return "Image"


def _hash_and_check(path: Path, asset_type: str | None) -> tuple[str, media.MediaInfo]:
    info = media.check_file(path, asset_type)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest(), info


class _Run:
    """One ingest run; see :func:`open_ingest`."""

    def __init__(
        self,
        ark: ArkFamilyClient,
        source: Iterable[SourceItem | BadItem],
        *,
        group_id: str,
        journal: _JournalThread,
        chenyu: ChenyuClient | None,
        options: IngestOptions,
        slots: Slots,
        on_event: Callable[[Event], None] | None,
        send_results: ObjectSendStream[IngestResult],
    ) -> None:
        self.ark = ark
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
        self.poller = Poller(
            ark,
            group_id=group_id,
            on_done=self._polled,
            min_interval=options.poll_min_interval,
            max_interval=options.poll_max_interval,
            lookback=options.poll_lookback,
            stale_after=options.stale_after,
            processing_timeout=options.processing_timeout,
            project_name=ark.project_name,
        )
        self._in_flight = 0

    # -- plumbing ----------------------------------------------------------------------
    def emit(self, kind: str, key: str | None = None, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(Event(kind, key, data))

    async def finish(self, result: IngestResult) -> None:
        self.items.pop(result.key, None)
        self.report.count(result)
        self.emit("done", result.key, status=result.status, error_code=result.error_code)
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
        """All stages, then the poller until nothing is processing; fatal stops cleanly."""
        started = time.monotonic()
        base_retries, base_429 = self.ark.stats.retries, self.ark.stats.rate_limited

        def hook(event: str, fields: Mapping[str, Any]) -> None:
            self.emit("retried" if event == "retry" else event, None, **fields)

        self.ark.add_event_hook(hook)
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self.poller.run)
                await self._stages()
                await self.poller.wait_empty()
                outer.cancel_scope.cancel()
        except* _Fatal as group:
            self.report.fatal = "; ".join(str(e) for e in _leaves(group))
        finally:
            self.ark.remove_event_hook(hook)
            self.report.elapsed = time.monotonic() - started
            self.report.status_calls += self.poller.status_calls
            self.report.retries = self.ark.stats.retries - base_retries
            self.report.rate_limited = self.ark.stats.rate_limited - base_429
            done.set()
            await self.results.aclose()

    async def _stages(self) -> None:
        o = self.opt
        size = o.queue_size
        to_pre, pre_in = anyio.create_memory_object_stream[_Work](size)
        to_up, up_in = anyio.create_memory_object_stream[_Work](size)
        to_create, create_in = anyio.create_memory_object_stream[_Work](size)
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
    async def produce(self, out: ObjectSendStream[_Work], resume: ObjectSendStream[_Work]) -> None:
        async with out, resume:
            iterator = iter(self.source)
            while batch := await anyio.to_thread.run_sync(_take, iterator, 256):
                for entry, item in await self.journal.run(_register, self.journal.journal, batch):
                    await self._dispatch(entry, item, out, resume)

    async def _dispatch(
        self,
        entry: Entry | BadItem,
        item: SourceItem | None,
        out: ObjectSendStream[_Work],
        resume: ObjectSendStream[_Work],
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
            status: Status = entry.state.value  # type: ignore[assignment]
            if entry.changed and entry.state is ItemState.ACTIVE:
                await self.finish(
                    IngestResult(
                        entry.key,
                        entry.name,
                        "skipped",
                        entry.source,
                        entry.asset_id,
                        "source_changed",
                        "the file changed after its asset was created; "
                        "ingest it under another key or journal",
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
        if entry.state in (ItemState.CREATED, ItemState.CREATING, ItemState.UNKNOWN):
            await resume.send(_Work(entry, item, reconcile=entry.state is not ItemState.CREATED))
        else:
            await out.send(_Work(entry, item))

    async def preflight(
        self, inbox: ObjectReceiveStream[_Work], out: ObjectSendStream[_Work]
    ) -> None:
        async with inbox, out:
            async for work in inbox:
                if await self._preflight_one(work):
                    await out.send(work)

    async def _preflight_one(self, work: _Work) -> bool:
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
            problem = _url_problem(item.url, self.opt.allow_private_urls)
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
                _hash_and_check, item.path, item.asset_type
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

    async def upload(self, inbox: ObjectReceiveStream[_Work], out: ObjectSendStream[_Work]) -> None:
        async with inbox, out:
            async for work in inbox:
                if await self._ensure_url(work):
                    await out.send(work)

    async def _ensure_url(self, work: _Work) -> bool:
        item = work.item
        if item is None or item.url is not None:
            return True
        entry = work.entry
        fresh_until = time.time() + self.opt.url_min_validity
        if entry.upload_url and (entry.upload_expires_at or 0) > fresh_until:
            return True
        if self.chenyu is None:
            raise _Fatal("local files need a Chenyu client to upload them (pass chenyu=...)")
        if item.path is None:  # pragma: no cover - URL items returned above
            raise _Fatal(f"item {entry.key!r} has no path")
        try:
            up = await self.chenyu.upload(item.path, ttl_hours=self.opt.upload_ttl_hours)
        except UploadError as exc:
            await self.finish_entry(
                entry, "skipped", code=exc.reason, message=str(exc), journal_state=ItemState.SKIPPED
            )
            return False
        except (AuthenticationError, PermissionDeniedError) as exc:
            raise _Fatal(f"upload refused: {exc}") from exc
        except (APIError, TransportError) as exc:
            await self.finish_entry(
                entry,
                "failed",
                code="upload_failed",
                message=str(exc),
                journal_state=ItemState.FAILED,
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

    async def create(self, inbox: ObjectReceiveStream[_Work]) -> None:
        async with inbox:
            async for work in inbox:
                await self.slots.acquire(work.entry.name)
                tracked = False
                try:
                    tracked = await self._create_one(work)
                finally:
                    if not tracked:
                        await self.slots.release(work.entry.name)

    async def _create_one(self, work: _Work) -> bool:
        """Create (or find) the asset; True when it is now tracked by the poller."""
        entry = work.entry
        if entry.state is ItemState.CREATED and entry.asset_id:
            self._track(entry.key, entry.name, entry.asset_id, resumed=True)
            return True
        if work.reconcile:
            found = await self.reconcile(entry.name, wait=True)
            if found is not None:
                return await self._found(entry, found)
            await self.journal.call("reset_to_pending", entry.key)
            work.entry = entry = await self.journal.call("get", entry.key)
            work.reconcile = False
            if not await self._ensure_url(work):
                return False
            entry = work.entry
        item = work.item
        url = item.url if item is not None and item.url else entry.upload_url
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
            _asset_type_for(item, None) if item is not None else (entry.asset_type or "Image")
        )
        for _ in range(3):
            kind, value = await self._send_create(entry, url, asset_type)
            if kind == "created":
                self.emit("created", entry.key, asset_id=value)
                self._track(entry.key, entry.name, str(value))
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
                    raise _Fatal(f"group {self.group_id} not found: {value}")
                raise _Fatal(f"CreateAsset refused: {value}")
            if kind == "throttled":
                self.emit("retried", entry.key, reason="rate limited")
                await anyio.sleep(1.0)
                continue
            found = await self.reconcile(entry.name, wait=True)  # kind == "ambiguous"
            if found is not None:
                self.report.recovered += 1
                self.emit("recovered", entry.key, asset_id=found.id)
                return await self._found(entry, found)
            await self.journal.call("reset_to_pending", entry.key)
            self.emit("retried", entry.key, reason="not found after an ambiguous create")
        await self.finish_entry(
            entry,
            "failed",
            code="create_retries_exhausted",
            message="CreateAsset did not succeed after 3 tries",
            journal_state=ItemState.FAILED,
        )
        return False

    async def _send_create(self, entry: Entry, url: str, asset_type: str) -> tuple[str, Any]:
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
                    group_id=self.group_id, url=url, asset_type=asset_type, name=entry.name
                )
            except AmbiguousOutcomeError as exc:
                await self.journal.call(
                    "mark_unknown", entry.key, error_code=type(exc.cause).__name__, message=str(exc)
                )
                return "ambiguous", exc
            except BadRequestError as exc:
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
        raise _Fatal(
            f"{entry.key}: CreateAsset did not finish within {self.opt.create_unit_timeout:g} s"
        )  # pragma: no cover

    async def _found(self, entry: Entry, asset: Asset) -> bool:
        await self.journal.call("mark_created", entry.key, asset.id)
        if asset.is_terminal:
            tracked = Tracked(entry.key, entry.name, asset.id)
            await self._polled(tracked, asset, False)
            return True
        self._track(entry.key, entry.name, asset.id)
        return True

    def _track(self, key: str, name: str, asset_id: str, *, resumed: bool = False) -> None:
        self._in_flight += 1
        self.report.max_processing_seen = max(self.report.max_processing_seen, self._in_flight)
        self.poller.track(key, name, asset_id, check_now=resumed)

    async def reconcile(self, name: str, *, wait: bool) -> Asset | None:
        """The asset of this group named exactly ``name``, waiting for list lag if asked."""
        deadline = time.monotonic() + (self.opt.reconcile_wait if wait else 0.0)
        while True:
            matches: list[Asset] = []
            try:
                async for asset in self.ark.list_assets(group_ids=[self.group_id], name=name):
                    if asset.name == name:
                        matches.append(asset)
            except (APIError, TransportError) as exc:
                if isinstance(exc, AuthenticationError | PermissionDeniedError):
                    raise _Fatal(f"ListAssets refused: {exc}") from exc
            if matches:
                matches.sort(key=lambda a: (a.create_time is None, a.create_time, a.id))
                return matches[0]
            if time.monotonic() >= deadline:
                return None
            await anyio.sleep(self.opt.reconcile_interval)

    async def _polled(self, tracked: Tracked, asset: Asset, timed_out: bool) -> None:
        self._in_flight -= 1
        await self.slots.release(tracked.name)
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
        return str(item.path) if item.path is not None else (item.url or key)


def _leaves(group: BaseExceptionGroup[_Fatal]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _take(iterator: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(iterator, n))


def _register(
    journal: Journal | None, batch: list[SourceItem | BadItem]
) -> list[tuple[Entry | BadItem, SourceItem | None]]:
    """Register a batch in one transaction (runs on the journal thread)."""
    if journal is None:
        raise RuntimeError("journal is not open")
    regs: list[Registration] = []
    for item in batch:
        if isinstance(item, BadItem):
            continue
        size = mtime = None
        if item.path is not None:
            try:
                st = os.stat(item.path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                pass
        name = item.name or asset_name(item.key, label=item.label)
        source: str | os.PathLike[str] = item.path if item.path is not None else (item.url or "")
        regs.append(
            Registration(item.key, name, source, None, size, mtime, item.asset_type, item.label)
        )
    journal.register_many(regs)
    out: list[tuple[Entry | BadItem, SourceItem | None]] = []
    by_key = {r.key: r for r in regs}
    for item in batch:
        if isinstance(item, BadItem):
            out.append((item, None))
            continue
        reg = by_key[item.key]
        entry = journal.get(item.key)
        if entry is None:  # pragma: no cover - just registered
            raise RuntimeError(f"journal lost {item.key!r}")
        if entry.state in _ASSET_MAY_EXIST:
            entry.changed = any(
                new is not None and old is not None and new != old
                for new, old in ((reg.size, entry.size), (reg.mtime_ns, entry.mtime_ns))
            )
        out.append((entry, item))
    return out


class IngestStream:
    """Results of a running ingest, as they complete (``async for``); ``report`` is final
    once the iteration ends."""

    def __init__(self, run: _Run, results: ObjectReceiveStream[IngestResult]) -> None:
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
    source: str | os.PathLike[str] | Iterable[SourceItem | BadItem],
    *,
    group_id: str,
    journal: str | os.PathLike[str] | None = None,
    chenyu: ChenyuClient | None = None,
    options: IngestOptions | None = None,
    slots: Slots | None = None,
    on_event: Callable[[Event], None] | None = None,
    run_info: Mapping[str, str] | None = None,
) -> AsyncIterator[IngestStream]:
    """Run an ingest in the background and yield its results as they complete::

        async with open_ingest(ark, "photos/", group_id=gid, journal="ingest.db",
                               chenyu=chenyu) as run:
            async for result in run:
                print(result.key, result.status, result.reference)
        print(run.report)

    ``source`` is a directory, a ``.csv`` / ``.jsonl`` manifest, or any iterable of
    :class:`SourceItem`. ``journal`` is the SQLite journal that makes a rerun resume
    (a temporary one when None: then nothing survives a crash). Leaving the block early
    cancels the run; the journal stays consistent.
    """
    opts = options or IngestOptions()
    items = open_source(Path(source)) if isinstance(source, str | os.PathLike) else source
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if journal is None:
        tmp = tempfile.TemporaryDirectory(prefix="chenyu-ingest-")
        journal = Path(tmp.name) / "journal.db"
    jt = _JournalThread()
    info = {"group_id": group_id, **(run_info or {})}
    try:
        jt.journal = await jt.run(Journal.open, Path(journal), run_info=info)
        send, receive = anyio.create_memory_object_stream[IngestResult](opts.queue_size)
        run = _Run(
            ark,
            items,
            group_id=group_id,
            journal=jt,
            chenyu=chenyu,
            options=opts,
            slots=slots or SlotPool(opts.max_processing),
            on_event=on_event,
            send_results=send,
        )
        stream = IngestStream(run, receive)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.main, stream.done)
            yield stream
            if not stream.done.is_set():  # the caller stopped early
                tg.cancel_scope.cancel()
    finally:
        await jt.close()
        if tmp is not None:
            tmp.cleanup()


async def ingest(
    ark: ArkFamilyClient,
    source: str | os.PathLike[str] | Iterable[SourceItem | BadItem],
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
