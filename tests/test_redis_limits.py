"""The Redis backend of the limiter protocols, against a real redis-server per test.

Two :class:`RedisLimits` objects (two connection pools, two owners) stand for two processes;
real subprocesses are in test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time
from collections.abc import AsyncIterator

import pytest

from chenyu_assets._core.ratelimit import Limiter, Slots
from chenyu_assets._core.redis_bucket import ServerClock
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


async def grants(limiter: Limiter, n: int, t0: float, out: list[float]) -> None:
    for _ in range(n):
        await limiter.acquire()
        out.append(time.monotonic() - t0)


# -- the bucket ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_protocols_and_keys(two: tuple[RedisLimits, RedisLimits]) -> None:
    a, _ = two
    bucket = a.limiter("CreateAsset", 30.0)
    slots = a.slots(3)
    assert isinstance(bucket, Limiter)
    assert isinstance(slots, Slots)
    fp = account_fingerprint(ACCOUNT)
    assert bucket.key == f"chenyu-assets:{fp}:rate:CreateAsset"
    assert slots.key == f"chenyu-assets:{fp}:slots:processing"
    assert ACCOUNT not in bucket.key + slots.key + a.namespace


@pytest.mark.anyio
async def test_rate_and_start_empty_across_two_clients(
    two: tuple[RedisLimits, RedisLimits],
) -> None:
    a, b = two
    rate = 50.0  # the limit; the pacing rate is 99 % of it, as LimiterRegistry's headroom
    la, lb = a.limiter("CreateAsset", rate * 0.99), b.limiter("CreateAsset", rate * 0.99)
    await a.ping()
    await b.ping()
    t0 = time.monotonic()
    times_a: list[float] = []
    times_b: list[float] = []
    async with asyncio.timeout(10):
        await asyncio.gather(
            *(grants(la, 20, t0, times_a) for _ in range(3)),
            *(grants(lb, 20, t0, times_b) for _ in range(3)),
        )
    times = sorted(times_a + times_b)
    assert len(times) == 120
    assert times[0] >= 0.8 / rate  # starts empty: the first grant waits one interval
    assert max_in_window(times) <= rate
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert 0.95 * rate <= achieved <= rate, achieved
    assert len(times_a) == len(times_b) == 60  # both clients were served throughout
    assert times_a[-1] > 0.8 * times[-1]
    assert times_b[-1] > 0.8 * times[-1]


@pytest.mark.anyio
async def test_burst_after_idle_then_rate(two: tuple[RedisLimits, RedisLimits]) -> None:
    a, b = two
    rate, burst = 20.0, 5
    la, lb = a.limiter("ListAssets", rate, burst), b.limiter("ListAssets", rate, burst)
    t0 = time.monotonic()
    await la.acquire()  # a new bucket is empty: the first token takes one interval
    first = time.monotonic() - t0
    assert first >= 0.8 / rate
    await asyncio.sleep(burst / rate + 0.1)  # refills to `burst`, never more
    t1 = time.monotonic()
    times: list[float] = []
    await asyncio.gather(grants(la, 4, t1, times), grants(lb, 4, t1, times))
    times.sort()
    assert times[burst - 1] < 0.6 / rate  # `burst` at once (shared by both clients) ...
    assert times[burst] >= 0.8 / rate  # ... then one per interval
    assert times[-1] >= (8 - burst) * 0.9 / rate


@pytest.mark.anyio
async def test_pause_is_shared_across_clients(two: tuple[RedisLimits, RedisLimits]) -> None:
    a, b = two
    la, lb = a.limiter("CreateAsset", 100.0), b.limiter("CreateAsset", 100.0)
    await lb.acquire()
    await la.pause(0.5)  # a 429 seen by client A ...
    t0 = time.monotonic()
    await lb.acquire()  # ... holds client B too
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 1.0, waited


@pytest.mark.anyio
async def test_a_grant_woken_too_late_is_given_up(two: tuple[RedisLimits, RedisLimits]) -> None:
    a, _ = two
    bucket = a.limiter("CreateAsset", 10.0)  # first grant 100 ms after the first acquire
    task = asyncio.ensure_future(bucket.acquire())
    await asyncio.sleep(0.03)  # the reservation is back; its timer is set
    time.sleep(0.2)  # a stalled event loop: the timer fires ~100 ms late
    await asyncio.wait_for(task, 1)
    assert bucket.late == 1  # that turn was given up and a fresh one taken


def test_server_clock_errs_late_never_early() -> None:
    clock = ServerClock()
    clock.sample(1000.0, sent=10.0, received=10.010)  # 10 ms round trip
    clock.sample(1001.0, sent=11.0, received=11.002)  # a faster one replaces it
    clock.sample(1002.0, sent=12.0, received=12.050)  # a slower one does not
    # the server read 1001.0 between 11.000 and 11.002: its 1001.5 is at most 11.502 here
    assert clock.local(1001.5, 11.5) == pytest.approx(11.502, abs=1e-4)
    assert clock.local(1001.5, 11.5) >= 11.502 - 1e-9


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
    assert time.monotonic() - t0 < 0.5  # the next poll sees it
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
    slots = limits.slots(5, lease=3)
    try:
        for _ in range(5):
            await bucket.acquire()
        await slots.acquire("x")
        redis_server.kill()
        for attempt in range(3):  # keeps refusing: no silent local fallback
            t0 = time.monotonic()
            with pytest.raises(LimiterUnavailableError) as err:
                await bucket.acquire()
            assert time.monotonic() - t0 < 1.0, attempt
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
        assert time.monotonic() - t0 < 1.0
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
