from __future__ import annotations

import asyncio
import bisect
import itertools

import pytest

from chenyu_assets._core.ratelimit import Limiter, LimiterRegistry, SlotPool, Slots, TokenBucket
from chenyu_assets.limits import ACTION_RATES
from tests.vclock import run_virtual


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most grants in any half-open window (t - window, t]."""
    best = 0
    for i, t in enumerate(times):
        j = bisect.bisect_right(times, t - window)
        best = max(best, i - j + 1)
    return best


def test_10000_acquisitions_at_30_per_second_respect_every_window() -> None:
    async def main() -> list[float]:
        bucket = TokenBucket(30)
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                await bucket.acquire()
                times.append(loop.time())

        async with asyncio.TaskGroup() as tg:
            for _ in range(50):
                tg.create_task(worker(200))
        return times

    times, _clock = run_virtual(main)
    times.sort()
    assert len(times) == 10_000
    assert max_in_window(times) <= 30
    elapsed = times[-1] - 1000.0
    assert 10_000 / elapsed >= 29.7
    # gaps never shrink below 1/rate with burst 1
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 1 / 30


def test_starts_empty_and_burst_is_explicit() -> None:
    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        bucket = TokenBucket(10, burst=5)
        await bucket.acquire()  # the bucket starts empty at first use: this waits 1/rate
        start = loop.time()
        await asyncio.sleep(10)  # idle: accrues at most `burst`
        times = []
        for _ in range(8):
            await bucket.acquire()
            times.append(loop.time() - start)
        first = TokenBucket(10)
        t0 = loop.time()
        await first.acquire()
        return loop.time() - t0, times

    (first_wait, times), _ = run_virtual(main)
    assert first_wait == pytest.approx(
        0.1, rel=1e-3
    )  # empty at start: the first token takes 1/rate
    assert times[:5] == [pytest.approx(10.0, rel=1e-3)] * 5  # the burst, back to back
    assert times[5:] == [
        pytest.approx(10.1, rel=1e-3),
        pytest.approx(10.2, rel=1e-3),
        pytest.approx(10.3, rel=1e-3),
    ]


def test_waiters_are_woken_at_the_exact_instant_in_fifo_order() -> None:
    async def main() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(4)
        order: list[tuple[int, float]] = []

        async def one(i: int) -> None:
            await bucket.acquire()
            order.append((i, loop.time() - 1000.0))

        async with asyncio.TaskGroup() as tg:
            for i in range(6):
                tg.create_task(one(i))
                await asyncio.sleep(0)
        return order

    order, _ = run_virtual(main)
    assert [i for i, _ in order] == list(range(6))
    assert [t for _, t in order] == [pytest.approx(0.25 * (k + 1), rel=1e-3) for k in range(6)]


def test_cancelled_waiter_takes_nothing() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(10)
        times: list[float] = []

        async def one() -> None:
            await bucket.acquire()
            times.append(loop.time() - 1000.0)

        victim = asyncio.create_task(one())
        await asyncio.sleep(0)
        others = [asyncio.create_task(one()) for _ in range(3)]
        await asyncio.sleep(0.05)
        victim.cancel()
        await asyncio.gather(*others)
        assert victim.cancelled()
        return times

    times, _ = run_virtual(main)
    # the victim's place is not wasted and nobody got a token it did not pay for
    assert times == [
        pytest.approx(0.1, rel=1e-3),
        pytest.approx(0.2, rel=1e-3),
        pytest.approx(0.3, rel=1e-3),
    ]


def test_grant_then_cancel_gives_the_token_back() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(10)
        victim = asyncio.create_task(bucket.acquire())
        await asyncio.sleep(0)
        # advance to the grant, then cancel before the victim runs
        await asyncio.sleep(0.1)
        victim.cancel()
        await asyncio.gather(victim, return_exceptions=True)
        t0 = loop.time()
        await bucket.acquire()
        return loop.time() - t0

    waited, _ = run_virtual(main)
    assert waited <= 0.1 + 1e-9


def test_pause_until_delays_everyone() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(10)
        times: list[float] = []

        async def one() -> None:
            await bucket.acquire()
            times.append(loop.time() - 1000.0)

        tasks = [asyncio.create_task(one()) for _ in range(3)]
        await asyncio.sleep(0)
        bucket.pause_until(loop.time() + 5)
        await asyncio.gather(*tasks)
        return times

    times, _ = run_virtual(main)
    assert times == [
        pytest.approx(5.1, rel=1e-3),
        pytest.approx(5.2, rel=1e-3),
        pytest.approx(5.3, rel=1e-3),
    ]


def test_registry_defaults_overrides_and_shared_pause() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        reg = LimiterRegistry(ACTION_RATES, overrides={"GetAsset": 50}, headroom=1.0)
        assert reg.rate_for("CreateAsset") == 30
        assert reg.rate_for("GetAsset") == 50
        assert reg.get("CreateAsset") is reg.get("CreateAsset")
        assert isinstance(reg.get("CreateAsset"), Limiter)
        await reg.pause("CreateAsset", 3)
        t0 = loop.time()
        await asyncio.gather(reg.acquire("CreateAsset"), reg.acquire("CreateAsset"))
        create = loop.time() - t0
        t0 = loop.time()
        await reg.acquire("GetAsset")  # other endpoints are not paused
        return create, loop.time() - t0

    (create, get), _ = run_virtual(main)
    assert create == pytest.approx(3 + 2 / 30, rel=1e-3)
    assert get == pytest.approx(1 / 50, rel=1e-3)


def test_headroom_is_applied_and_validated() -> None:
    reg = LimiterRegistry(ACTION_RATES)
    assert reg.rate_for("CreateAsset") == pytest.approx(29.7, rel=1e-3)
    with pytest.raises(ValueError, match="headroom"):
        LimiterRegistry(ACTION_RATES, headroom=0)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, burst=0)


def test_repr_is_useful() -> None:
    assert repr(TokenBucket(30, burst=2)).startswith("<TokenBucket rate=30/s burst=2")
    assert "0/3" in repr(SlotPool(3))


def test_slot_pool_caps_holders_and_hands_over_fifo() -> None:
    async def main() -> list[str]:
        pool = SlotPool(2)
        assert isinstance(pool, Slots)
        got: list[str] = []

        async def take(name: str) -> None:
            await pool.acquire(name)
            got.append(name)

        await take("a")
        await take("b")
        waiting = [asyncio.create_task(take(n)) for n in ("c", "d")]
        await asyncio.sleep(0)
        assert pool.in_use() == 2
        assert got == ["a", "b"]
        await pool.release("a")
        await pool.release("a")  # double release is harmless
        await asyncio.sleep(0)
        assert got == ["a", "b", "c"]
        waiting[1].cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await pool.release("b")
        assert pool.holders() == {"c"}
        return got

    got, _ = run_virtual(main)
    assert got == ["a", "b", "c"]


def _run_with_busy_loop(bucket: TokenBucket, n: int) -> list[float]:
    """Acquire ``n`` times while a 'busy' task keeps stalling the loop for 2 ms in every
    5 ms (the virtual clock jumps while no timer can fire), so timers fire late."""

    async def main() -> list[float]:
        from tests.vclock import VirtualClock  # noqa: F401 - documents the clock in use

        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def busy() -> None:
            while True:
                await asyncio.sleep(0.005)
                loop.time.__self__.now += 0.002  # type: ignore[attr-defined]

        stall = asyncio.create_task(busy())
        for _ in range(n):
            await bucket.acquire()
            times.append(loop.time())
        stall.cancel()
        return times

    times, _ = run_virtual(main)
    return times


def test_lateness_credit_recovers_throughput_and_keeps_the_window() -> None:
    reg = LimiterRegistry(ACTION_RATES)  # published 30/s, paced at 29.7/s with credit
    limiter = reg.get("CreateAsset")
    assert isinstance(limiter, TokenBucket)
    assert reg.slack_for("CreateAsset") == pytest.approx(0.075)
    with_credit = _run_with_busy_loop(limiter, 1500)
    without = _run_with_busy_loop(TokenBucket(29.7), 1500)

    def rate(times: list[float]) -> float:
        return (len(times) - 1) / (times[-1] - times[0])

    assert rate(with_credit) >= 29.7 * 0.995
    assert rate(without) < rate(with_credit)
    assert max_in_window(with_credit) <= 30  # the published limit holds in every window
    with pytest.raises(ValueError, match="slack"):
        TokenBucket(30, slack=1.0)


def test_a_429_slows_the_bucket_down_until_it_recovers() -> None:
    async def main() -> tuple[float, float, float, float]:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(30)
        await bucket.acquire()
        await bucket.pause(1.0)
        after_one = bucket.pace
        for _ in range(10):
            await bucket.pause(0.0)
        floored = bucket.pace
        # paced slower: once the pause is over, 60 grants take longer than at the full rate
        await asyncio.sleep(1.1)
        await bucket.acquire()
        t0 = loop.time()
        for _ in range(60):
            await bucket.acquire()
        slow_span = loop.time() - t0
        await asyncio.sleep(31)  # no 429 for longer than the recovery time
        await bucket.acquire()
        return after_one, floored, slow_span, bucket.pace

    (after_one, floored, slow_span, recovered), _ = run_virtual(main)
    assert after_one == pytest.approx(30 * 0.98, rel=1e-3)
    assert floored == pytest.approx(30 * 0.90, rel=1e-3)
    assert slow_span == pytest.approx(60 / 27, rel=0.02)
    assert recovered == pytest.approx(30, rel=1e-3)
