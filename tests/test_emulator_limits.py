"""Per-account rate limits and the in-flight create cap, over real HTTP, on virtual time.

Each test runs on its own virtual-time loop (``tests/vclock.py``) with the emulator's clock
on the same time, so "a burst", "one second later" and "within a window" are exact and do
not depend on how busy the machine is."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_kit import MODEL, OTHER, ark, bearer, config, new_group, result
from vclock import emulator_clock, virtual

from chenyu_assets.emulator import Account, Emulator


@contextlib.asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[tuple[aiohttp.ClientSession, Emulator]]:
    """A client session and an emulator, both on the running (virtual) loop's time."""
    async with (
        aiohttp.ClientSession() as session,
        Emulator(config(**overrides), clock=emulator_clock()) as emu,
    ):
        yield session, emu


async def burst(
    session: aiohttp.ClientSession,
    emu: Emulator,
    action: str,
    bodies: list[dict[str, Any]],
    account: Account | None = None,
) -> Counter[tuple[int, str | None]]:
    """Send every request at once; count (status, error code) outcomes."""
    replies = await asyncio.gather(
        *(ark(session, emu, action, body, account=account) for body in bodies)
    )
    outcomes: Counter[tuple[int, str | None]] = Counter()
    for status, body in replies:
        error = body["ResponseMetadata"].get("Error")
        outcomes[(status, error["Code"] if error else None)] += 1
    return outcomes


def creates(group_id: str, emu: Emulator, n: int) -> list[dict[str, Any]]:
    url = emu.media_url()
    return [
        {"GroupId": group_id, "URL": url, "AssetType": "Image", "Name": f"a{i}"} for i in range(n)
    ]


@virtual
async def test_burst_of_60_creates_gets_exactly_30() -> None:
    # a long processing delay and a high in-flight cap: only the rate can refuse here
    async with running(processing_delay=60, max_processing=1000) as (session, emu):
        group_id = await new_group(session, emu)
        await asyncio.sleep(1.05)  # leave CreateAssetGroup's window behind (not that it matters)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 60))
        audit = emu.audit()
        times = [r.t for r in audit.requests if r.action == "CreateAsset"]
        assert max(times) == min(times)  # all 60 arrived at one (virtual) instant
        assert outcomes == {(200, None): 30, (429, "FlowLimitExceeded"): 30}
        assert audit.max_in_window("CreateAsset") == 30
        assert audit.rejected_429 == {"CreateAsset": 30}
        assert sum(1 for a in audit.assets if a.status == "Processing") == 30
        # refusals did not consume the window: one second later 30 more fit, no more
        await asyncio.sleep(1.05)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 40))
        assert outcomes == {(200, None): 30, (429, "FlowLimitExceeded"): 10}
        # the other account has its own budget
        other_group = result(
            await ark(session, emu, "CreateAssetGroup", {"Name": "o"}, account=OTHER)
        )["Id"]
        outcomes = await burst(
            session, emu, "CreateAsset", creates(other_group, emu, 35), account=OTHER
        )
        assert outcomes[(200, None)] == 30


@virtual
async def test_sustained_overload_never_exceeds_the_window() -> None:
    async with running() as (session, emu):
        for _ in range(12):  # 60/s for 2.4 s against a 30/s limit
            await burst(session, emu, "ListAssets", [{}] * 12)
            await asyncio.sleep(0.2)
        audit = emu.audit()
        assert audit.max_in_window("ListAssets", 1.0) == 30
        # bursts of 12 at t = 0, 0.2 ... 2.2 (sliding window, refusals take nothing):
        # 12 + 12 + 6 by t = 0.4; each accepted request's place frees 1 s later, so the
        # bursts at 1.0, 1.2, 1.4 take 12, 12, 6 and those at 2.0, 2.2 take 12, 12
        assert audit.count("ListAssets", 200) == 30 + 30 + 24


@virtual
async def test_processing_cap() -> None:
    async with running(processing_delay=60) as (session, emu):
        group_id = await new_group(session, emu)
        ids = []
        for body in creates(group_id, emu, 30):
            ids.append(result(await ark(session, emu, "CreateAsset", body))["Id"])
        await asyncio.sleep(1.05)  # the rate window is clear: only the cap can refuse now
        status, body = await ark(session, emu, "CreateAsset", creates(group_id, emu, 1)[0])
        assert status == 429
        assert body["ResponseMetadata"]["Error"]["Code"] == "FlowLimitExceeded"
        audit = emu.audit()
        assert audit.max_processing == {"demo": 30}
        assert audit.rejected_429 == {"CreateAsset": 1}
        # one finished (deleted) asset frees one slot
        result(await ark(session, emu, "DeleteAsset", {"Id": ids[0]}))
        assert (await ark(session, emu, "CreateAsset", creates(group_id, emu, 1)[0]))[0] == 200
        assert (await ark(session, emu, "CreateAsset", creates(group_id, emu, 1)[0]))[0] == 429
        # the cap is per account
        other_group = result(
            await ark(session, emu, "CreateAssetGroup", {"Name": "o"}, account=OTHER)
        )["Id"]
        assert (
            await ark(session, emu, "CreateAsset", creates(other_group, emu, 1)[0], account=OTHER)
        )[0] == 200


@virtual
async def test_processing_cap_frees_as_assets_finish() -> None:
    async with running(processing_delay=0.3, max_processing=5) as (session, emu):
        group_id = await new_group(session, emu)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 8))
        assert outcomes == {(200, None): 5, (429, "FlowLimitExceeded"): 3}
        await asyncio.sleep(1.05)  # the 5 finished and the rate window is clear
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 5))
        assert outcomes == {(200, None): 5}
        assert emu.audit().max_processing == {"demo": 5}


@virtual
async def test_token_bucket_window() -> None:
    async with running(window="token_bucket") as (session, emu):
        outcomes = await burst(session, emu, "ListAssetGroups", [{}] * 45)
        assert outcomes[(200, None)] == 30  # the bucket starts full
        await asyncio.sleep(0.5)  # exactly 15 tokens back at 30/s
        outcomes = await burst(session, emu, "ListAssetGroups", [{}] * 30)
        assert outcomes == {(200, None): 15, (429, "FlowLimitExceeded"): 15}


def replay(model: str, times: list[float], limit: int, window: float = 1.0) -> list[bool]:
    """What ``model`` must answer to requests counted at ``times`` (an independent model)."""
    accepted: list[float] = []
    out: list[bool] = []
    tokens, last = math.inf, None
    for t in times:
        if model == "sliding":
            ok = sum(1 for a in accepted if a > t - window) < limit
        elif model == "fixed":
            ok = sum(1 for a in accepted if a // window == t // window) < limit
        else:  # "bucket:B"
            burst = int(model.split(":")[1])
            tokens = min(burst, tokens + (t - last) * limit / window if last is not None else burst)
            last = t
            ok = tokens >= 1 - 1e-9
            tokens -= 1 if ok else 0
        out.append(ok)
        if ok:
            accepted.append(t)
    return out


async def waves(
    session: aiohttp.ClientSession, emu: Emulator, n: int, waves: int, gap: float
) -> list[tuple[float, bool]]:
    """``waves`` bursts of ``n`` ListAssetGroups, ``gap`` seconds apart: (t, accepted)."""
    for i in range(waves):
        if i:
            await asyncio.sleep(gap)
        await burst(session, emu, "ListAssetGroups", [{}] * n)
    records = [  # in arrival order (many share one virtual instant)
        (r.t, r.status == 200) for r in emu.audit().requests if r.action == "ListAssetGroups"
    ]
    assert {r.code for r in emu.audit().requests if r.status != 200} <= {"FlowLimitExceeded"}
    return records


@pytest.mark.parametrize("model", ["sliding", "fixed", "bucket:2", "bucket:5"])
@virtual
async def test_each_limit_model_answers_its_own_pattern(model: str) -> None:
    rates = {"ListAssetGroups": "6/0.3s"}
    async with running(limit_model=model, rates=rates) as (session, emu):
        records = await waves(session, emu, 10, 4, 0.07)
        times = [t for t, _ in records]
        assert [ok for _, ok in records] == replay(model, times, 6, 0.3)
        accepted = sum(ok for _, ok in records)
        if model == "sliding":
            assert emu.audit().max_in_window("ListAssetGroups", window=0.3) <= 6
        if model.startswith("bucket"):
            assert [ok for _, ok in records[:10]].count(True) <= int(model[-1]) + 1
        assert 0 < accepted < 40


@virtual
async def test_token_bucket_is_the_old_full_bucket() -> None:
    async with running(window="token_bucket") as (session, emu):
        records = await waves(session, emu, 45, 1, 0)
        assert sum(ok for _, ok in records[:30]) == 30  # the bucket starts full: a limit's worth
        assert [ok for _, ok in records] == replay("bucket:30", [t for t, _ in records], 30)


@virtual
async def test_per_minute_and_per_account_rates() -> None:
    rates = {"ListAssetGroups": "5/min", f"{OTHER.name}/ListAssetGroups": 2}
    async with running(rates=rates) as (session, emu):
        outcomes = await burst(session, emu, "ListAssetGroups", [{}] * 8)
        assert outcomes == {(200, None): 5, (429, "FlowLimitExceeded"): 3}
        outcomes = await burst(session, emu, "ListAssetGroups", [{}] * 5, account=OTHER)
        assert outcomes == {(200, None): 2, (429, "FlowLimitExceeded"): 3}
        assert emu.audit().max_in_window("ListAssetGroups", window=60.0, account="demo") == 5


@virtual
async def test_time_scale_multiplies_rates() -> None:
    async with running(time_scale=2) as (session, emu):
        outcomes = await burst(session, emu, "ListAssets", [{}] * 80)
        assert outcomes[(200, None)] == 60
        assert emu.audit().max_in_window("ListAssets") == 60


@virtual
async def test_get_rate_is_100() -> None:
    async with running() as (session, emu):
        group_id = await new_group(session, emu)
        outcomes = await burst(session, emu, "GetAssetGroup", [{"Id": group_id}] * 120)
        assert outcomes == {(200, None): 100, (429, "FlowLimitExceeded"): 20}


@virtual
async def test_families_share_the_account_limit() -> None:
    async with running() as (session, emu):
        url_gw = f"{emu.gateway_url}/ListAssets"
        url_av = f"{emu.avatar_url}/v1/private-avatar/assets/list"

        async def post(url: str, body: dict[str, Any]) -> int:
            async with session.post(url, json=body, headers=bearer(emu.account)) as resp:
                return resp.status

        statuses = await asyncio.gather(
            *(ark(session, emu, "ListAssets", {}) for _ in range(15)),
            *(post(url_gw, {}) for _ in range(15)),
            *(post(url_av, {"model": MODEL}) for _ in range(15)),
        )
        codes = [s if isinstance(s, int) else s[0] for s in statuses]
        assert codes.count(200) == 30
        assert codes.count(429) == 15


@virtual
async def test_limits_can_be_lifted() -> None:
    async with running(enforce_limits=False, processing_delay=60) as (session, emu):
        group_id = await new_group(session, emu)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 80))
        assert outcomes == {(200, None): 80}
        # and put back live
        emu.config.enforce_limits = True
        await asyncio.sleep(1.05)
        status, _ = await ark(session, emu, "CreateAsset", creates(group_id, emu, 1)[0])
        assert status == 429  # 80 are Processing: the in-flight cap applies again


@virtual
async def test_auth_failures_do_not_count() -> None:
    async with running() as (session, emu):
        stranger = Account(name="x", access_key="AKLTNOBODY", secret_key="s", api_key="k")
        await burst(session, emu, "ListAssets", [{}] * 40, account=stranger)
        outcomes = await burst(session, emu, "ListAssets", [{}] * 30)
        assert outcomes == {(200, None): 30}
