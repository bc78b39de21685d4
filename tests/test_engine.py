"""The request engine's behaviours, end to end against the emulator over 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator

import pytest

from chenyu_assets._core.logs import get_logger
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

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_elapsed=10)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(processing_delay=0.05, processing_jitter=0)) as e:
        yield e


#: This emulator runs on the client's own event loop and checks each created asset's media
#: there (CPU work), so a request can reach its rate counter over 100 ms after our stamp
#: on a loaded host: that arrival jitter, not the network's, sets the margin here.
IN_PROCESS_MARGIN = 0.3


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


async def test_transient_5xx_is_retried_and_succeeds(emu: Emulator) -> None:
    async with client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=503, max_count=2)])
        got = await ark.get_asset_group(group)
        assert got.id == group
        assert got.request_id
        assert ark.stats.retries == 2


async def test_html_error_page_is_retried(emu: Emulator) -> None:
    async with client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=502, body="html", max_count=1)])
        assert (await ark.get_asset_group(group)).id == group


async def test_create_is_never_resent_after_an_ambiguous_failure(emu: Emulator) -> None:
    async with client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="CreateAsset", kind="reset", phase="after", max_count=1)])
        with pytest.raises(AmbiguousOutcomeError) as info:
            await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800), name="n1")
        assert isinstance(info.value.cause, ConnectionLostError)
        audit = emu.audit()
        assert audit.count("CreateAsset") == 1  # exactly one send
        assert len([a for a in audit.assets if a.name == "n1"]) == 1  # and it did commit


async def test_create_5xx_is_ambiguous_but_429_is_retried(emu: Emulator) -> None:
    async with client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="CreateAsset", status=500, max_count=1)])
        with pytest.raises(AmbiguousOutcomeError):
            await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        emu.set_faults(
            [FaultRule(action="CreateAsset", status=429, retry_after="0.05", max_count=1)]
        )
        assert await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        assert ark.stats.rate_limited == 1


async def test_429_pauses_the_endpoint_for_every_task(emu: Emulator) -> None:
    async with client(emu) as ark:
        group = await make_group(ark)
        emu.set_faults(
            [FaultRule(action="GetAssetGroup", status=429, retry_after="0.5", max_count=1)]
        )
        started = time.monotonic()
        done: list[float] = []

        async def one() -> None:
            await ark.get_asset_group(group)
            done.append(time.monotonic() - started)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(one())
            for _ in range(2000):  # until the 429 has come back (bounded)
                if ark.stats.rate_limited:
                    break
                await asyncio.sleep(0.001)
            assert ark.stats.rate_limited == 1
            for _ in range(4):  # other tasks, started during the pause, wait it out too
                tg.create_task(one())
        late = [t for t in done if t >= 0.5]
        assert len(late) == 5
        records = [r for r in emu.audit().requests if r.action == "GetAssetGroup"]
        first_429 = min(r.t for r in records if r.status == 429)
        after = [r.t for r in records if r.t > first_429]
        assert len(after) == 5
        assert min(after) - first_429 >= 0.45


async def test_retry_storm_is_bounded_by_the_budget_and_the_deadline(emu: Emulator) -> None:
    budget = RetryBudget(ratio=0.2, floor_per_second=0.0, capacity=5)
    async with client(emu, retry_budget=budget) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=503)])
        calls = 20
        started = time.monotonic()
        results = await asyncio.gather(
            *(ark.get_asset_group(group, deadline=3.0) for _ in range(calls)),
            return_exceptions=True,
        )
        assert time.monotonic() - started < 3.5
        assert all(isinstance(r, ServerError) for r in results)
        sent = emu.audit().count("GetAssetGroup")
        # logical calls + what the budget allowed (5 saved + 0.2 per call)
        assert sent <= calls + 5 + int(calls * 0.2) + 1
        assert budget.denied > 0


async def test_hanging_endpoint_ends_by_the_deadline(emu: Emulator) -> None:
    async with client(emu, timeouts=Timeouts(connect=2, read=30)) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", kind="hang")])
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            await ark.get_asset_group(group, deadline=0.5)
        assert time.monotonic() - started < 1.5


async def test_socket_read_timeout_applies_without_a_deadline(emu: Emulator) -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_elapsed=5)
    async with client(emu, timeouts=Timeouts(connect=2, read=0.3), retry=policy) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", kind="hang")])
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            await ark.get_asset_group(group)
        assert time.monotonic() - started < 2.0


async def test_fatal_errors_are_not_retried_and_name_everything(emu: Emulator) -> None:
    async with client(emu) as ark:
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


async def test_bad_secret_is_an_authentication_error_without_the_secret(emu: Emulator) -> None:
    canary = "CANARYsecretKEY000000000000000000000000000=="
    async with client(emu, secret_key=canary) as ark:
        with pytest.raises(AuthenticationError) as info:
            await ark.create_asset_group(name="g")
    assert info.value.code == "SignatureDoesNotMatch"
    assert canary not in str(info.value)
    assert canary not in repr(info.value)


async def test_connect_error_is_retried_then_raised() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_elapsed=5)
    ark = ArkClient(
        access_key="AKLTx1234567", secret_key="s" * 20, base_url="http://127.0.0.1:9", retry=policy
    )
    async with ark:
        with pytest.raises(ConnectError):
            await ark.get_asset("asset-20260101000000-zzzzz")
    assert ark.stats.requests == 3


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
            Emulator(config) as emu,
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


async def test_limiter_paces_200_creates_with_zero_429s() -> None:
    cfg = EmulatorConfig(
        time_scale=4, processing_delay=0.05, processing_jitter=0, max_processing=10_000
    )  # rate only
    async with Emulator(cfg) as emu:
        rates = {k: v * 4 for k, v in emu.config.rates.items()}
        async with client(emu, rates=rates, rate_margin=IN_PROCESS_MARGIN) as ark:
            group = await make_group(ark)
            url = emu.media_url("png", 800, 800)
            started = time.monotonic()
            for i in range(200):
                await ark.create_asset(group_id=group, url=url, name=f"a{i}")
            elapsed = time.monotonic() - started
        audit = emu.audit()
        assert audit.rejected_429.get("CreateAsset", 0) == 0
        assert ark.stats.rate_limited == 0
        assert audit.count("CreateAsset", status=200) == 200
        assert audit.max_in_window("CreateAsset", window=1.0) <= 120
        assert elapsed >= 200 / 120 * 0.95


async def test_concurrent_creates_from_many_tasks_see_zero_429s() -> None:
    cfg = EmulatorConfig(
        time_scale=2, processing_delay=0.05, processing_jitter=0, max_processing=10_000
    )  # rate only
    async with Emulator(cfg) as emu:
        rates = {k: v * 2 for k, v in emu.config.rates.items()}
        async with client(emu, rates=rates, rate_margin=IN_PROCESS_MARGIN) as ark:
            group = await make_group(ark)
            url = emu.media_url("png", 800, 800)

            async def worker(w: int) -> None:
                for i in range(6):
                    await ark.create_asset(group_id=group, url=url, name=f"w{w}-{i}")

            async with asyncio.TaskGroup() as tg:
                for w in range(20):
                    tg.create_task(worker(w))
        audit = emu.audit()
        assert audit.rejected_429.get("CreateAsset", 0) == 0
        assert audit.max_in_window("CreateAsset", window=1.0) <= 60


async def test_rate_limit_error_carries_retry_after_when_over_the_cap(emu: Emulator) -> None:
    policy = RetryPolicy(max_retry_after=1.0, base_delay=0.01, max_elapsed=5)
    async with client(emu, retry=policy) as ark:
        group = await make_group(ark)
        emu.set_faults([FaultRule(action="GetAssetGroup", status=429, retry_after="120")])
        with pytest.raises(RateLimitError) as info:
            await ark.get_asset_group(group)
        assert info.value.retry_after == 120.0
