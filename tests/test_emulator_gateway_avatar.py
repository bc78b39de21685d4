"""The overseas gateway and the private-avatar proxy on the emulator."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import pytest
from emulator_kit import (
    ASSET_ID,
    GROUP_ID,
    MODEL,
    OTHER,
    RFC3339,
    ark,
    bearer,
    emu,
    result,
    session,
)

from chenyu_assets.emulator import Emulator

pytestmark = pytest.mark.anyio
__all__ = ["emu", "session"]

GATEWAY_GET_KEYS = {
    "Id",
    "Status",
    "AssetType",
    "Name",
    "URL",
    "CreateTime",
    "UpdateTime",
    "base_resp",
}


async def gw(
    session: aiohttp.ClientSession,
    emu: Emulator,
    action: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    hdrs = bearer(emu.account) if headers is None else headers
    async with session.post(f"{emu.gateway_url}/{action}", json=body, headers=hdrs) as resp:
        return resp.status, await resp.json()


async def av(
    session: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    hdrs = bearer(emu.account) if headers is None else headers
    url = f"{emu.avatar_url}/v1/private-avatar{path}"
    async with session.request(method, url, json=body, params=params, headers=hdrs) as resp:
        return resp.status, await resp.json()


async def test_gateway_create_get_poll(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, body = await gw(
        session,
        emu,
        "CreateAsset",
        {"Name": "test asset", "URL": emu.media_url("jpeg", 800, 1200), "AssetType": "Image"},
    )
    assert status == 200
    assert set(body) == {"Id", "base_resp"}
    assert body["base_resp"] == {"status_code": 0, "status_msg": "success"}
    asset_id = body["Id"]
    assert ASSET_ID.fullmatch(asset_id)
    with anyio.fail_after(30):  # hang guard
        while True:
            status, got = await gw(session, emu, "GetAsset", {"Id": asset_id})
            assert status == 200
            assert got["base_resp"]["status_code"] == 0
            if got["Status"] != "Processing":
                break
            await anyio.sleep(0.02)
    assert set(got) == GATEWAY_GET_KEYS
    assert got["Status"] == "Active"
    assert got["AssetType"] == "Image"
    assert got["Name"] == "test asset"
    assert RFC3339.fullmatch(got["CreateTime"])
    assert got["URL"].startswith(emu.url)
    # the same asset is visible through the official endpoint (one store per account)
    official = result(await ark(session, emu, "GetAsset", {"Id": asset_id}))
    assert official["Status"] == "Active"
    group = result(await ark(session, emu, "GetAssetGroup", {"Id": official["GroupId"]}))
    assert group["Name"] == "gateway-default"
    # a second create reuses the implicit group
    _, again = await gw(session, emu, "CreateAsset", {"URL": emu.media_url(), "AssetType": "Image"})
    second = result(await ark(session, emu, "GetAsset", {"Id": again["Id"]}))
    assert second["GroupId"] == official["GroupId"]


async def test_gateway_failed_asset_carries_error(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, body = await gw(
        session, emu, "CreateAsset", {"URL": emu.media_url("html"), "AssetType": "Image"}
    )
    with anyio.fail_after(30):  # hang guard
        while (got := (await gw(session, emu, "GetAsset", {"Id": body["Id"]}))[1])[
            "Status"
        ] == "Processing":
            await anyio.sleep(0.02)
    assert got["Status"] == "Failed"
    assert got["Error"]["Code"] == "InvalidParameter.UnsupportedMediaFormat"


@pytest.mark.parametrize(
    ("action", "body", "headers", "status", "code"),
    [
        ("CreateAsset", {"AssetType": "Image"}, None, 400, "MissingParameter.URL"),
        ("CreateAsset", {"URL": "https://e.com/a.png"}, None, 400, "MissingParameter.AssetType"),
        ("CreateAsset", {"URL": "data:x", "AssetType": "Image"}, None, 400, "InvalidParameter.URL"),
        ("GetAsset", {}, None, 400, "MissingParameter.Id"),
        ("GetAsset", {"Id": "asset-20260101000000-zzzzz"}, None, 404, "NotFound.asset_id"),
        ("GetAsset", {"Id": "x"}, {}, 401, "MissingAuthenticationToken"),
        ("GetAsset", {"Id": "x"}, {"Authorization": "Bearer wrong"}, 401, "InvalidAuthorization"),
        ("Explode", {}, None, 404, "InvalidActionOrVersion"),
        ("GetAsset", [1], None, 400, "InvalidParameter"),
    ],
)
async def test_gateway_errors(
    emu: Emulator,
    session: aiohttp.ClientSession,
    action: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    got_status, got = await gw(session, emu, action, body, headers)
    assert got_status == status
    assert set(got) == {"base_resp"}
    assert got["base_resp"]["status_code"] == status
    assert got["base_resp"]["status_msg"].startswith(code + ": ")


async def test_gateway_serves_the_other_actions_flat(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    _, made = await gw(session, emu, "CreateAssetGroup", {"Name": "flat"})
    assert GROUP_ID.fullmatch(made["Id"])
    assert made["base_resp"]["status_code"] == 0
    _, listed = await gw(session, emu, "ListAssetGroups", {"PageSize": 5})
    assert listed["TotalCount"] == 1
    assert listed["Items"][0]["Name"] == "flat"
    _, created = await gw(
        session,
        emu,
        "CreateAsset",
        {"GroupId": made["Id"], "URL": emu.media_url(), "AssetType": "Image"},
    )
    _, assets = await gw(session, emu, "ListAssets", {"Filter": {"GroupIds": [made["Id"]]}})
    assert [a["Id"] for a in assets["Items"]] == [created["Id"]]


async def test_gateway_accounts_are_isolated(emu: Emulator, session: aiohttp.ClientSession) -> None:
    _, made = await gw(session, emu, "CreateAsset", {"URL": emu.media_url(), "AssetType": "Image"})
    status, got = await gw(session, emu, "GetAsset", {"Id": made["Id"]}, bearer(OTHER))
    assert status == 404
    assert got["base_resp"]["status_code"] == 404


async def test_avatar_endpoints(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, body = await av(
        session, emu, "POST", "/groups", {"model": MODEL, "Name": "avatar", "GroupType": "AIGC"}
    )
    assert status == 200
    assert set(body) == {"ResponseMetadata", "Result"}
    md = body["ResponseMetadata"]
    assert md["Action"] == "CreateAssetGroup"
    assert md["Service"] == "ark"
    assert md["Version"] == "2024-01-01"
    assert md["Region"] == "cn-beijing"
    group_id = body["Result"]["Id"]
    assert GROUP_ID.fullmatch(group_id)

    _, listed = await av(
        session, emu, "POST", "/groups/list", {"model": MODEL, "Filter": {}, "PageNumber": 1}
    )
    assert listed["Result"]["TotalCount"] == 1

    _, made = await av(
        session,
        emu,
        "POST",
        "/assets",
        {
            "model": "doubao-seedance-2-0-fast-260128",
            "GroupId": group_id,
            "URL": emu.media_url("jpeg", 800, 1200),
            "AssetType": "Image",
            "Name": "full-body",
        },
    )
    asset_id = made["Result"]["Id"]
    assert made["ResponseMetadata"]["Action"] == "CreateAsset"
    assert ASSET_ID.fullmatch(asset_id)

    with anyio.fail_after(30):  # hang guard
        while True:
            status, got = await av(
                session, emu, "GET", f"/assets/{asset_id}", params={"model": MODEL}
            )
            assert status == 200
            assert got["ResponseMetadata"]["Action"] == "GetAsset"
            if got["Result"]["Status"] != "Processing":
                break
            await anyio.sleep(0.02)
    assert got["Result"]["Status"] == "Active"

    _, assets = await av(
        session,
        emu,
        "POST",
        "/assets/list",
        {
            "model": MODEL,
            "Filter": {"GroupIds": [group_id]},
            "PageNumber": 1,
            "PageSize": 10,
            "SortBy": "CreateTime",
            "SortOrder": "Asc",
        },
    )
    assert [a["Id"] for a in assets["Result"]["Items"]] == [asset_id]

    status, patched = await av(
        session, emu, "PATCH", f"/assets/{asset_id}", {"model": MODEL, "Id": asset_id, "Name": "n2"}
    )
    assert status == 200
    assert patched["Result"] == {}
    assert result(await ark(session, emu, "GetAsset", {"Id": asset_id}))["Name"] == "n2"

    status, deleted = await av(
        session, emu, "DELETE", f"/groups/{group_id}", params={"model": MODEL}
    )
    assert status == 200
    assert deleted["ResponseMetadata"]["Action"] == "DeleteAssetGroup"
    status, gone = await av(session, emu, "GET", f"/assets/{asset_id}", params={"model": MODEL})
    assert status == 404
    assert gone["ResponseMetadata"]["Error"]["Code"] == "NotFound.asset_id"


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "status", "code"),
    [
        ("POST", "/groups", {"Name": "x"}, None, 400, "MissingParameter.model"),
        ("POST", "/groups", {"model": "gpt-4", "Name": "x"}, None, 400, "InvalidParameter.model"),
        ("GET", "/assets/asset-20260101000000-zzzzz", None, None, 400, "MissingParameter.model"),
        (
            "GET",
            "/assets/asset-20260101000000-zzzzz",
            None,
            {"model": MODEL},
            404,
            "NotFound.asset_id",
        ),
        (
            "DELETE",
            "/groups/group-20260101000000-zzzzz",
            None,
            {"model": "x"},
            400,
            "InvalidParameter.model",
        ),
        (
            "PATCH",
            "/assets/asset-20260101000000-zzzzz",
            {"model": MODEL, "Id": "asset-other", "Name": "n"},
            None,
            400,
            "InvalidParameter.Id",
        ),
        (
            "POST",
            "/assets",
            {"model": MODEL, "URL": "https://e.com/a", "AssetType": "Image"},
            None,
            400,
            "MissingParameter.GroupId",
        ),
        (
            "POST",
            "/groups/list",
            {"model": MODEL, "PageSize": 500},
            None,
            400,
            "InvalidParameter.PageSize",
        ),
        ("POST", "/nothing/here", {"model": MODEL}, None, 404, "InvalidActionOrVersion"),
        ("PUT", "/assets", {"model": MODEL}, None, 404, "InvalidActionOrVersion"),
    ],
)
async def test_avatar_errors(
    emu: Emulator,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    params: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    got_status, got = await av(session, emu, method, path, body, params=params)
    assert got_status == status
    assert "Result" not in got
    assert got["ResponseMetadata"]["Error"]["Code"] == code


async def test_avatar_requires_a_valid_bearer_key(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    body = {"model": MODEL, "Name": "x"}
    status, got = await av(session, emu, "POST", "/groups", body, headers={})
    assert status == 401
    assert got["ResponseMetadata"]["Error"]["Code"] == "MissingAuthenticationToken"
    status, got = await av(
        session, emu, "POST", "/groups", body, headers={"Authorization": "Bearer cy_nope"}
    )
    assert status == 401
    assert got["ResponseMetadata"]["Error"]["Code"] == "InvalidAuthorization"
