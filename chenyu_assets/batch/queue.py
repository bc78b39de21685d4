"""Queued ingest: elastic workers on any number of machines share one source through a
Redis Stream (:mod:`.queue_store` holds the keys and scripts).

:func:`enqueue` streams a source into the job once: an item whose key the job knows adds
nothing. A worker (:func:`open_worker`) is one member of the stream's consumer group and
runs the usual pipeline (:class:`~chenyu_assets.batch.orchestrator.Pipeline`, given the
worker's :class:`~chenyu_assets.batch.work.WorkerSeams`) on the items it claims:
pre-flight, staging, CreateAsset under the shared rate limits and Processing slots, the
watcher, one result per item, written to the item's record in Redis together
with the entry's XACK (one script: a result is never recorded without its ack, or the
reverse).

Exactly once across workers:

* A worker holds at most ``prefetch`` entries. A live worker resets their idle time every
  ``claim_idle / 4`` s (XCLAIM to itself, only of entries it still owns: one script); an
  entry idle for ``claim_idle`` s belongs to a dead (or frozen) worker and the next claim
  of any worker takes it over (XAUTOCLAIM).
* Just before CreateAsset the worker checks, in the same script that marks the record
  ``sending`` / ``sent``, that it still owns the entry: a worker whose entry was taken over
  never sends.
* An item whose record says a create may have been sent (``sent``) is reconciled by its
  exact Name in the group (ListAssets, waiting for list lag) before anything else: found,
  it is adopted (watched, or its result taken); absent, it is created. Items never sent
  go by the group's name index listed once per worker, like any ingest.

So ``claim_idle`` must exceed the longest time a dead worker's last CreateAsset may stay
on the wire: it was sent after the worker's last heartbeat, so ``claim_idle`` minus one
heartbeat interval passes before the item is claimed, plus the reconciliation's wait for
list lag; with the defaults 55 + 10 s, above the client's 60 s ``headers`` timeout. Left:
a worker frozen for longer than ``claim_idle`` between its ownership check and its send.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from chenyu_assets._core.logs import get_logger, redact_text, redact_url
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.batch.journal import Entry
from chenyu_assets.batch.journal_thread import take
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.queue_store import QueueStore, item_id
from chenyu_assets.batch.run import IngestStream, open_ingest
from chenyu_assets.batch.sources import BadItem, IgnoredItem, KeySet, SourceItem, url_has_userinfo
from chenyu_assets.batch.types import Event, IngestOptions, IngestResult
from chenyu_assets.batch.work import WorkerSeams
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.limits import Slots

__all__ = ["EnqueueReport", "WorkerQueue", "enqueue", "open_worker"]

log = get_logger("chenyu_assets.batch")

#: items per enqueue round trip, and seconds an enqueuer's lease lasts (renewed at 1/3)
ENQUEUE_BATCH = 500
ENQUEUE_LEASE = 15.0


def worker_name() -> str:
    """A consumer name nobody else has: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# -- enqueue ------------------------------------------------------------------------------------


@dataclass
class EnqueueReport:
    added: int = 0
    known: int = 0  # already in the job: nothing added
    skipped: int = 0  # recorded as skipped (a bad manifest line, a URL with credentials...)
    ignored: int = 0  # not items (see IgnoredItem)


def _row(item: SourceItem | BadItem, names: KeySet) -> tuple[str, str, dict[str, str]]:
    """The record of one item: ``(item id, state, fields)``."""
    if isinstance(item, SourceItem) and item.url is not None and url_has_userinfo(item.url):
        key = redact_url(item.key) if url_has_userinfo(item.key) else item.key
        item = BadItem(key, "bad_url", "the URL carries credentials (user:password@); refused")
    if isinstance(item, SourceItem) and item.name and not names.add(item.name):
        msg = f"asset name {item.name!r} is already taken by an item above"
        item = BadItem(item.key, "duplicate_name", msg, item.line)
    if isinstance(item, BadItem):
        fields = {"key": item.key, "error_code": item.reason, "message": redact_text(item.message)}
        return item_id(item.key), "skipped", fields
    fields = {
        "key": item.key,
        "name": item.name or "",
        "path": os.fsdecode(item.path) if item.path is not None else "",
        "url": item.url or "",
        "label": item.label or "",
        "asset_type": item.asset_type or "",
        "attempts": "0",
    }
    return item_id(item.key), "queued", fields


async def enqueue(
    store: QueueStore,
    source: Iterable[SourceItem | BadItem | IgnoredItem],
    *,
    group_id: str | None,
) -> EnqueueReport:
    """Stream ``source`` into the job (items it knows add nothing); workers keep waiting
    for more while an enqueue runs (a lease in Redis, renewed while it lives). A new job
    needs ``group_id``; a known one may omit it."""
    await store.open_job(group_id)
    me, report, names = worker_name(), EnqueueReport(), KeySet()

    async def keep_lease() -> None:
        while True:
            await store.lease("add", me, ENQUEUE_LEASE)
            await anyio.sleep(ENQUEUE_LEASE / 3)

    iterator = iter(source)
    try:
        async with anyio.create_task_group() as tg:
            await store.lease("add", me, ENQUEUE_LEASE)
            tg.start_soon(keep_lease)
            while taken := await anyio.to_thread.run_sync(take, iterator, ENQUEUE_BATCH):
                rows = []
                for item in taken:
                    if isinstance(item, IgnoredItem):
                        report.ignored += 1
                    else:
                        rows.append(_row(item, names))
                added = await store.add(rows)
                skipped = sum(state == "skipped" for _, state, _ in rows)
                report.added += added
                report.known += len(rows) - added
                report.skipped += skipped
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await store.lease("del", me)
    return report


# -- a worker -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """A stream entry this worker claimed."""

    eid: str
    iid: str
    name: str


class WorkerQueue:
    """One worker's side of the job: what it holds, claims, heartbeats and records."""

    def __init__(
        self,
        store: QueueStore,
        *,
        name: str | None = None,
        prefetch: int = 32,
        claim_idle: float = 60.0,
        poll: float = 0.2,
        upload_bandwidth: float | None = None,
    ) -> None:
        if prefetch < 1 or not claim_idle > 0 or not poll > 0:
            raise ValueError("prefetch >= 1, claim_idle > 0 and poll > 0 are needed")
        self.store = store
        self.name = name or worker_name()
        self.prefetch = prefetch
        self.claim_idle = claim_idle
        self.poll = poll
        self.bandwidth = upload_bandwidth
        self.held: dict[str, Held] = {}  # key -> entry
        self.claimed = 0
        self.taken_over = 0  # claimed after another worker (attempts > 1)
        self.lost = 0  # taken over by another worker while held here
        self._reconcile: set[str] = set()  # names whose create may have been sent
        self._gone: set[str] = set()  # entry ids another worker owns now
        self._notes: dict[str, str] = {}  # key -> asset id, written at the next heartbeat
        self._room = anyio.Event()
        self._free_at = 0.0

    async def batches(self) -> AsyncIterator[list[SourceItem | BadItem]]:
        """Claimed items while there is room, until the job has nothing left anywhere."""
        while True:
            room = self.prefetch - len(self.held)
            if room <= 0:
                self._room = anyio.Event()
                await self._room.wait()
                continue
            got = await self.store.claim(self.name, min(room, 100), self.claim_idle)
            if got:
                yield [self._hold(eid, record) for eid, record in got]
            elif not self.held and await self.store.finished():
                return
            else:
                await anyio.sleep(self.poll)

    def _hold(self, eid: str, rec: dict[str, str]) -> SourceItem:
        key, label = rec.get("key", ""), rec.get("label") or None
        item = SourceItem(
            key=key,
            path=Path(rec["path"]) if rec.get("path") else None,
            url=rec.get("url") or None,
            name=rec.get("name") or None,
            label=label,
            asset_type=rec.get("asset_type") or None,
        )
        name = item.name or asset_name(key, label=label)
        self.held[key] = Held(eid, rec["id"], name)
        self.claimed += 1
        self.taken_over += int(rec.get("attempts") or 1) > 1
        if rec.get("sent") == "1":
            self._reconcile.add(name)
        return item

    def seams(self) -> WorkerSeams:
        """What this worker plugs into the ingest engine (see :func:`open_worker`)."""
        return WorkerSeams(
            batches=self.batches,
            must_reconcile=self.must_reconcile,
            may_send=self.gate,
            pace=self.pace,
            done=self.done,
            asset=self.note,
        )

    def must_reconcile(self, name: str) -> bool:
        return name in self._reconcile

    def release(self, key: str) -> None:
        held = self.held.pop(key, None)
        if held is not None:
            self._reconcile.discard(held.name)
            self._gone.discard(held.eid)
            self._notes.pop(key, None)
        self._room.set()

    async def may_send(self, key: str) -> bool:
        """This worker still owns ``key``'s entry (the record now says ``sending``)."""
        held = self.held.get(key)
        return held is not None and await self.store.fence(self.name, held.eid, held.iid)

    async def gate(self, entry: Entry) -> bool:
        """Right before CreateAsset (the create stage skips it for an item created earlier:
        that one is only watched): True when this worker may send it; False releases the
        item (another worker took it over: it creates or adopts it, not this one)."""
        if await self.may_send(entry.key):
            return True
        self.release(entry.key)
        return False

    def note(self, key: str, asset_id: str) -> None:
        if key in self.held:
            self._notes[key] = asset_id

    async def done(self, result: IngestResult) -> None:
        held = self.held.get(result.key)
        if held is None:
            return
        state = "retryable" if result.retryable else result.status
        await self.store.set_state(
            self.name,
            held.eid,
            held.iid,
            state,
            asset_id=result.asset_id,
            code=result.error_code,
            message=redact_text(result.message) if result.message else None,
            ack=True,
        )
        self.release(result.key)

    async def heartbeat_forever(self) -> None:
        """Keep the held entries' idle time low, write the noted asset ids, and renew this
        worker's lease (``status`` lists the live workers)."""
        while True:
            await self.store.lease("add", self.name, self.claim_idle, of="workers")
            await anyio.sleep(min(self.claim_idle / 4, 5.0))
            notes, self._notes = self._notes, {}
            for key, asset_id in notes.items():
                if (held := self.held.get(key)) is not None:
                    await self.store.set_state(
                        self.name, held.eid, held.iid, "created", asset_id=asset_id
                    )
            eids = [h.eid for h in self.held.values() if h.eid not in self._gone]
            gone = await self.store.heartbeat(self.name, eids)
            if gone:
                log.warning("%d item(s) were taken over by another worker", len(gone))
                self.lost += len(gone)
                self._gone |= gone

    async def pace(self, path: Path) -> None:
        """Wait for this worker's upload bandwidth (``upload_bandwidth`` bytes/s)."""
        if not self.bandwidth:
            return
        try:
            size = (await anyio.Path(path).stat()).st_size
        except OSError:  # gone or unreadable: the upload reports it
            return
        now = anyio.current_time()
        self._free_at = max(now, self._free_at) + size / self.bandwidth
        await anyio.sleep(self._free_at - now)


@contextlib.asynccontextmanager
async def open_worker(
    ark: ArkFamilyClient,
    queue: WorkerQueue,
    *,
    chenyu: ChenyuClient | None = None,
    options: IngestOptions | None = None,
    slots: Slots | None = None,
    on_event: Callable[[Event], None] | None = None,
    journal: str | os.PathLike[str] | None = None,
) -> AsyncIterator[IngestStream]:
    """Run one worker of the job until the job has nothing left anywhere; its results as
    they complete (like :func:`~chenyu_assets.batch.open_ingest`). The retryable items of
    earlier runs are put back on the stream first (a restart retries them)."""
    store = queue.store
    group_id = await store.open_job(None)
    await store.requeue_retryable()
    opts = dataclasses.replace(options or IngestOptions(), adopt_existing=True, dry_run=False)
    info = {"queue": store.shown_url, "job": store.job, "worker": queue.name}
    await store.lease("add", queue.name, queue.claim_idle, of="workers")
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.heartbeat_forever)
        async with open_ingest(
            ark,
            (),
            group_id=group_id,
            journal=journal,
            chenyu=chenyu,
            options=opts,
            slots=slots,
            on_event=on_event,
            run_info=info,
            unique_keys=True,
            seams=queue.seams(),
        ) as run:
            yield run
        tg.cancel_scope.cancel()
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await store.lease("del", queue.name, of="workers")
