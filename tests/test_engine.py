"""The request engine's behaviours, end to end against the emulator over 127.0.0.1.

Every test runs on virtual time (``@virtual``) with the emulator on the same clock, so
pauses, deadlines, timeouts and rate windows are asserted exactly, whatever the load.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from emulator_kit import VirtualTime, virtual_emulator
from vclock import emulator_clock, virtual

from chenyu_assets._core.logs import get_logger
from chenyu_assets._core.ratelimit import DEFAULT_MARGIN
from chenyu_assets._core.retry import RetryBudget, RetryPolicy
from chenyu_assets._core.transport import Timeouts
from chenyu_assets.ark import ArkClient
from chenyu_assets.emulator import Account, Emulator, EmulatorConfig, FaultRule
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ConnectionLostError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from chenyu_assets.events import ThrottleEvent
from chenyu_assets.limits import ACTION_RATES, Rate

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_elapsed=10)


@contextlib.asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[tuple[Emulator, VirtualTime]]:
    """An emulator on the test's virtual clock, with fast processing unless overridden."""
    cfg = EmulatorConfig(**{"processing_delay": 0.05, "processing_jitter": 0, **overrides})
    emu, vt = virtual_emulator(cfg)
    async with emu:
        yield emu, vt


def client(emu: Emulator, **kw: object) -> ArkClient:
    opts: dict[str, object] = {
        "access_key": emu.account.access_key,
        "secret_key": emu.account.secret_key,
        "base_url": emu.url,
        "retry": FAST,
    }
    opts.update(kw)
    return ArkClient(**opts)  # type: ignore[arg-type]


async def make_group(ark: ArkClient) -> str:
    return await ark.create_asset_group(name="g")


@virtual
async def test_transient_5xx_is_retried_and_succeeds() -> None:
    async with running() as (emu, _), client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=503, max_count=2)])
        got = await ark.get_asset_group(group)
        assert got.id == group
        assert got.request_id
        assert ark.stats.retries == 2


@virtual
async def test_html_error_page_is_retried() -> None:
    async with running() as (emu, _), client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=502, body="html", max_count=1)])
        assert (await ark.get_asset_group(group)).id == group


@virtual
async def test_create_is_never_resent_after_an_ambiguous_failure() -> None:
    async with running() as (emu, _), client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="CreateAsset", kind="reset", phase="after", max_count=1)])
        with pytest.raises(AmbiguousOutcomeError) as info:
            await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800), name="n1")
        assert isinstance(info.value.cause, ConnectionLostError)
        audit = emu.audit()
        assert audit.count("CreateAsset") == 1  # exactly one send
        assert len([a for a in audit.assets if a.name == "n1"]) == 1  # and it did commit


@virtual
async def test_create_5xx_is_ambiguous_but_429_is_retried() -> None:
    async with running() as (emu, _), client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="CreateAsset", status=500, max_count=1)])
        with pytest.raises(AmbiguousOutcomeError):
            await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        emu.set_faults(
            [FaultRule(action="CreateAsset", status=429, retry_after="0.05", max_count=1)]
        )
        assert await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        assert ark.stats.rate_limited == 1


@virtual
async def test_429_pauses_the_endpoint_for_every_task() -> None:
    pause = 0.5
    async with running() as (emu, vt):
        async with client(emu) as ark:
            group = await make_group(ark)
            # the first GetAssetGroup is refused with Retry-After 0.5; every other one is
            # answered 0.1 s after it arrived (latency after the handler: audit t is arrival),
            # so a task's next call cannot start in the instant the 429 comes back
            emu.set_faults(
                [
                    FaultRule(
                        action="GetAssetGroup", status=429, retry_after=str(pause), max_count=1
                    ),
                    FaultRule(action="GetAssetGroup", kind="latency", phase="after", delay=0.1),
                ]
            )
            seen: list[float] = []  # loop time the client took the 429 in

            def hook(event: object) -> None:
                if isinstance(event, ThrottleEvent):
                    seen.append(vt.now())

            ark.add_hook(hook)
            done: dict[int, list[float]] = {}

            async def one(task: int) -> None:
                for _ in range(3):
                    await ark.get_asset_group(group)
                    done.setdefault(task, []).append(vt.now())

            async with asyncio.TaskGroup() as tg:
                for task in range(5):
                    tg.create_task(one(task))
        records = [r for r in emu.audit().requests if r.action == "GetAssetGroup"]
        assert len(records) == 5 * 3 + 1  # 15 answers and the one 429
        [refused] = [r for r in records if r.status == 429]
        assert seen == [pytest.approx(vt.loop_time(refused.t), abs=1e-9)]
        pause_end = refused.t + pause
        # only requests already on their way when the 429 arrived (sent no later than it) may
        # go before the pause ends; every other request, retries included, waits it out
        in_flight = [r for r in records if r.t <= refused.t and r is not refused]
        for record in records:
            if record is refused or record in in_flight:
                continue
            assert record.t >= pause_end - 1e-9, (record.t - refused.t, records)
        assert len(in_flight) < 5  # the limiter paces sends 10 ms apart: not all went at once
        # every task's completion (its last call) comes after the pause; only the calls that
        # were in flight completed before it
        for task, ends in done.items():
            assert len(ends) == 3
            assert ends[-1] >= vt.loop_time(pause_end), task
        early = [t for ends in done.values() for t in ends if t < vt.loop_time(pause_end)]
        assert len(early) == len(in_flight)


@virtual
async def test_retry_storm_is_bounded_by_the_budget_and_the_deadline() -> None:
    deadline = 3.0
    async with running() as (emu, vt):
        budget = RetryBudget(ratio=0.2, floor_per_second=0.0, capacity=5)
        async with client(emu, retry_budget=budget) as ark:
            group = await make_group(ark)
            emu.set_faults([FaultRule(action="GetAssetGroup", status=503)])
            calls = 20
            started = vt.now()
            ended: list[float] = []

            async def one() -> BaseException | None:
                try:
                    await ark.get_asset_group(group, deadline=deadline)
                except Exception as exc:
                    return exc
                finally:
                    ended.append(vt.now() - started)
                return None

            results = await asyncio.gather(*(one() for _ in range(calls)))
        assert all(isinstance(r, ServerError) for r in results), results
        assert len(ended) == calls
        assert max(ended) <= deadline  # exact: virtual time
        sent = emu.audit().count("GetAssetGroup")
        # logical calls + what the budget allowed (5 saved + 0.2 per call)
        assert calls < sent <= calls + 5 + int(calls * 0.2) + 1
        assert budget.denied > 0


@virtual
async def test_retry_storm_without_a_budget_ends_at_the_deadline() -> None:
    deadline, ceiling = 3.0, 0.2
    policy = RetryPolicy(max_attempts=10_000, base_delay=ceiling, max_delay=ceiling, max_elapsed=60)
    unlimited = RetryBudget(ratio=0.0, floor_per_second=0.0, capacity=1_000_000)
    async with running() as (emu, vt), client(emu, retry=policy, retry_budget=unlimited) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=503)])
        started = vt.now()
        ended: list[float] = []

        async def one() -> BaseException | None:
            try:
                await ark.get_asset_group(group, deadline=deadline)
            except Exception as exc:
                return exc
            finally:
                ended.append(vt.now() - started)
            return None

        results = await asyncio.gather(*(one() for _ in range(20)))
    assert all(isinstance(r, ServerError | RequestTimeoutError) for r in results), results
    # each call retried until the next backoff (<= 0.2 s) would cross its deadline, or until
    # the deadline cut its wait for the rate limit: every one ends inside the last 0.2 s
    assert all(deadline - ceiling - 1e-6 <= t <= deadline + 1e-6 for t in ended), ended
    # and the storm never outran the endpoint's limiter (100/s from the start, empty bucket)
    rate = ACTION_RATES["GetAssetGroup"]
    sent = sorted(r.t for r in emu.audit().requests if r.action == "GetAssetGroup")
    assert len(sent) <= rate * deadline + 1
    busiest = max(bisect.bisect_left(sent, t + 1.0) - i for i, t in enumerate(sent))
    assert busiest <= rate + 1, busiest
    print(f"\nstorm without a budget: {len(sent)} sends, busiest second {busiest}")


@virtual
async def test_a_grant_caught_by_a_later_429_pause_ends_at_its_deadline_unsent() -> None:
    # The client sends GetAssetGroup at 2/s, the server allows 1/min. A goes at t=0 and is
    # held 1.01 s (a latency fault) before the server counts it: 429 at 1.01 s. B goes at
    # t=0 too and is accepted. C (deadline 1.5 s) gets B's place back at 1.02 s, and its
    # grant comes `lead` early, at 1.0 s — just before A's 429 pauses the action. C must not
    # sit through that pause: it ends at its deadline, never sent.
    rates = {"GetAssetGroup": Rate(2, 1.0)}
    server = {**ACTION_RATES, "GetAssetGroup": "1/min"}
    async with running(rates=server) as (emu, vt), client(emu, rates=rates) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", kind="latency", delay=1.01, max_count=1)])
        started = vt.now()
        a = asyncio.ensure_future(ark.get_asset_group(group, deadline=30))
        await asyncio.sleep(0)
        b = asyncio.ensure_future(ark.get_asset_group(group, deadline=30))
        await asyncio.sleep(0.001)
        with pytest.raises(RequestTimeoutError) as info:
            await ark.get_asset_group(group, deadline=1.5)
        assert abs((vt.now() - started) - 1.501) < 1e-3, vt.now() - started
        assert info.value.sent is False
        for call in (a, b):
            call.cancel()
        await asyncio.gather(a, b, return_exceptions=True)
        answers = [(r.status, r.t) for r in emu.audit().requests if r.action == "GetAssetGroup"]
    assert [s for s, _ in answers] == [200, 429], answers  # C never went out


@virtual
async def test_hanging_endpoint_ends_by_the_deadline() -> None:
    deadline = 0.5
    async with (
        running() as (emu, vt),
        client(emu, timeouts=Timeouts(connect=2, read=30)) as ark,
    ):
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", kind="hang")])
        started = vt.now()
        with pytest.raises(RequestTimeoutError):
            await ark.get_asset_group(group, deadline=deadline)
        # the call's own deadline, not the 30 s read timeout, ended it: exactly at 0.5 s
        assert vt.now() - started == pytest.approx(deadline, abs=1e-6)


@virtual
async def test_socket_read_timeout_applies_without_a_deadline() -> None:
    read = 0.3
    async with running() as (emu, vt):
        policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_elapsed=5)
        async with client(emu, timeouts=Timeouts(connect=2, read=read), retry=policy) as ark:
            group = await make_group(ark)
            emu.set_faults([FaultRule(action="GetAssetGroup", kind="hang")])
            with pytest.raises(RequestTimeoutError):
                await ark.get_asset_group(group)
            ended = vt.audit_now()
        assert ark.stats.by_endpoint["GetAssetGroup"] == 2  # both attempts hung
        [first] = [r.t for r in emu.audit().requests if r.action == "GetAssetGroup"]
        # each attempt was given up exactly ``read`` seconds after it was sent; between them
        # the retry waited its backoff (at most base_delay = 10 ms)
        assert 2 * read - 1e-6 <= ended - first <= 2 * read + 0.01 + 1e-6


@virtual
async def test_fatal_errors_are_not_retried_and_name_everything() -> None:
    async with running() as (emu, _), client(emu) as ark:
        with pytest.raises(NotFoundError) as info:
            await ark.get_asset("asset-20260101000000-zzzzz")
        err = info.value
        assert err.code == "NotFound.asset_id"
        assert err.status == 404
        assert err.request_id
        text = str(err)
        for part in ("POST", "/", "404", "NotFound.asset_id", err.request_id):
            assert part in text
        assert ark.stats.retries == 0
        with pytest.raises(BadRequestError) as bad:
            await ark.create_asset_group(name="x" * 65)
        assert bad.value.code is not None
        assert bad.value.code.startswith("InvalidParameter")


@virtual
async def test_bad_secret_is_an_authentication_error_without_the_secret() -> None:
    async with running() as (emu, _vt):
        canary = "CANARYsecretKEY000000000000000000000000000=="
        async with client(emu, secret_key=canary) as ark:
            with pytest.raises(AuthenticationError) as info:
                await ark.create_asset_group(name="g")
        assert info.value.code == "SignatureDoesNotMatch"
        assert canary not in str(info.value)
        assert canary not in repr(info.value)


@virtual
async def test_connect_error_is_retried_then_raised() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_elapsed=5)
    ark = ArkClient(
        access_key="AKLTx1234567", secret_key="s" * 20, base_url="http://127.0.0.1:9", retry=policy
    )
    async with ark:
        with pytest.raises(ConnectError):
            await ark.get_asset("asset-20260101000000-zzzzz")
    assert ark.stats.requests == 3


@virtual
async def test_debug_logging_never_shows_credentials() -> None:
    ak = "AKLTCANARYACCESSKEY00000000000000000"
    sk = "CANARYSECRETKEY0000000000000000000000000000=="
    token = "CANARYSTSTOKEN0000000000000000000000"
    api_key = "cy_cafebabecafebabecafebabecafebabe"
    account = Account(name="canary", access_key=ak, secret_key=sk, api_key=api_key)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger("chenyu_assets")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        config = EmulatorConfig(accounts=[account], processing_delay=0.01)
        async with (
            Emulator(config, clock=emulator_clock()) as emu,
            ArkClient(
                access_key=ak, secret_key=sk, session_token=token, base_url=emu.url, retry=FAST
            ) as ark,
        ):
            emu.set_faults([FaultRule(action="CreateAssetGroup", status=503, max_count=1)])
            with contextlib.suppress(AmbiguousOutcomeError):
                await ark.create_asset_group(name="g")
            with pytest.raises(NotFoundError):
                await ark.get_asset("asset-20260101000000-zzzzz")
            logger = get_logger("chenyu_assets.test")
            logger.debug(
                "headers %s",
                {
                    "Authorization": f"HMAC-SHA256 Credential={ak}/x, "
                    f"Signature=abcdef0123456789abcdef"
                },
            )
            logger.debug("bearer Bearer %s and key %s and sk %s", api_key, api_key, sk)
            logger.debug("signed url https://h/x?expires=1&signature=deadbeefdeadbeef")
            logger.debug("token %s", token)
            logger.debug("repr %r", ark)
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.NOTSET)
    out = stream.getvalue()
    assert out  # something was logged
    for canary in (ak, sk, token, api_key, "abcdef0123456789abcdef", "deadbeefdeadbeef"):
        assert canary not in out, canary


@virtual
async def test_limiter_paces_200_creates_with_zero_429s() -> None:
    rate = ACTION_RATES["CreateAsset"]  # the published 30/s, which the emulator enforces
    async with running() as (emu, vt):
        async with client(emu) as ark:
            group = await make_group(ark)
            url = emu.media_url("png", 800, 800)
            started = vt.now()
            for i in range(200):
                await ark.create_asset(group_id=group, url=url, name=f"a{i}")
            elapsed = vt.now() - started
        audit = emu.audit()
        assert audit.rejected_429.get("CreateAsset", 0) == 0
        assert ark.stats.rate_limited == 0
        assert audit.count("CreateAsset", status=200) == 200
        assert audit.count("CreateAsset") == 200
        assert audit.max_in_window("CreateAsset", window=1.0) <= rate
        # the window limiter admits `rate` sends per window + margin, at once (no refill
        # loss): 200 sends are 7 windows, the last starting 6 x (1 s + margin) after the first
        assert elapsed == pytest.approx((200 - 1) // rate * (1 + DEFAULT_MARGIN), abs=1e-6)


@virtual
async def test_concurrent_creates_from_many_tasks_see_zero_429s() -> None:
    rate = ACTION_RATES["CreateAsset"]
    async with running() as (emu, vt):
        async with client(emu) as ark:
            group = await make_group(ark)
            url = emu.media_url("png", 800, 800)

            async def worker(w: int) -> None:
                for i in range(6):
                    await ark.create_asset(group_id=group, url=url, name=f"w{w}-{i}")

            started = vt.now()
            async with asyncio.TaskGroup() as tg:
                for w in range(20):
                    tg.create_task(worker(w))
            elapsed = vt.now() - started
        audit = emu.audit()
        assert audit.rejected_429.get("CreateAsset", 0) == 0
        assert ark.stats.rate_limited == 0
        assert audit.count("CreateAsset", status=200) == audit.count("CreateAsset") == 120
        assert audit.max_in_window("CreateAsset", window=1.0) <= rate
        assert elapsed == pytest.approx((120 - 1) // rate * (1 + DEFAULT_MARGIN), abs=1e-6)


@virtual
async def test_rate_limit_error_carries_retry_after_when_over_the_cap() -> None:
    async with running() as (emu, _vt):
        policy = RetryPolicy(max_retry_after=1.0, base_delay=0.01, max_elapsed=5)
        async with client(emu, retry=policy) as ark:
            group = await make_group(ark)
            emu.set_faults([FaultRule(action="GetAssetGroup", status=429, retry_after="120")])
            with pytest.raises(RateLimitError) as info:
                await ark.get_asset_group(group)
            assert info.value.retry_after == 120.0
