"""Injected faults: each kind, phases, counters, families, and seeded determinism."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from emulator_kit import (
    FAST,
    ark,
    bearer,
    config,
    emu,
    error_code,
    new_asset,
    new_group,
    result,
    session,
    virtual_emulator,
)
from vclock import virtual

from chenyu_assets.emulator import Emulator, FaultRule

pytestmark = pytest.mark.anyio
__all__ = ["emu", "session"]

CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


async def test_http_error_json_and_retry_after(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults([FaultRule(action="ListAssets", status=503, retry_after="2", max_count=1)])
    status, body = await ark(session, emu, "ListAssets", {})
    assert (status, body["ResponseMetadata"]["Error"]["Code"]) == (503, "ServiceUnavailable")
    assert (await ark(session, emu, "ListAssets", {}))[0] == 200  # max_count reached
    emu.set_faults([FaultRule(action="ListAssets", status=429, retry_after="3")])
    url = f"{emu.gateway_url}/ListAssets"
    async with session.post(url, json={}, headers=bearer(emu.account)) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"
        assert (await resp.json())["base_resp"]["status_code"] == 429
    audit = emu.audit()
    assert audit.count("ListAssets", 503) == 1
    assert [r.code for r in audit.requests if r.status in (429, 503)] == ["fault:http_error"] * 2
    assert audit.rejected_429 == {}  # injected 429s are not the limiter's


async def test_http_error_html_body(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults([FaultRule(action="*", status=502, body="html")])
    async with session.get(
        f"{emu.chenyu_url}/assets/asset_{'0' * 32}", headers=bearer(emu.account)
    ) as resp:
        assert resp.status == 502
        assert resp.content_type == "text/html"
        assert "502" in await resp.text()


async def test_after_phase_commits_then_fails(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.set_faults([FaultRule(action="CreateAssetGroup", phase="after", status=500, max_count=1)])
    status, body = await ark(session, emu, "CreateAssetGroup", {"Name": "committed"})
    assert (status, body["ResponseMetadata"]["Error"]["Code"]) == (500, "InternalError")
    groups = result(await ark(session, emu, "ListAssetGroups", {}))
    assert [g["Name"] for g in groups["Items"]] == ["committed"]


async def test_reset_before_and_after(emu: Emulator, session: aiohttp.ClientSession) -> None:
    group_id = await new_group(session, emu)
    emu.set_faults([FaultRule(action="CreateAsset", kind="reset", max_count=1)])
    with pytest.raises(aiohttp.ClientConnectionError):
        await new_asset(session, emu, group_id)
    assert result(await ark(session, emu, "ListAssets", {}))["TotalCount"] == 0
    emu.set_faults([FaultRule(action="CreateAsset", kind="reset", phase="after", max_count=1)])
    with pytest.raises(aiohttp.ClientConnectionError):
        await new_asset(session, emu, group_id)
    assert result(await ark(session, emu, "ListAssets", {}))["TotalCount"] == 1  # ambiguous!
    resets = [r for r in emu.audit().requests if r.code == "fault:reset"]
    assert [(r.action, r.status) for r in resets] == [("CreateAsset", 0)] * 2


async def test_close_and_truncate(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults([FaultRule(action="ListAssetGroups", kind="close", max_count=1)])
    with pytest.raises(CONNECTION_ERRORS):
        await ark(session, emu, "ListAssetGroups", {})
    emu.set_faults(
        [FaultRule(action="CreateAssetGroup", kind="truncate", phase="after", max_count=1)]
    )
    url_kw = {"Name": "half"}
    with pytest.raises(CONNECTION_ERRORS):
        await ark(session, emu, "CreateAssetGroup", url_kw)
    assert result(await ark(session, emu, "ListAssetGroups", {}))["TotalCount"] == 1
    # what a truncated answer looks like on the wire: a full Content-Length, half a body
    emu.set_faults([FaultRule(action="ListAssetGroups", kind="truncate")])
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        writer.write(
            f"POST {emu.gateway_url.removeprefix(emu.url)}/ListAssetGroups HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {emu.account.api_key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode()
        )
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ).split(b":")[1]
    )
    assert head.startswith(b"HTTP/1.1 200")
    assert 0 < len(body) < length


@virtual
async def test_hang_until_client_gives_up_and_shutdown_is_quick() -> None:
    emu, vt = virtual_emulator(config())
    await emu.start()
    async with aiohttp.ClientSession() as session:
        try:
            emu.set_faults([FaultRule(action="GetAssetGroup", kind="hang")])
            started = vt.now()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await ark(session, emu, "GetAssetGroup", {"Id": "x"})
            assert vt.now() - started == pytest.approx(0.3, abs=1e-6)  # it hung, to the end
            pending = asyncio.ensure_future(ark(session, emu, "GetAssetGroup", {"Id": "x"}))
            await asyncio.sleep(5)  # hanging still (virtual seconds: free)
            assert not pending.done()
        finally:
            started = vt.now()
            await emu.stop()
            # stopping releases the hanging request at once: no grace period is waited out
            stopped_in = vt.now() - started
        with pytest.raises(aiohttp.ClientConnectionError):
            await pending
    assert stopped_in < 0.01, stopped_in
    final = emu.audit()  # the last snapshot stays readable after stop
    assert [(r.status, r.code) for r in final.requests] == [(0, "fault:hang")] * 2


@virtual
async def test_latency() -> None:
    emulator, vt = virtual_emulator(config())
    async with emulator as emu, aiohttp.ClientSession() as session:
        emu.set_faults([FaultRule(action="ListAssets", kind="latency", delay=0.3)])
        started = vt.now()
        assert (await ark(session, emu, "ListAssets", {}))[0] == 200
        assert vt.now() - started == pytest.approx(0.3, abs=1e-6)
        emu.set_faults([FaultRule(action="ListAssets", kind="latency", delay=0.2, phase="after")])
        started = vt.now()
        assert (await ark(session, emu, "ListAssets", {}))[0] == 200
        assert vt.now() - started == pytest.approx(0.2, abs=1e-6)
        emu.clear_faults()
        started = vt.now()
        assert (await ark(session, emu, "ListAssets", {}))[0] == 200
        assert vt.now() - started < 1e-6  # the control: no fault, no wait


@virtual
async def test_list_lag() -> None:
    lag = 0.4
    emulator, vt = virtual_emulator(config())
    async with emulator as emu, aiohttp.ClientSession() as session:
        group_id = await new_group(session, emu)
        emu.set_faults([FaultRule(action="ListAssets", kind="list_lag", delay=lag)])
        asset_id = await new_asset(session, emu, group_id)
        [created_t] = [a.created_t for a in emu.audit().assets if a.id == asset_id]
        assert created_t is not None

        async def total_at(audit_t: float) -> int:
            await asyncio.sleep(vt.loop_time(audit_t) - vt.now())
            total: int = result(await ark(session, emu, "ListAssets", {}))["TotalCount"]
            return total

        assert await total_at(created_t) == 0
        assert await total_at(created_t + lag - 0.01) == 0  # hidden for exactly ``lag``
        assert await total_at(created_t + lag + 1e-6) == 1
        emu.clear_faults()
        emu.config.list_lag = lag  # the config knob does the same for every list
        await new_group(session, emu, "late")
        names = [g["Name"] for g in result(await ark(session, emu, "ListAssetGroups", {}))["Items"]]
        assert names == ["g"]
        await asyncio.sleep(lag + 1e-6)
        names = [g["Name"] for g in result(await ark(session, emu, "ListAssetGroups", {}))["Items"]]
        assert sorted(names) == ["g", "late"]


@virtual
async def test_stuck_asset_stays_processing() -> None:
    emulator, _ = virtual_emulator(config())
    async with emulator as emu, aiohttp.ClientSession() as session:
        group_id = await new_group(session, emu)
        emu.set_faults([FaultRule(action="CreateAsset", kind="stuck", max_count=1)])
        stuck = await new_asset(session, emu, group_id, name="stuck")
        fine = await new_asset(session, emu, group_id, name="fine")
        await asyncio.sleep(3600)  # an hour of virtual time
        assert result(await ark(session, emu, "GetAsset", {"Id": stuck}))["Status"] == "Processing"
        assert result(await ark(session, emu, "GetAsset", {"Id": fine}))["Status"] == "Active"
        [done] = [a for a in emu.audit().assets if a.id == fine]
        assert done.finished_t is not None
        assert done.created_t is not None
        # the healthy one finished after exactly its processing delay
        assert done.finished_t - done.created_t == pytest.approx(FAST["processing_delay"], abs=1e-6)
        assert emu.audit().max_processing["demo"] >= 1


async def test_family_and_action_matching(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.set_faults([FaultRule(action="ListAssets", family="gateway", status=500)])
    assert (await ark(session, emu, "ListAssets", {}))[0] == 200
    async with session.post(
        f"{emu.gateway_url}/ListAssets", json={}, headers=bearer(emu.account)
    ) as resp:
        assert resp.status == 500
    # failed authentication is answered before faults are drawn
    emu.set_faults([FaultRule(status=500)])
    assert error_code(await ark(session, emu, "ListAssets", {}, sign=False))[0] == 401


async def outcome_sequence(session: aiohttp.ClientSession, seed: int) -> list[str]:
    rules = [
        FaultRule(action="GetAssetGroup", status=503, probability=0.3),
        FaultRule(action="GetAssetGroup", kind="reset", probability=0.2),
        FaultRule(action="GetAssetGroup", status=500, probability=0.1, max_count=3),
    ]
    async with Emulator(config(seed=seed, faults=rules)) as emu:
        outcomes = []
        for _ in range(50):
            try:
                status, _ = await ark(session, emu, "GetAssetGroup", {"Id": "g"})
                outcomes.append(str(status))
            except aiohttp.ClientConnectionError:
                outcomes.append("reset")
        recorded = [r.code or str(r.status) for r in emu.audit().requests]
        assert len(recorded) == 50
        return outcomes


async def test_same_seed_same_fault_sequence(session: aiohttp.ClientSession) -> None:
    first = await outcome_sequence(session, seed=42)
    second = await outcome_sequence(session, seed=42)
    other = await outcome_sequence(session, seed=43)
    assert first == second
    assert first != other
    assert {"503", "reset", "404"} <= set(first)
    assert first.count("500") <= 3


async def test_faults_steered_over_http(emu: Emulator, session: aiohttp.ClientSession) -> None:
    rules = [{"action": "ListAssets", "kind": "http_error", "status": 504, "max_count": 1}]
    async with session.post(f"{emu.url}/_emulator/faults", json=rules) as resp:
        assert resp.status == 200
        assert (await resp.json())["rules"][0]["status"] == 504
    assert (await ark(session, emu, "ListAssets", {}))[0] == 504
    async with session.get(f"{emu.url}/_emulator/faults") as resp:
        assert (await resp.json())["fired"] == [1]
    async with session.post(f"{emu.url}/_emulator/faults", json=[{"kind": "explode"}]) as resp:
        assert resp.status == 400
    async with session.get(f"{emu.url}/_emulator/config") as resp:
        cfg = await resp.json()
    assert cfg["faults"][0]["status"] == 504
    assert all(set(a) == {"name", "access_key"} for a in cfg["accounts"])
    assert emu.account.secret_key not in str(cfg)
    assert emu.account.api_key not in str(cfg)


async def test_live_config_and_clock_over_http(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{emu.url}/_emulator/config", json={"time_scale": 5}) as resp:
        assert resp.status == 200
        assert (await resp.json())["time_scale"] == 5
    assert emu.config.time_scale == 5
    bad_changes: list[object] = [
        {"time_scale": -1},
        {"accounts": []},
        {"fetch_allowlist": ["evil:80"]},
        [1],
    ]
    for bad in bad_changes:
        async with session.post(f"{emu.url}/_emulator/config", json=bad) as resp:
            assert resp.status == 400, bad
    assert emu.config.fetch_allowlist == ()
    group_id = await new_group(session, emu)
    before = result(await ark(session, emu, "GetAssetGroup", {"Id": group_id}))["UpdateTime"]
    async with session.post(f"{emu.url}/_emulator/advance", json={"seconds": 7200}) as resp:
        assert resp.status == 200
    await ark(session, emu, "UpdateAssetGroup", {"Id": group_id, "Name": "later"})
    after = result(await ark(session, emu, "GetAssetGroup", {"Id": group_id}))["UpdateTime"]
    assert after[:13] != before[:13]  # two hours later
    async with session.post(f"{emu.url}/_emulator/advance", json={"seconds": -1}) as resp:
        assert resp.status == 400


async def test_content_downloads_can_fail_too(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"\x89PNG\r\n\x1a\n" + bytes(100), filename="x.png")
    async with session.post(
        emu.chenyu_url + "/assets", data=form, headers=bearer(emu.account)
    ) as r:
        signed = (await r.json())["data"]["signed_url"]
    # aiohttp retries an idempotent request once after a reset: reset both attempts
    emu.set_faults([FaultRule(family="content", kind="reset", phase="after", max_count=2)])
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(signed) as resp:
            await resp.read()
    emu.set_faults([FaultRule(family="content", action="GetContent", status=500, max_count=1)])
    async with session.get(signed) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"] == "InternalError"
    async with session.get(signed) as resp:
        assert resp.status == 200
