"""Per-account rate limits and the in-flight create cap, over real HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import anyio
import pytest
from emulator_kit import MODEL, OTHER, ark, bearer, config, new_group, result, session

from chenyu_assets.emulator import Account, Emulator

pytestmark = pytest.mark.anyio
__all__ = ["session"]


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


async def test_burst_of_60_creates_gets_exactly_30(session: aiohttp.ClientSession) -> None:
    # a long processing delay and a high in-flight cap: only the rate can refuse here
    async with Emulator(config(processing_delay=60, max_processing=1000)) as emu:
        group_id = await new_group(session, emu)
        await anyio.sleep(1.05)  # leave CreateAssetGroup's window behind (not that it matters)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 60))
        audit = emu.audit()
        times = [r.t for r in audit.requests if r.action == "CreateAsset"]
        assert max(times) - min(times) < 1.0  # all 60 really were inside one second
        assert outcomes == {(200, None): 30, (429, "FlowLimitExceeded"): 30}
        assert audit.max_in_window("CreateAsset") == 30
        assert audit.rejected_429 == {"CreateAsset": 30}
        assert sum(1 for a in audit.assets if a.status == "Processing") == 30
        # refusals did not consume the window: one second later 30 more fit, no more
        await anyio.sleep(1.05)
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


async def test_sustained_overload_never_exceeds_the_window(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(config()) as emu:
        for _ in range(12):  # ~60/s for 2.4 s against a 30/s limit
            await burst(session, emu, "ListAssets", [{}] * 12)
            await anyio.sleep(0.2)
        audit = emu.audit()
        assert audit.max_in_window("ListAssets", 1.0) == 30
        accepted = audit.count("ListAssets", 200)
        assert 60 <= accepted <= 30 * 4


async def test_processing_cap(session: aiohttp.ClientSession) -> None:
    async with Emulator(config(processing_delay=60)) as emu:
        group_id = await new_group(session, emu)
        ids = []
        for body in creates(group_id, emu, 30):
            ids.append(result(await ark(session, emu, "CreateAsset", body))["Id"])
        await anyio.sleep(1.05)  # the rate window is clear: only the cap can refuse now
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


async def test_processing_cap_frees_as_assets_finish(session: aiohttp.ClientSession) -> None:
    async with Emulator(config(processing_delay=0.3, max_processing=5)) as emu:
        group_id = await new_group(session, emu)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 8))
        assert outcomes == {(200, None): 5, (429, "FlowLimitExceeded"): 3}
        await anyio.sleep(1.05)  # the 5 finished and the rate window is clear
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 5))
        assert outcomes == {(200, None): 5}
        assert emu.audit().max_processing == {"demo": 5}


async def test_token_bucket_window(session: aiohttp.ClientSession) -> None:
    async with Emulator(config(window="token_bucket")) as emu:
        outcomes = await burst(session, emu, "ListAssetGroups", [{}] * 45)
        assert outcomes[(200, None)] == 30  # the bucket starts full
        first_end = max(r.t for r in emu.audit().requests)
        await anyio.sleep(0.5)  # ~15 tokens back
        outcomes = await burst(session, emu, "ListAssetGroups", [{}] * 30)
        second = [r.t for r in emu.audit().requests[45:]]
        refill_low = (min(second) - first_end) * 30
        refill_high = (max(second) - first_end) * 30
        assert refill_low - 1 <= outcomes[(200, None)] <= refill_high + 1


async def test_time_scale_multiplies_rates(session: aiohttp.ClientSession) -> None:
    async with Emulator(config(time_scale=2)) as emu:
        outcomes = await burst(session, emu, "ListAssets", [{}] * 80)
        assert outcomes[(200, None)] == 60
        assert emu.audit().max_in_window("ListAssets") == 60


async def test_get_rate_is_100(session: aiohttp.ClientSession) -> None:
    async with Emulator(config()) as emu:
        group_id = await new_group(session, emu)
        outcomes = await burst(session, emu, "GetAssetGroup", [{"Id": group_id}] * 120)
        assert outcomes == {(200, None): 100, (429, "FlowLimitExceeded"): 20}


async def test_families_share_the_account_limit(session: aiohttp.ClientSession) -> None:
    async with Emulator(config()) as emu:
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


async def test_limits_can_be_lifted(session: aiohttp.ClientSession) -> None:
    async with Emulator(config(enforce_limits=False, processing_delay=60)) as emu:
        group_id = await new_group(session, emu)
        outcomes = await burst(session, emu, "CreateAsset", creates(group_id, emu, 80))
        assert outcomes == {(200, None): 80}
        # and put back live
        emu.config.enforce_limits = True
        await anyio.sleep(1.05)
        status, _ = await ark(session, emu, "CreateAsset", creates(group_id, emu, 1)[0])
        assert status == 429  # 80 are Processing: the in-flight cap applies again


async def test_auth_failures_do_not_count(session: aiohttp.ClientSession) -> None:
    async with Emulator(config()) as emu:
        stranger = Account(name="x", access_key="AKLTNOBODY", secret_key="s", api_key="k")
        await burst(session, emu, "ListAssets", [{}] * 40, account=stranger)
        outcomes = await burst(session, emu, "ListAssets", [{}] * 30)
        assert outcomes == {(200, None): 30}
