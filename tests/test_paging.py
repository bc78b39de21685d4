"""Paging fidelity (issue 13 point 7, api-reference §6): the emulator enforces the offset
limits and the exclusive cursor style; the SDK walks past them with ``MaxResults`` +
``NextToken``, keeps its bounds against hostile cursors, and sends ``Filter.GroupType``
whenever it knows the group's type.

The emulator runs on virtual time (the limiters' pacing of 250 listings costs nothing);
the hostile servers are our own raw HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chenyu_assets.ark import ArkClient
from chenyu_assets.emulator import Emulator, EmulatorConfig
from chenyu_assets.emulator.store import AssetRec
from chenyu_assets.errors import BadRequestError, PaginationError
from tests.test_hostile_servers import client as hostile_client
from tests.test_hostile_servers import envelope, hostile, http
from tests.vclock import emulator_clock, virtual


def _ark(emu: Emulator) -> ArkClient:
    acct = emu.account
    return ArkClient(access_key=acct.access_key, secret_key=acct.secret_key, base_url=emu.url)


def _fill(emu: Emulator, group_id: str, n: int) -> None:
    """``n`` Active assets straight into the emulator's store (no CreateAsset: fast)."""
    state = emu._running()
    now = state.clock.now()
    for i in range(n):
        state.store.add_asset(
            AssetRec(
                id=f"asset-bulk-{i:06d}",
                account=emu.account.name,
                project="default",
                group_id=group_id,
                name=f"bulk-{i}",
                source_url="https://example.com/x.png",
                asset_type="Image",
                status="Active",
                error_code=None,
                error_message=None,
                create_time=now + i * 1e-3,
                update_time=now + i * 1e-3,
            )
        )


@virtual
async def test_the_emulator_enforces_offset_limits_and_exclusive_styles() -> None:
    async with Emulator(EmulatorConfig(), clock=emulator_clock()) as emu, _ark(emu) as ark:
        group = await ark.create_asset_group(name="paging")
        _fill(emu, group, 5)
        filt = {"Filter": {"GroupIds": [group]}}
        ok, _ = await ark._call("ListAssets", {**filt, "PageNumber": 200, "PageSize": 100})
        assert ok["Items"] == []  # 20,000 exactly is allowed
        cases = [
            ("ListAssets", {"PageNumber": 201, "PageSize": 100}, "InvalidParameter.PageNumber"),
            ("ListAssets", {"PageNumber": 20_001, "PageSize": 1}, "InvalidParameter.PageNumber"),
            (
                "ListAssetGroups",
                {"PageNumber": 101, "PageSize": 100},
                "InvalidParameter.PageNumber",
            ),
            ("ListAssets", {"PageSize": 10, "MaxResults": 10}, "InvalidParameter.NextToken"),
            ("ListAssets", {"PageNumber": 1, "NextToken": "x"}, "InvalidParameter.NextToken"),
        ]
        for action, body, code in cases:
            with pytest.raises(BadRequestError) as info:
                await ark._call(action, body)
            assert info.value.code == code, (action, body)
        first, _ = await ark._call("ListAssets", {**filt, "MaxResults": 2})
        assert "TotalCount" not in first  # cursor answers carry none
        assert len(first["Items"]) == 2
        assert first["NextToken"]
        # an opaque token, bound to its query: another filter cannot reuse it
        with pytest.raises(BadRequestError, match="another query"):
            await ark._call("ListAssets", {"MaxResults": 2, "NextToken": first["NextToken"]})
        seen = [a["Id"] for a in first["Items"]]
        token = first["NextToken"]
        while token:
            page, _ = await ark._call("ListAssets", {**filt, "MaxResults": 2, "NextToken": token})
            seen += [a["Id"] for a in page["Items"]]
            token = page["NextToken"]
        assert sorted(seen) == [f"asset-bulk-{i:06d}" for i in range(5)]
        offset, _ = await ark._call("ListAssets", {**filt, "PageSize": 2})
        assert offset["TotalCount"] == 5


@virtual
async def test_the_sdk_walks_25000_assets_past_the_offset_limit() -> None:
    async with Emulator(EmulatorConfig(), clock=emulator_clock()) as emu, _ark(emu) as ark:
        group = await ark.create_asset_group(name="big")
        _fill(emu, group, 25_000)
        before = emu.audit().count("ListAssets")
        ids = [a.id async for a in ark.list_assets(group_ids=[group])]
        assert len(ids) == 25_000
        assert len(set(ids)) == 25_000
        calls = emu.audit().count("ListAssets") - before
        assert calls == 1 + 250  # the offset page that showed TotalCount, then the cursor
        # offset only: refused locally before the server would refuse it
        with pytest.raises(ValueError, match="paging='cursor'"):
            await ark.list_assets(group_ids=[group], paging="offset", page_number=201)
        # one cursor page at a time, as a caller resuming a walk would do
        page = await ark.list_assets(group_ids=[group], paging="cursor")
        assert len(page.items) == 100
        assert page.next_token
        following = await ark.list_assets(
            group_ids=[group], paging="cursor", next_token=page.next_token
        )
        assert {a.id for a in following.items}.isdisjoint({a.id for a in page.items})


def _listing_server(pages: Any) -> Any:
    """A hostile ListAssets: ``pages(body)`` gives each answer's Result; bodies are kept."""
    bodies: list[dict[str, Any]] = []

    async def answer(writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        data = json.loads(body or b"{}")
        bodies.append(data)
        writer.write(http("200 OK", envelope("official", pages(data, head))))

    return answer, bodies


def _items(start: int, n: int) -> list[dict[str, Any]]:
    return [{"Id": f"id-{i}", "Name": f"n{i}", "Status": "Active"} for i in range(start, start + n)]


@pytest.mark.anyio
async def test_a_server_that_ignores_the_cursor_is_a_pagination_error() -> None:
    def pages(body: dict[str, Any], head: str) -> dict[str, Any]:
        return {"Items": _items(0, 100), "TotalCount": 50_000}  # never a NextToken

    answer, bodies = _listing_server(pages)
    async with hostile(answer) as server, hostile_client("official", server.url) as ark:
        with pytest.raises(PaginationError, match="does not page by NextToken"):
            _ = [a async for a in ark.list_assets(group_ids=["g"])]
    assert len(bodies) == 2
    assert "PageNumber" in bodies[0]
    assert "MaxResults" in bodies[1]
    assert "PageNumber" not in bodies[1]
    assert "NextToken" not in bodies[1]  # the first cursor page sends none


@pytest.mark.anyio
async def test_a_repeated_next_token_or_endless_empty_pages_end_the_walk() -> None:
    def repeating(body: dict[str, Any], head: str) -> dict[str, Any]:
        n = len(body.get("NextToken") or "")
        return {"Items": _items(n * 100, 100), "NextToken": "t"}  # the same token again

    answer, bodies = _listing_server(repeating)
    async with hostile(answer) as server, hostile_client("official", server.url) as ark:
        with pytest.raises(PaginationError, match="NextToken seen before"):
            _ = [a async for a in ark.list_assets(paging="cursor")]
    assert len(bodies) == 2

    def empty(body: dict[str, Any], head: str) -> dict[str, Any]:
        return {"Items": [], "NextToken": (body.get("NextToken") or "t") + "x"}  # always new

    answer, bodies = _listing_server(empty)
    async with hostile(answer) as server, hostile_client("official", server.url) as ark:
        with pytest.raises(PaginationError, match="empty pages in a row"):
            _ = [a async for a in ark.list_assets(paging="cursor")]
    assert len(bodies) == 11


@pytest.mark.anyio
async def test_group_type_is_sent_once_the_client_knows_it() -> None:
    def pages(body: dict[str, Any], head: str) -> dict[str, Any]:
        if "Action=CreateAssetGroup" in head:
            return {"Id": "assetgroup-20260101000000-abcde"}
        if "Action=ListAssetGroups" in head:
            return {"Items": [{"Id": "g-face", "Name": "f", "GroupType": "LivenessFace"}]}
        return {"Items": [], "TotalCount": 0}

    answer, bodies = _listing_server(pages)
    async with hostile(answer) as server, hostile_client("official", server.url) as ark:
        await ark.list_assets(group_ids=["assetgroup-20260101000000-abcde"])
        created = await ark.create_asset_group(name="x", group_type="AIGC")
        assert created == "assetgroup-20260101000000-abcde"  # any id shape is accepted
        await ark.list_assets(group_ids=[created])
        _ = [g async for g in ark.list_asset_groups(name="f")]
        await ark.list_assets(group_ids=["g-face"], statuses=["Active"])
        await ark.list_assets(group_ids=[created, "g-face"])  # two types: none is sent
    listings = [b for b in bodies if "Filter" in b]
    assert "GroupType" not in listings[0]["Filter"]  # not known yet
    assert listings[1]["Filter"]["GroupType"] == "AIGC"
    assert listings[3]["Filter"]["GroupType"] == "LivenessFace"
    assert "GroupType" not in listings[4]["Filter"]
