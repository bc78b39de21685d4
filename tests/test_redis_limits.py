"""The Redis backend of the limiter protocols, against a real redis-server per test.

Two :class:`RedisLimits` objects (two connection pools, two owners) stand for two processes;
real subprocesses are in test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import sys
import time
from collections.abc import AsyncIterator

import pytest

from chenyu_assets._core.ratelimit import DEFAULT_MARGIN, Limiter, Rate, Slots
from chenyu_assets._core.redis_limits import RedisLimits, account_fingerprint, open_limits
from chenyu_assets.ark import ArkClient
from chenyu_assets.emulator import Emulator, EmulatorConfig
from chenyu_assets.errors import ConfigurationError, LimiterUnavailableError
from tests.redis_kit import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

ACCOUNT = "AKLT-test-account-key"


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[RedisLimits, RedisLimits]]:
    a = RedisLimits(redis_server.url, account=ACCOUNT, timeout=0.5)
    b = RedisLimits(redis_server.url, account=ACCOUNT, timeout=0.5)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, t + window, lo=i) - i for i, t in enumerate(times)), default=0
    )


async def sends(limiter: Limiter, n: int, out: list[float], delay: float = 0.0) -> None:
    """``n`` grants, each stamped after up to ``delay`` s (the engine's prepare step)."""
    rng = random.Random(len(out))
    for _ in range(n):
        grant = await limiter.acquire()
        if delay:
            await asyncio.sleep(rng.uniform(0, delay))
        await grant.send()
        out.append(time.monotonic())
        grant.answered()


async def window_members(url: str, key: str) -> list[tuple[bytes, float]]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        now_s, now_us = await r.time()
        scores = await r.zrange(key, 0, -1, withscores=True)
    finally:
        await r.aclose()
    return [(m, (score - (now_s * 1e6 + now_us)) / 1e6) for m, score in scores]


# -- the shared window --------------------------------------------------------------------


@pytest.mark.anyio
async def test_protocols_and_keys(two: tuple[RedisLimits, RedisLimits]) -> None:
    a, _ = two
    window = a.limiter("CreateAsset", 30.0)
    slots = a.slots(3)
    assert isinstance(window, Limiter)
    assert isinstance(slots, Slots)
    assert window.rate == Rate(30)
    fp = account_fingerprint(ACCOUNT)
    assert window.key == f"chenyu-assets:{fp}:rate:CreateAsset"
    assert slots.key == f"chenyu-assets:{fp}:slots:processing"
    assert ACCOUNT not in window.key + slots.key + a.namespace


@pytest.mark.anyio
async def test_window_bound_and_no_duplicates_across_two_clients(
    two: tuple[RedisLimits, RedisLimits], redis_server: RedisServer
) -> None:
    a, b = two
    la, lb = a.limiter("CreateAsset", Rate(20)), b.limiter("CreateAsset", Rate(20))
    await a.ping()
    times: list[float] = []
    async with asyncio.timeout(30):
        await asyncio.gather(
            *(sends(la, 15, times, delay=0.01) for _ in range(3)),
            *(sends(lb, 15, times, delay=0.01) for _ in range(3)),
        )
        await la.aclose()
        await lb.aclose()
    assert len(times) == 90
    # counted from the stamp's arrival after each response: every send a window after
    # the one `limit` sends back, whatever the jitter
    assert max_in_window(times, 1.0) <= 20
    members = await window_members(redis_server.url, la.key)
    assert len({m for m, _ in members}) == len(members)  # one member per grant
    assert sum(1 for _, left in members if left > 0) <= 20  # the places still counting
    assert all(left <= 1.0 + DEFAULT_MARGIN for _, left in members)  # every one stamped


@pytest.mark.anyio
async def test_cancelled_grant_gives_its_place_back_to_another_client(
    two: tuple[RedisLimits, RedisLimits],
) -> None:
    a, b = two
    la, lb = a.limiter("ListAssets", "2/min"), b.limiter("ListAssets", "2/min")
    await _sent(la)
    grant = await la.acquire()
    grant.cancel()
    await la.aclose()  # the cancel has reached Redis
    await asyncio.wait_for(lb.acquire(), 1)  # the freed place, at once
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(lb.acquire(), 0.05)  # the minute window is full


@pytest.mark.anyio
async def test_pause_is_shared_then_sends_are_spaced(
    two: tuple[RedisLimits, RedisLimits], redis_server: RedisServer
) -> None:
    import redis.asyncio as aioredis

    a, b = two
    la, lb = a.limiter("CreateAsset", 100.0), b.limiter("CreateAsset", 100.0)
    await _sent(lb)
    t0 = time.monotonic()  # before the pause: its 80 ms run on Redis's clock from then on
    await la.pause(0.08)  # a 429 seen by client A ...
    r = aioredis.Redis.from_url(redis_server.url)
    times: list[float] = []
    instants: list[int] = []  # each grant's instant on Redis's clock (µs), as recorded there
    try:
        for i in range(4):  # ... holds client B too, then spaces its grants (both clients')
            await sends(lb if i % 2 else la, 1, times)
            instants.append(int(await r.hget(f"{lb.key}:state", "last")))
    finally:
        await r.aclose()
    assert times[0] - t0 >= 0.08
    # at least (window + margin) / limit apart on the shared clock, whatever the load here
    spacing = math.ceil((1.0 + DEFAULT_MARGIN) * 1e6 / 100)
    assert min(y - x for x, y in itertools.pairwise(instants)) >= spacing


# -- the slots ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_slots_cap_is_shared_and_release_wakes(
    two: tuple[RedisLimits, RedisLimits],
) -> None:
    a, b = two
    sa, sb = a.slots(3, lease=5), b.slots(3, lease=5)
    await sa.acquire("x1")
    await sa.acquire("x2")
    await sb.acquire("y1")
    await sa.acquire("x1")  # re-acquiring a held slot is a no-op
    assert sb.in_use() == 3
    waiter = asyncio.ensure_future(sb.acquire("y2"))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # the cap holds across "processes"
    t0 = time.monotonic()
    await sa.release("x1")
    await asyncio.wait_for(waiter, 2)
    # woken by a poll, not by the 5 s lease running out (a margin a loaded machine keeps)
    assert time.monotonic() - t0 < 3.0
    assert sb.in_use() == 3
    assert sb.holders() == {"y1", "y2"}


@pytest.mark.anyio
async def test_release_is_idempotent(two: tuple[RedisLimits, RedisLimits]) -> None:
    a, b = two
    sa, sb = a.slots(2, lease=5), b.slots(2, lease=5)
    await sa.acquire("x")
    await sa.release("x")
    await sa.release("x")
    await sa.release("never-held")
    await sb.release("x")  # another process cannot free our slot by name
    await sa.acquire("x")
    await sb.acquire("y")
    await sb.release("x")
    assert sb.in_use() == 2


@pytest.mark.anyio
async def test_a_dead_holders_slots_come_back_after_the_lease(
    two: tuple[RedisLimits, RedisLimits],
) -> None:
    a, b = two
    lease = 0.6
    dead, alive = a.slots(2, lease=lease), b.slots(2, lease=lease)
    await dead.acquire("x1")
    await dead.acquire("x2")
    await dead.aclose()  # stops renewing, as a SIGKILLed process would
    t0 = time.monotonic()
    await asyncio.wait_for(alive.acquire("y1"), 3)
    await asyncio.wait_for(alive.acquire("y2"), 3)
    took = time.monotonic() - t0
    assert 0.3 < took < lease + 0.4, took


@pytest.mark.anyio
async def test_renewal_keeps_a_live_holders_slots(
    two: tuple[RedisLimits, RedisLimits],
) -> None:
    a, b = two
    lease = 0.45
    live, other = a.slots(1, lease=lease), b.slots(1, lease=lease)
    await live.acquire("x")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other.acquire("y"), 4 * lease)  # renewed every lease / 3
    assert live.holders() == {"x"}
    await live.release("x")
    await asyncio.wait_for(other.acquire("y"), 1)


# -- fail safe ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_redis_dies_mid_run_fails_fast_without_fallback(
    redis_server: RedisServer,
) -> None:
    limits = RedisLimits(redis_server.url, account=ACCOUNT, timeout=0.5)
    bucket = limits.limiter("CreateAsset", 200.0)
    await limits.ping()
    slots = limits.slots(5, lease=3)
    try:
        for _ in range(5):
            await _sent(bucket)
        await slots.acquire("x")
        redis_server.kill()
        for attempt in range(3):  # keeps refusing: no silent local fallback
            t0 = time.monotonic()
            with pytest.raises(LimiterUnavailableError) as err:
                await bucket.acquire()
            # refused fast (timeout=0.5), never a wait or a retry loop: 10x margin for load
            assert time.monotonic() - t0 < 5.0, attempt
        assert redis_server.url.removesuffix("/0") in str(err.value)
        assert "stopped sending" in str(err.value)
        with pytest.raises(LimiterUnavailableError):
            await slots.acquire("y")
        with pytest.raises(LimiterUnavailableError):
            await slots.release("x")
        await slots.release("x")  # already given up locally: a no-op
    finally:
        await limits.aclose()


@pytest.mark.anyio
async def test_unreachable_redis_and_bad_settings() -> None:
    from tests.redis_kit import _free_port

    limits = RedisLimits(f"redis://:pw-secret@127.0.0.1:{_free_port()}/0", account=ACCOUNT)
    try:
        t0 = time.monotonic()
        with pytest.raises(LimiterUnavailableError) as err:
            await limits.limiter("GetAsset", 100.0).acquire()
        assert time.monotonic() - t0 < 5.0  # a refused connection: fast, even under load
        assert "pw-secret" not in str(err.value)
        assert "***" in str(err.value)
    finally:
        await limits.aclose()
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisLimits("http://127.0.0.1:6379", account=ACCOUNT)
    with pytest.raises(ConfigurationError, match="not both"):
        open_limits("redis://127.0.0.1", account=ACCOUNT, limiter_factory=limits.limiter)


def test_missing_redis_package_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"chenyu-assets\[redis\]"):
        ArkClient(access_key="AK", secret_key="SK", limits="redis://127.0.0.1:6379/0")


@pytest.mark.anyio
async def test_ark_client_paces_through_redis(redis_server: RedisServer) -> None:
    async with Emulator(EmulatorConfig(time_scale=10)) as emu:
        acct = emu.account
        async with ArkClient(
            access_key=acct.access_key,
            secret_key=acct.secret_key,
            base_url=emu.url,
            limits=redis_server.url,
        ) as ark:
            assert ark.shared_limits is not None
            await ark.create_asset_group(name="shared")
            async for _ in ark.list_asset_groups(name="shared"):
                pass
            import redis.asyncio as aioredis

            r = aioredis.Redis.from_url(redis_server.url)
            try:
                keys = sorted(k.decode() for k in await r.keys("*"))
            finally:
                await r.aclose()
    fp = account_fingerprint(acct.access_key)
    assert keys == [
        f"chenyu-assets:{fp}:rate:CreateAssetGroup",
        f"chenyu-assets:{fp}:rate:ListAssetGroups",
    ]
    assert not any(acct.access_key in k for k in keys)


async def _sent(limiter: Limiter) -> None:
    grant = await limiter.acquire()
    await grant.send()
    grant.answered()
