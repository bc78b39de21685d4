"""The client's watcher (issue 20): one status sweep per tick for every watched asset, the
Processing slots of ``create_asset``, and the emulator's two misbehaviours.

Every test runs on virtual time (``tests/vclock.py``) with the emulator on the same clock,
so rates, ticks, leases and pauses are exact and do not depend on the machine's load."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from emulator_kit import config
from vclock import emulator_clock, virtual

from chenyu_assets._core.ratelimit import SlotPool
from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets.ark import ArkClient
from chenyu_assets.emulator import Emulator, FaultRule
from chenyu_assets.errors import APIError, LimiterUnavailableError, RateLimitError
from chenyu_assets.limits import MAX_PROCESSING

NO_RETRY = RetryPolicy(max_attempts=1)


@contextlib.asynccontextmanager
async def running(
    *, client: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[tuple[Emulator, ArkClient, str]]:
    """An emulator (processing 1 s, no media checks) and an open client, on virtual time."""
    cfg = {"processing_delay": 1.0, "processing_jitter": 0.0, "validate_media": False}
    async with Emulator(config(**{**cfg, **overrides}), clock=emulator_clock()) as emu:
        acc = emu.account
        ark = ArkClient(
            base_url=emu.url,
            access_key=acc.access_key,
            secret_key=acc.secret_key,
            **(client or {}),
        )
        async with ark:
            group_id = await ark.create_asset_group(name="g")
            await asyncio.sleep(1.0)  # leave CreateAssetGroup's window behind
            yield emu, ark, group_id


def status_calls(emu: Emulator) -> int:
    audit = emu.audit()
    return audit.count("ListAssets") + audit.count("GetAsset")


async def create_and_wait(
    ark: ArkClient, emu: Emulator, group_id: str, n: int, tasks: int
) -> list[str]:
    """``n`` creates, each awaited by ``wait_for_asset``, fanned out from ``tasks`` tasks."""
    todo = list(range(n))
    ids: list[str] = []
    url = emu.media_url()

    async def worker() -> None:
        while todo:
            i = todo.pop()
            asset_id = await ark.create_asset(group_id=group_id, url=url, name=f"a{i:04d}")
            ids.append(asset_id)
            asset = await ark.wait_for_asset(asset_id, timeout=120)
            assert asset.status == "Active"

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return ids


def create_rate(emu: Emulator) -> float:
    times = [r.t for r in emu.audit().requests if r.action == "CreateAsset"]
    return (len(times) - 1) / (max(times) - min(times))


# P = 1.0 s exactly; and P = 1.2 ± 0.1 s, where 29.7 creates/s would keep ~36 Processing: the
# server's cap (30) refuses creates unless the client holds back (without slots: 429s)
@pytest.mark.parametrize(("delay", "jitter"), [(1.0, 0.0), (1.2, 0.1)])
@virtual
async def test_fan_out_of_900_creates_runs_at_the_cap_bound_without_a_429(
    delay: float, jitter: float
) -> None:
    async with running(processing_delay=delay, processing_jitter=jitter) as (emu, ark, group_id):
        url = emu.media_url()
        todo = list(range(900))
        ids: list[str] = []

        async def worker() -> None:
            while todo:
                i = todo.pop()
                ids.append(await ark.create_asset(group_id=group_id, url=url, name=f"a{i}"))

        await asyncio.gather(*(worker() for _ in range(100)))
        assets = await ark.wait_for_assets(ids, timeout=60)
        audit = emu.audit()
        # 0.95 of min(30/s, 30/P) with not a single 429
        assert create_rate(emu) >= 0.95 * min(30.0, MAX_PROCESSING / delay)
        assert audit.rejected_429 == {}
        assert ark.stats.rate_limited == 0
        assert audit.max_processing["demo"] == MAX_PROCESSING
        assert {a.status for a in assets} == {"Active"}
        assert {a.id for a in audit.assets if a.status == "Active"} == set(ids)
        assert ark.watcher.mode == "sorted"  # the emulator honours the sort
        assert ark.watcher.in_use() == 0
        assert not ark.watcher.watched()


@virtual
async def test_a_thousand_concurrent_waits_cost_at_most_two_status_calls_per_tick() -> None:
    async with running() as (emu, ark, group_id):
        ticks0, calls0 = ark.watcher.ticks, status_calls(emu)
        ids = await create_and_wait(ark, emu, group_id, 1000, tasks=1000)
        ticks, calls = ark.watcher.ticks - ticks0, status_calls(emu) - calls0
        assert len(set(ids)) == 1000
        assert ticks > 0
        assert calls <= 2 * ticks, (calls, ticks)
        assert calls / 1000 < 1.0  # per-asset GetAsset polling would cost >= 1 per asset
        assert emu.audit().rejected_429 == {}


@virtual
async def test_the_watcher_frees_a_slot_when_its_asset_leaves_processing() -> None:
    async with running(client={"processing_slots": 2}) as (emu, ark, group_id):
        url = emu.media_url()
        first = [await ark.create_asset(group_id=group_id, url=url) for _ in range(2)]
        assert ark.watcher.in_use() == 2
        assert set(first) <= ark.watcher.watched()
        third = asyncio.ensure_future(ark.create_asset(group_id=group_id, url=url))
        await asyncio.sleep(0.5)
        assert not third.done()
        assert ark.watcher.waiting == 1
        await third
        audit = emu.audit()
        finished = min(a.finished_t for a in audit.assets if a.id in first and a.finished_t)
        sent = max(r.t for r in audit.requests if r.action == "CreateAsset")
        # sent after the first asset became Active, within one tick of it
        assert finished <= sent <= finished + ark.watcher.interval + 0.01
        await ark.wait_for_assets([*first, third.result()], timeout=10)
        assert ark.watcher.in_use() == 0


@virtual
async def test_a_slot_comes_back_after_its_lease_when_the_asset_stays_processing() -> None:
    client = {"processing_slots": 1, "slot_lease": 5.0}
    async with running(client=client) as (emu, ark, group_id):
        events: list[str] = []
        ark.watcher.add_listener(lambda kind, fields: events.append(kind))
        emu.set_faults([FaultRule(action="CreateAsset", kind="stuck", max_count=1)])
        url = emu.media_url()
        stuck = await ark.create_asset(group_id=group_id, url=url)
        await ark.create_asset(group_id=group_id, url=url)  # waits for the lease
        times = [r.t for r in emu.audit().requests if r.action == "CreateAsset"]
        assert times[1] - times[0] == pytest.approx(5.0, abs=ark.watcher.interval + 0.01)
        assert "lease_expired" in events
        assert stuck not in ark.watcher.watched()  # nobody waits on it and its slot is gone


class GonePool(SlotPool):
    """Slots shared through a backend that has just died: giving one back fails."""

    async def release(self, holder: str) -> None:
        raise LimiterUnavailableError("shared limiter at redis://127.0.0.1:1/0 unavailable")


@virtual
async def test_a_refused_sweep_fails_every_wait_and_closing_does_not_raise() -> None:
    # the sweep is refused (403) while the slots' backend is gone: every wait fails with the
    # refusal (none hangs, none gets the release failure) and the client still closes cleanly
    async with running(client={"processing_slots": GonePool(5)}) as (emu, ark, group_id):
        url = emu.media_url()
        ids = [await ark.create_asset(group_id=group_id, url=url) for _ in range(3)]
        emu.set_faults(
            [FaultRule(action="ListAssets", status=403), FaultRule(action="GetAsset", status=403)]
        )
        waits = [asyncio.ensure_future(ark.wait_for_asset(i, timeout=60)) for i in ids]
        done, pending = await asyncio.wait(waits, timeout=10)
        assert not pending
        for w in done:
            assert isinstance(w.exception(), APIError)
            assert not isinstance(w.exception(), LimiterUnavailableError)
    # leaving ``running`` closed the client: it did not raise the release failure


@virtual
async def test_opting_out_keeps_no_slots_and_sends_no_sweep() -> None:
    async with running(max_processing=1000, processing_delay=30) as (emu, _, group_id):
        url = emu.media_url()
        acc = emu.account
        opts = {"base_url": emu.url, "access_key": acc.access_key, "secret_key": acc.secret_key}
        async with ArkClient(**opts, processing_slots=None) as ark:
            ids = await asyncio.gather(
                *(ark.create_asset(group_id=group_id, url=url) for _ in range(40))
            )
            await asyncio.sleep(5)
            assert len(set(ids)) == 40  # 40 Processing at once: no cap of ours
            assert ark.watcher.in_use() == 0
            assert not ark.watcher.watched()
            assert status_calls(emu) == 0
        async with ArkClient(**opts, watch=False) as ark:
            asset_id = await ark.create_asset(group_id=group_id, url=url)
            assert ark.watcher.slots is None
            assert not ark.watcher.watched()
            asset = await ark.wait_for_asset(asset_id, timeout=60, interval=5, max_interval=5)
            assert asset.status == "Active"
            audit = emu.audit()
            assert audit.count("ListAssets") == 0
            assert audit.count("GetAsset") >= 2


@virtual
async def test_a_cap_429_does_not_pause_the_limiter_but_a_rate_429_does() -> None:
    # another client of the account fills the server's cap (2) for 30 s
    async with running(max_processing=2, processing_delay=30) as (emu, other, group_id):
        url = emu.media_url()
        for _ in range(2):
            await other.create_asset(group_id=group_id, url=url)
        acc = emu.account
        opts = {"base_url": emu.url, "access_key": acc.access_key, "secret_key": acc.secret_key}
        async with ArkClient(**opts, retry=NO_RETRY) as ark:
            loop = asyncio.get_running_loop()
            limiter = ark.limiters.get("CreateAsset")
            await asyncio.sleep(1.0)
            with pytest.raises(RateLimitError, match="Processing"):
                await ark.create_asset(group_id=group_id, url=url)
            t0 = loop.time()
            grant = await limiter.acquire()  # not paused: sent at once
            await grant.send()
            grant.answered()
            assert loop.time() - t0 < 0.1
            emu.set_faults(
                [FaultRule(action="CreateAsset", kind="http_error", status=429, max_count=1)]
            )
            await asyncio.sleep(1.0)
            with pytest.raises(RateLimitError):
                await ark.create_asset(group_id=group_id, url=url)
            t0 = loop.time()
            grant = await limiter.acquire()  # a rate 429 pauses CreateAsset for every task
            await grant.send()  # (a grant may come `lead` early; its send waits the pause out)
            grant.answered()
            assert loop.time() - t0 >= 0.99


@virtual
async def test_the_sweep_switches_when_the_server_ignores_the_sort() -> None:
    async with running(ignore_sort=True, processing_jitter=0.5) as (emu, ark, group_id):
        events: list[str] = []
        ark.watcher.add_listener(lambda kind, fields: events.append(kind))
        ids = await create_and_wait(ark, emu, group_id, 120, tasks=40)
        audit = emu.audit()
        assert {a.id for a in audit.assets if a.status == "Active"} == set(ids)
        assert ark.watcher.mode == "robust"
        assert events.count("switched") == 1
        # one Processing listing per tick plus about one GetAsset per asset
        assert status_calls(emu) <= ark.watcher.ticks + 1.2 * len(ids)
        assert audit.rejected_429 == {}


@virtual
async def test_the_sweep_switches_when_update_time_never_moves() -> None:
    # P = 5 ± 2 s: finished assets spread wider than the sorted path's lookback
    config = {"freeze_update_time": True, "processing_delay": 5.0, "processing_jitter": 2.0}
    async with running(**config) as (emu, ark, group_id):
        ids = await create_and_wait(ark, emu, group_id, 120, tasks=40)
        audit = emu.audit()
        assert {a.id for a in audit.assets if a.status == "Active"} == set(ids)
        assert ark.watcher.mode == "robust"
        assert status_calls(emu) <= ark.watcher.ticks + 1.2 * len(ids)
        # and it detects each asset within a few ticks, not at the 15 s stale check
        assert create_rate(emu) >= 0.9 * MAX_PROCESSING / 5.0


@virtual
async def test_waits_share_one_sweep_and_a_late_wait_resolves_at_once() -> None:
    async with running(client={"processing_slots": 100}, max_processing=100) as (
        emu,
        ark,
        group_id,
    ):
        url = emu.media_url()
        ids = [await ark.create_asset(group_id=group_id, url=url) for _ in range(20)]
        first, *_ = await asyncio.gather(
            *(ark.wait_for_asset(ids[0], timeout=10) for _ in range(50))
        )
        assert first.status == "Active"
        await ark.wait_for_assets(ids, timeout=10)
        calls = status_calls(emu)
        again = await ark.wait_for_assets(ids, timeout=10)  # finished: from memory
        assert [a.id for a in again] == ids
        assert status_calls(emu) == calls


def test_cap_429_is_told_apart_by_message_or_by_the_slot_count() -> None:
    ark = ArkClient(access_key="AK", secret_key="SK", base_url="http://127.0.0.1:9")
    pool = SlotPool(1)
    ark.watcher.slots = pool
    rate = RateLimitError("over the account's rate limit", status=429, code="FlowLimitExceeded")
    cap = RateLimitError("at most 30 assets may be Processing", status=429)
    assert ark.watcher.is_cap_429("CreateAsset", cap)
    assert not ark.watcher.is_cap_429("CreateAsset", rate)
    assert not ark.watcher.is_cap_429("ListAssets", cap)
    asyncio.run(pool.acquire("x"))  # every slot held: a 429 on CreateAsset is the cap
    assert ark.watcher.is_cap_429("CreateAsset", rate)
