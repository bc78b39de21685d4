"""The queued ingest (``enqueue`` / ``ingest --queue``) in one process: the records and
moves of :mod:`chenyu_assets.batch.queue_store` against a real redis-server, a worker
taking over a dead one's items against the emulator over 127.0.0.1, the flags a queued
ingest refuses and ``status --queue``. Real worker processes: tests/test_queue_workers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from chenyu_assets._core.ratelimit import SlotPool
from chenyu_assets.batch import IngestOptions
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.queue import WorkerQueue, enqueue, open_worker
from chenyu_assets.batch.queue_store import QueueStore, item_id
from chenyu_assets.batch.sources import BadItem, SourceItem, open_source
from chenyu_assets.cli import main
from chenyu_assets.emulator import Emulator, EmulatorConfig
from chenyu_assets.errors import ConfigurationError
from tests.redis_kit import RedisServer, redis_server
from tests.test_ingest import clients, make_images

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

GROUP_ID = "group-1"


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[QueueStore]:
    s = QueueStore(redis_server.url, job="t", timeout=2.0)
    try:
        yield s
    finally:
        await s.aclose()


def items(tmp_path: Path, n: int) -> list[SourceItem]:
    return [SourceItem(f"img-{i}.png", tmp_path / f"img-{i}.png", None) for i in range(n)]


@pytest.mark.anyio
async def test_enqueue_twice_adds_nothing(store: QueueStore, tmp_path: Path) -> None:
    first = await enqueue(store, items(tmp_path, 7), group_id=GROUP_ID)
    again = await enqueue(store, items(tmp_path, 9), group_id=GROUP_ID)  # 2 new ones
    assert (first.added, first.known) == (7, 0)
    assert (again.added, again.known) == (2, 7)
    r = store.redis()
    assert await r.xlen(store.stream) == 9
    snap = await store.snapshot()
    assert snap["total"] == 9
    assert snap["states"] == {"queued": 9}
    assert snap["group_id"] == GROUP_ID
    assert snap["enqueuing"] == 0  # the enqueuer's lease is gone with it


@pytest.mark.anyio
async def test_a_job_holds_one_group(store: QueueStore, tmp_path: Path) -> None:
    await enqueue(store, items(tmp_path, 1), group_id=GROUP_ID)
    with pytest.raises(ConfigurationError, match="belongs to group group-1"):
        await enqueue(store, items(tmp_path, 1), group_id="other")


@pytest.mark.anyio
async def test_bad_items_and_credential_urls_are_recorded_skipped_without_secrets(
    store: QueueStore,
) -> None:
    secret_url = "https://user:hunter2@example.com/a.png"
    source = [
        SourceItem(secret_url, None, secret_url),
        BadItem("line-3", "bad_line", "not JSON"),
    ]
    report = await enqueue(store, source, group_id=GROUP_ID)
    assert report.skipped == 2
    assert await store.redis().xlen(store.stream) == 0  # nothing for a worker to do
    dump = b""
    async for key in store.redis().scan_iter(match=store.base + "*"):
        if await store.redis().type(key) == b"hash":
            dump += b"".join(x for kv in (await store.redis().hgetall(key)).items() for x in kv)
    assert b"hunter2" not in dump
    snap = await store.snapshot()
    assert snap["states"] == {"skipped": 2}
    assert {p["error_code"] for p in snap["problems"]} == {"bad_url", "bad_line"}


@pytest.mark.anyio
async def test_claim_fence_takeover_and_finish(store: QueueStore, tmp_path: Path) -> None:
    await enqueue(store, items(tmp_path, 3), group_id=GROUP_ID)
    await store.open_job(None)
    a = await store.claim("a", 10, idle=60)
    assert len(a) == 3
    assert {rec["state"] for _, rec in a} == {"claimed"}
    assert {rec["attempts"] for _, rec in a} == {"1"}
    assert await store.claim("b", 10, idle=60) == []  # held by a, not idle long enough
    (eid0, rec0), (eid1, rec1), _ = a
    assert await store.fence("a", eid0, rec0["id"])  # a may send item 0
    # b takes everything over (idle 0 stands for "a has been silent for claim_idle")
    b = await store.claim("b", 10, idle=0)
    assert len(b) == 3
    taken = {rec["key"]: rec for _, rec in b}
    assert taken[rec0["key"]]["sent"] == "1"  # a's create may have been sent: reconcile
    assert "sent" not in taken[rec1["key"]]  # never sent: no create can exist
    assert {rec["attempts"] for rec in taken.values()} == {"2"}
    assert not await store.fence("a", eid1, rec1["id"])  # a lost it: a never sends
    assert await store.heartbeat("a", [eid0, eid1]) == {eid0, eid1}
    assert await store.heartbeat("b", [eid0, eid1]) == set()
    snap = await store.snapshot()
    assert snap["in_flight"] == {"b": 3}
    assert not await store.finished()
    for eid, rec in b:
        await store.set_state("b", eid, rec["id"], "active", asset_id="asset-x", ack=True)
    # a late failure of the worker that lost the item never overwrites an Active record
    await store.set_state("a", eid0, rec0["id"], "retryable", code="upload_failed", ack=True)
    snap = await store.snapshot()
    assert snap["states"] == {"active": 3}
    assert snap["in_flight"] == {}
    assert await store.finished()


@pytest.mark.anyio
async def test_retryable_items_are_put_back_by_a_worker_start(
    store: QueueStore, tmp_path: Path
) -> None:
    await enqueue(store, items(tmp_path, 2), group_id=GROUP_ID)
    await store.open_job(None)
    (eid, rec), (eid2, rec2) = await store.claim("a", 10, idle=60)
    await store.set_state("a", eid, rec["id"], "retryable", code="upload_failed", ack=True)
    await store.set_state("a", eid2, rec2["id"], "failed", code="WidthTooSmall", ack=True)
    snap = await store.snapshot()
    assert snap["states"] == {"failed": 1, "retryable": 1}
    assert await store.finished()
    assert await store.requeue_retryable() == 1  # the failed one stays failed
    again = await store.claim("b", 10, idle=60)
    assert [(r["key"], r["attempts"]) for _, r in again] == [(rec["key"], "2")]
    assert (await store.snapshot())["states"] == {"claimed": 1, "failed": 1}


@pytest.mark.anyio
async def test_worker_queue_holds_at_most_prefetch(store: QueueStore, tmp_path: Path) -> None:
    await enqueue(store, items(tmp_path, 5), group_id=GROUP_ID)
    await store.open_job(None)
    queue = WorkerQueue(store, name="w", prefetch=2, claim_idle=60, poll=0.01)
    batches = queue.batches()
    first = await batches.__anext__()
    assert len(first) == 2
    assert len(queue.held) == 2
    assert {item.key for item in first} <= {f"img-{i}.png" for i in range(5)}
    assert (await store.snapshot())["in_flight"] == {"w": 2}
    queue.release(first[0].key)  # one done: room for one more
    second = await batches.__anext__()
    assert len(second) == 1
    await batches.aclose()
    assert item_id(first[0].key) != item_id(second[0].key)


@pytest.mark.anyio
async def test_a_dead_workers_sent_item_is_adopted_its_unsent_ones_created(
    store: QueueStore, tmp_path: Path
) -> None:
    """A worker claimed three items, passed the fence of the first two, and died; the
    create of the first lands late, after a live worker listed the group's names. The
    live worker takes the three over: the first is reconciled by name and adopted (no
    second create), the other two are created once each."""
    paths = make_images(tmp_path / "src", 4)
    config = EmulatorConfig(processing_delay=0.05, processing_jitter=0.0)
    async with Emulator(config) as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="queue")
            three = [it for it in open_source(tmp_path / "src") if it.key != "img-0003.png"]
            await enqueue(store, three, group_id=group)
            dead = {rec["key"]: (eid, rec) for eid, rec in await store.claim("dead", 10, 60)}
            for key in ("img-0000.png", "img-0001.png"):
                eid, rec = dead[key]
                assert await store.fence("dead", eid, rec["id"])
            await enqueue(store, open_source(tmp_path / "src"), group_id=group)  # + img-0003
            up = await chenyu.upload(paths[0])
            url = up.signed_url or up.url or up.content_url
            assert url
            queue = WorkerQueue(store, name="alive", claim_idle=0.3, poll=0.02)
            opts = IngestOptions(reconcile_wait=0.2, reconcile_interval=0.05)
            alive = anyio.Event()  # the dead worker's entries kept fresh until set
            landed = ""

            async def dead_until_landed() -> None:
                eids = [eid for eid, _ in dead.values()]
                while not alive.is_set():
                    await store.heartbeat("dead", eids)
                    await anyio.sleep(0.05)

            results = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(dead_until_landed)
                async with open_worker(ark, queue, chenyu=chenyu, options=opts) as run:
                    async for r in run:
                        results[r.key] = r
                        if not alive.is_set():  # img-0003: the names were listed before
                            assert r.key == "img-0003.png"
                            name = asset_name("img-0000.png")
                            landed = await ark.create_asset(group_id=group, url=url, name=name)
                            alive.set()
        audit = emu.audit()
    assert audit.count("CreateAsset", 200) == 4  # the dead worker's one, then three new
    assert audit.duplicates() == {}
    assert sorted(a.status for a in audit.assets) == ["Active"] * 4
    assert results["img-0000.png"].asset_id == landed
    assert results["img-0000.png"].adopted
    assert {r.status for r in results.values()} == {"active"}
    assert queue.taken_over == 3
    snap = await store.snapshot()
    assert snap["states"] == {"active": 4}
    assert snap["in_flight"] == {}


@pytest.mark.anyio
async def test_a_worker_whose_items_were_taken_over_never_sends_them(
    store: QueueStore, tmp_path: Path
) -> None:
    """A worker that froze (here: waiting for a Processing slot) while another took its
    items over checks ownership before CreateAsset and drops them: 0 creates from it."""
    make_images(tmp_path / "src", 2)
    config = EmulatorConfig(processing_delay=0.05, processing_jitter=0.0)
    slots = SlotPool(1)
    await slots.acquire("someone else")  # no create can start until it is released
    async with Emulator(config) as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="queue")
            await enqueue(store, open_source(tmp_path / "src"), group_id=group)
            queue = WorkerQueue(store, name="frozen", claim_idle=60, poll=0.02)
            results = []

            async def steal_then_finish() -> None:
                with anyio.fail_after(30):  # a hang guard only
                    while len(emu.audit().uploads) < 2:  # both staged, waiting for a slot
                        await anyio.sleep(0.02)
                taken = await store.claim("other", 10, idle=0)
                assert len(taken) == 2
                await slots.release("someone else")
                with anyio.fail_after(30):
                    while queue.held:  # the frozen worker drops what it lost
                        await anyio.sleep(0.02)
                for eid, rec in taken:  # the other worker finishes them
                    await store.set_state("other", eid, rec["id"], "skipped", ack=True)

            async with anyio.create_task_group() as tg:
                tg.start_soon(steal_then_finish)
                async with open_worker(ark, queue, chenyu=chenyu, slots=slots) as run:
                    results = [r async for r in run]
        audit = emu.audit()
    assert audit.count("CreateAsset") == 0
    assert results == []  # nothing reported for items it no longer owned
    assert (await store.snapshot())["states"] == {"skipped": 2}


@pytest.mark.parametrize(
    "flags",
    [
        ["--shard", "0/2"],
        ["--group", "hero"],
        ["--journal", "j.db"],
        ["--dry-run"],
        ["--emulator"],
        ["--retry-failed"],
        ["--replace-changed"],
    ],
)
def test_flags_a_queued_ingest_refuses(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # refused while parsing: nothing is read and no Redis is asked (none listens on port 1)
    code = main(["ingest", str(tmp_path), "--queue", "redis://127.0.0.1:1/0", *flags])
    assert code == 2
    assert f"{flags[0]} does not go with --queue" in capsys.readouterr().err


@pytest.mark.anyio
async def test_status_queue_shows_states_workers_and_problems(
    store: QueueStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await enqueue(
        store, [*items(tmp_path, 3), BadItem("row-9", "bad_line", "not JSON")], group_id=GROUP_ID
    )
    await store.open_job(None)
    await store.lease("add", "w1", 30, of="workers")
    (eid, rec), *_ = await store.claim("w1", 2, idle=60)
    await store.set_state("w1", eid, rec["id"], "retryable", code="upload_failed", ack=True)
    # the command opens its own connection and event loop: run it off this loop
    code = await anyio.to_thread.run_sync(
        main, ["status", "--queue", store.url, "--job", store.job]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"group {GROUP_ID}" in out
    assert "items: 4" in out
    assert "claimed 1" in out
    assert "queued 1" in out
    assert "retryable 1" in out
    assert "workers alive: 1 (w1)" in out
    assert "  w1  1" in out  # in flight per worker
    assert "row-9  skipped  bad_line  not JSON" in out
    assert f"{rec['key']}  retryable  upload_failed" in out
