"""The send-time window limiter on the virtual clock: every assertion is on the *stamped*
send times (what the server counts, give or take the arrival jitter the margin covers)."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random

import pytest

from chenyu_assets._core.ratelimit import (
    DEFAULT_MARGIN,
    Grant,
    Limiter,
    LimiterRegistry,
    Rate,
    SlotPool,
    Slots,
    WindowLimiter,
)
from chenyu_assets.limits import ACTION_RATES
from tests.vclock import run_virtual


def max_in_window(times: list[float], window: float) -> int:
    """Most sends in any half-open window (t - window, t]."""
    best = 0
    for i, t in enumerate(times):
        j = bisect.bisect_right(times, t - window)
        best = max(best, i - j + 1)
    return best


async def send_through(
    limiter: Limiter, n: int, tasks: int, *, delay: float = 0.0, seed: int = 1
) -> list[float]:
    """``tasks`` workers send ``n`` requests; each waits uniform(0, delay) between its grant
    and its send (the engine's prepare step), then stamps. Returns the stamped send times."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    sends: list[float] = []
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            grant = await limiter.acquire()
            if delay:
                await asyncio.sleep(rng.uniform(0, delay))
            await grant.send()
            sends.append(loop.time())
            grant.answered()

    async with asyncio.TaskGroup() as tg:
        for _ in range(tasks):
            tg.create_task(worker())
    return sorted(sends)


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.020])
def test_10000_sends_from_200_tasks_keep_every_window_and_the_rate(delay: float) -> None:
    async def main() -> list[float]:
        return await send_through(WindowLimiter(Rate(30)), 10_000, 200, delay=delay)

    sends, _ = run_virtual(main)
    assert len(sends) == 10_000
    # the bound holds on send times, with the margin to spare for arrival jitter
    assert max_in_window(sends, 1.0 + DEFAULT_MARGIN) <= 30
    span = sends[-1] - sends[0]
    assert 10_000 / span >= 0.98 * 30


def test_lateness_between_grant_and_send_never_pushes_a_window_over() -> None:
    """Delays far beyond the margin (up to 0.5 s) cost throughput, never the bound."""

    async def main() -> list[float]:
        return await send_through(WindowLimiter(Rate(30), margin=0.0), 3000, 100, delay=0.5)

    sends, _ = run_virtual(main)
    assert max_in_window(sends, 1.0) <= 30


def test_unused_capacity_is_usable_at_once() -> None:
    async def main() -> tuple[list[float], list[float]]:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(10), margin=0.0)
        t0 = loop.time()
        first = [loop.time() - t0 for _ in await _burst(limiter, 4)]
        await asyncio.sleep(5)  # idle
        t1 = loop.time()
        second = [t - t1 for t in await _burst(limiter, 12)]
        return first, second

    first, second = run_virtual(main)[0]
    assert first == [0.0] * 4  # nothing to refill: the first window is free
    assert second[:10] == [0.0] * 10
    assert second[10:] == [pytest.approx(1.0)] * 2  # when the first of those leave


async def _burst(limiter: Limiter, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        await _sent(limiter)
        out.append(loop.time())
    return out


def test_minute_windows() -> None:
    async def main() -> list[float]:
        return await send_through(WindowLimiter(Rate(120, 60.0)), 600, 50, delay=0.02)

    sends, _ = run_virtual(main)
    assert max_in_window(sends, 60.0 + DEFAULT_MARGIN) <= 120
    assert sends[-1] - sends[0] == pytest.approx(4 * (60 + DEFAULT_MARGIN), abs=0.05)


def test_fifo_and_cancellation_take_nothing() -> None:
    async def main() -> tuple[list[int], float]:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(2), margin=0.0, lead=0.0)
        order: list[int] = []
        await _sent(limiter)
        await _sent(limiter)

        async def one(i: int) -> None:
            await _sent(limiter)
            order.append(i)

        tasks = [asyncio.create_task(one(i)) for i in range(5)]
        await asyncio.sleep(0)
        tasks[0].cancel()  # cancelled while waiting: takes nothing
        await asyncio.gather(*tasks, return_exceptions=True)
        # a grant cancelled before it is stamped gives its place back at once
        await asyncio.sleep(10)
        t0 = loop.time()
        grant = await limiter.acquire()
        grant.cancel()
        grant.cancel()  # harmless
        await grant.send()  # after cancel: no effect
        grant.answered()
        await _sent(limiter)
        await _sent(limiter)
        return order, loop.time() - t0

    (order, waited), _ = run_virtual(main)
    assert order == [1, 2, 3, 4]
    assert waited == 0.0


def test_an_early_grant_waits_for_its_instant_and_cancel_gives_it_back() -> None:
    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(1), margin=0.0, lead=0.25)
        await _sent(limiter)
        t0 = loop.time()
        grant = await limiter.acquire()
        early = loop.time() - t0  # handed out `lead` before its place frees ...
        await grant.send()
        grant.answered()
        stamped = loop.time() - t0  # ... but stamped only when it does
        late = await limiter.acquire()
        task = asyncio.create_task(late.send())
        await asyncio.sleep(0.1)
        task.cancel()  # cancelled while waiting for its instant: the place goes back
        await asyncio.gather(task, return_exceptions=True)
        return early, stamped, limiter._moving

    (early, stamped, moving), _ = run_virtual(main)
    assert early == pytest.approx(0.75)
    assert stamped == pytest.approx(1.0)
    assert moving == 0


def test_a_grant_made_before_a_pause_is_not_sent_during_it() -> None:
    """A grant handed out early (``lead``) and a 429 that arrives before its instant: the
    grant keeps its place but is sent only after the pause, like every other request."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(1), margin=0.0, lead=0.25)
        await _sent(limiter)
        t0 = loop.time()
        grant = await limiter.acquire()  # at 0.75, for the instant 1.0
        await limiter.pause(2.0)  # a 429 now: nothing goes out before 2.75
        await grant.send()
        grant.answered()
        return loop.time() - t0

    stamped, _ = run_virtual(main)
    assert stamped == pytest.approx(0.75 + 2.0)


def test_a_grant_cancelled_by_the_waiters_cancellation_gives_its_place_back() -> None:
    async def main() -> int:
        limiter = WindowLimiter(Rate(1), margin=0.0, lead=0.0)
        first = await limiter.acquire()
        task = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        first.cancel()  # hands its place to the waiter at once ...
        task.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await task
        return limiter._moving

    moving, _ = run_virtual(main)
    assert moving == 0


def test_moving_grants_hold_their_place_until_stamped() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(2), margin=0.0)
        a = await limiter.acquire()
        b = await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(3)  # unstamped grants count as "now" for as long as they wait
        assert not waiter.done()
        t0 = loop.time()
        for g in (a, b):
            await g.send()
            g.answered()
        w = await waiter
        await w.send()
        w.answered()
        return loop.time() - t0

    waited, _ = run_virtual(main)
    assert waited == pytest.approx(1.0)


def test_pause_stops_every_task_then_spaces_sends() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(10), margin=0.0)
        assert not limiter.spaced
        await limiter.pause(2.0)
        assert limiter.spaced
        t0 = loop.time()
        return [t - t0 for t in await send_through(limiter, 20, 5)]

    sends, _ = run_virtual(main)
    assert sends[0] == pytest.approx(2.0)
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) == pytest.approx(0.1)  # one per window / limit, never a burst
    assert max_in_window(sends, 1.0) <= 10


def test_spaced_mode_keeps_the_window_with_lateness() -> None:
    async def main() -> list[float]:
        limiter = WindowLimiter(Rate(30))
        await limiter.pause(0)
        return await send_through(limiter, 900, 50, delay=0.02)

    sends, _ = run_virtual(main)
    assert max_in_window(sends, 1.0 + DEFAULT_MARGIN) <= 30
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= (1.0 + DEFAULT_MARGIN) / 30 - 1e-9


def test_registry_rates_overrides_and_shared_pause() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        reg = LimiterRegistry(ACTION_RATES, overrides={"GetAsset": "50/s", "X": Rate(3, 60)})
        assert reg.rate_for("CreateAsset") == Rate(30)
        assert reg.rate_for("GetAsset") == Rate(50)
        assert reg.rate_for("X") == Rate(3, 60.0)
        assert reg.get("CreateAsset") is reg.get("CreateAsset")
        assert isinstance(reg.get("CreateAsset"), Limiter)
        await reg.pause("CreateAsset", 3)
        t0 = loop.time()
        grant = await reg.acquire("CreateAsset")
        assert isinstance(grant, Grant)
        await grant.send()
        grant.answered()
        create = loop.time() - t0
        t0 = loop.time()
        await reg.acquire("GetAsset")  # other endpoints are not paused
        return create, loop.time() - t0

    (create, get), _ = run_virtual(main)
    assert create == pytest.approx(3.0)
    assert get == 0.0


def test_rates_parse_scale_and_validate() -> None:
    assert Rate.parse("120/min") == Rate(120, 60.0)
    assert Rate.parse("5/10s") == Rate(5, 10.0)
    assert Rate.parse(29.5) == Rate(29, 29 / 29.5)
    assert Rate.parse(0.5) == Rate(1, 2.0)
    assert Rate(30).scaled(0.1) == Rate(3)
    assert Rate(3, 60.0).scaled(0.1).window == pytest.approx(200.0)
    assert str(Rate(3, 60.0)) == "3/min"
    assert LimiterRegistry({}, headroom=0.5).rate_for("A") == Rate(10, 2.0)
    for bad in ("x/s", "3/parsec", "0/s"):
        with pytest.raises(ValueError, match="rate"):
            Rate.parse(bad)
    with pytest.raises(ValueError, match="headroom"):
        LimiterRegistry(ACTION_RATES, headroom=0)
    with pytest.raises(ValueError, match="margin"):
        WindowLimiter(Rate(1), margin=-1)


def test_repr_is_useful() -> None:
    assert repr(WindowLimiter(Rate(3, 60.0))) == (
        "<WindowLimiter 3/min margin=20ms sent=0 moving=0 waiters=0>"
    )
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


async def _sent(limiter: Limiter) -> None:
    grant = await limiter.acquire()
    await grant.send()
    grant.answered()


def test_a_slow_response_moves_the_count_to_margin_before_it() -> None:
    """The arrival lies between the send and the response: a response later than the
    margin counts the place from ``margin`` before it, whatever the send time said."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        limiter = WindowLimiter(Rate(1), margin=0.02, lead=0.0)
        grant = await limiter.acquire()
        await grant.send()  # at 0 ...
        await asyncio.sleep(0.5)
        grant.answered()  # ... answered at 0.5: counted from 0.48
        t0 = loop.time() - 0.5
        await _sent(limiter)
        return loop.time() - t0

    waited, _ = run_virtual(main)
    assert waited == pytest.approx(0.48 + 1.02)
