"""The official Ark endpoint of the emulator: envelopes, fields, errors, paging, auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from emulator_kit import (
    ASSET_ID,
    GROUP_ID,
    OTHER,
    RFC3339,
    ark,
    ark_get,
    emu,
    error_code,
    new_asset,
    new_group,
    result,
    session,
    wait_status,
)
from yarl import URL

from chenyu_assets.emulator import Account, Emulator

pytestmark = pytest.mark.anyio
__all__ = ["emu", "session"]  # fixtures

METADATA_KEYS = {"RequestId", "Action", "Version", "Service", "Region"}
GROUP_KEYS = {"Id", "Name", "Description", "GroupType", "ProjectName", "CreateTime", "UpdateTime"}
ASSET_KEYS = {
    "Id",
    "Name",
    "URL",
    "AssetType",
    "GroupId",
    "Status",
    "ProjectName",
    "CreateTime",
    "UpdateTime",
}


def check_metadata(body: dict[str, Any], action: str, region: str = "cn-beijing") -> None:
    md = body["ResponseMetadata"]
    assert set(md) == METADATA_KEYS
    assert md["Action"] == action
    assert md["Version"] == "2024-01-01"
    assert md["Service"] == "ark"
    assert md["Region"] == region
    assert len(md["RequestId"]) == 34


async def test_all_ten_actions_envelopes_and_fields(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, body = await ark(
        session, emu, "CreateAssetGroup", {"Name": "hero", "Description": "d", "GroupType": "AIGC"}
    )
    assert status == 200
    check_metadata(body, "CreateAssetGroup")
    assert set(body) == {"ResponseMetadata", "Result"}
    group_id = body["Result"]["Id"]
    assert GROUP_ID.fullmatch(group_id)

    status, body = await ark(session, emu, "GetAssetGroup", {"Id": group_id})
    check_metadata(body, "GetAssetGroup")
    group = body["Result"]
    assert set(group) == GROUP_KEYS
    assert group["Name"] == "hero"
    assert group["Description"] == "d"
    assert group["GroupType"] == "AIGC"
    assert group["ProjectName"] == "default"
    assert RFC3339.fullmatch(group["CreateTime"])
    assert RFC3339.fullmatch(group["UpdateTime"])

    listed = result(await ark(session, emu, "ListAssetGroups", {}))
    assert set(listed) == {"Items", "TotalCount", "PageNumber", "PageSize"}
    assert listed["TotalCount"] == 1
    assert listed["Items"][0] == group

    assert result(await ark(session, emu, "UpdateAssetGroup", {"Id": group_id, "Name": "h2"})) == {}

    asset_id = result(
        await ark(
            session,
            emu,
            "CreateAsset",
            {"GroupId": group_id, "URL": emu.media_url(), "AssetType": "Image", "Name": "n"},
        )
    )["Id"]
    assert ASSET_ID.fullmatch(asset_id)
    status, body = await ark(session, emu, "GetAsset", {"Id": asset_id})
    check_metadata(body, "GetAsset")
    asset = body["Result"]
    assert set(asset) == ASSET_KEYS
    assert asset["Status"] == "Processing"
    assert asset["GroupId"] == group_id
    asset = await wait_status(session, emu, asset_id)
    assert asset["Status"] == "Active"
    assert asset["URL"].startswith(emu.url + f"/ark/assets/{asset_id}/content?expires=")

    listed = result(await ark(session, emu, "ListAssets", {"Filter": {"GroupIds": [group_id]}}))
    assert listed["TotalCount"] == 1
    assert set(listed["Items"][0]) == ASSET_KEYS

    assert result(await ark(session, emu, "UpdateAsset", {"Id": asset_id, "Name": "m"})) == {}
    assert result(await ark(session, emu, "GetAsset", {"Id": asset_id}))["Name"] == "m"
    assert result(await ark(session, emu, "DeleteAsset", {"Id": asset_id})) == {}
    assert error_code(await ark(session, emu, "GetAsset", {"Id": asset_id})) == (
        404,
        "NotFound.asset_id",
    )
    assert result(await ark(session, emu, "DeleteAssetGroup", {"Id": group_id})) == {}
    assert error_code(await ark(session, emu, "GetAssetGroup", {"Id": group_id})) == (
        404,
        "NotFound.group_id",
    )


async def test_asset_content_url_is_signed(emu: Emulator, session: aiohttp.ClientSession) -> None:
    group_id = await new_group(session, emu)
    asset = await wait_status(session, emu, await new_asset(session, emu, group_id))
    async with session.get(asset["URL"]) as resp:
        assert resp.status == 200
        assert (await resp.read()).startswith(b"\x89PNG")
    url = URL(asset["URL"])
    forged = url.update_query(signature="0" * 64)
    async with session.get(forged) as resp:
        assert resp.status == 403


async def test_byteplus_region_is_echoed(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, body = await ark(session, emu, "ListAssets", {"PageSize": 10}, region="ap-southeast-1")
    assert status == 200
    check_metadata(body, "ListAssets", region="ap-southeast-1")


@pytest.mark.parametrize(
    ("action", "version"),
    [("NoSuchAction", "2024-01-01"), ("GetAsset", "2023-01-01"), ("", "2024-01-01")],
)
async def test_unknown_action_or_version(
    emu: Emulator, session: aiohttp.ClientSession, action: str, version: str
) -> None:
    reply = await ark(session, emu, action, {}, version=version)
    assert error_code(reply) == (404, "InvalidActionOrVersion")
    reply = await ark(session, emu, action, {}, version=version, sign=False)
    assert error_code(reply) == (404, "InvalidActionOrVersion")


async def test_authentication_errors(emu: Emulator, session: aiohttp.ClientSession) -> None:
    assert error_code(await ark(session, emu, "ListAssets", {}, sign=False)) == (
        401,
        "MissingAuthenticationToken",
    )
    assert error_code(await ark(session, emu, "ListAssets", {}, tamper="signature")) == (
        401,
        "SignatureDoesNotMatch",
    )
    assert error_code(await ark(session, emu, "ListAssets", {}, tamper="body")) == (
        401,
        "SignatureDoesNotMatch",
    )
    stranger = Account(name="x", access_key="AKLTUNKNOWN", secret_key="s", api_key="k")
    assert error_code(await ark(session, emu, "ListAssets", {}, account=stranger)) == (
        401,
        "InvalidAccessKey",
    )
    wrong_secret = Account(name="demo", access_key=emu.account.access_key, secret_key="nope")
    assert error_code(await ark(session, emu, "ListAssets", {}, account=wrong_secret)) == (
        401,
        "SignatureDoesNotMatch",
    )
    skewed = datetime.now(UTC) - timedelta(hours=1)
    assert error_code(await ark(session, emu, "ListAssets", {}, now=skewed)) == (
        400,
        "InvalidTimestamp",
    )
    assert error_code(await ark(session, emu, "ListAssets", {}, region="us-east-1")) == (
        401,
        "InvalidAuthorization",
    )
    # Bearer keys are not accepted on the official endpoint
    url = URL(emu.url).with_query(Action="ListAssets", Version="2024-01-01")
    headers = {"Authorization": f"Bearer {emu.account.api_key}"}
    async with session.post(url, json={}, headers=headers) as resp:
        assert resp.status == 401
    audit = emu.audit()
    assert all(r.account is None for r in audit.requests)
    assert audit.count("ListAssets", 401) >= 5


async def test_clock_offset_and_skew_are_configurable(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.config.clock_offset_seconds = 3600
    assert error_code(await ark(session, emu, "ListAssets", {})) == (400, "InvalidTimestamp")
    ahead = datetime.now(UTC) + timedelta(seconds=3600)
    assert (await ark(session, emu, "ListAssets", {}, now=ahead))[0] == 200
    emu.config.clock_offset_seconds = 0
    emu.config.max_skew_seconds = 10
    slightly_old = datetime.now(UTC) - timedelta(seconds=60)
    assert error_code(await ark(session, emu, "ListAssets", {}, now=slightly_old)) == (
        400,
        "InvalidTimestamp",
    )


@pytest.mark.parametrize(
    ("action", "body", "code"),
    [
        ("CreateAssetGroup", {}, "MissingParameter.Name"),
        ("CreateAssetGroup", {"Name": "x" * 65}, "InvalidParameter.Name"),
        ("CreateAssetGroup", {"Name": ""}, "InvalidParameter.Name"),
        ("CreateAssetGroup", {"Name": 5}, "InvalidParameter.Name"),
        (
            "CreateAssetGroup",
            {"Name": "x", "Description": "d" * 301},
            "InvalidParameter.Description",
        ),
        ("CreateAssetGroup", {"Name": "x", "GroupType": "aigc"}, "InvalidParameter.GroupType"),
        ("CreateAssetGroup", {"Name": "x", "ProjectName": ""}, "InvalidParameter.ProjectName"),
        ("GetAssetGroup", {}, "MissingParameter.Id"),
        ("UpdateAssetGroup", {"Name": "x"}, "MissingParameter.Id"),
        ("DeleteAssetGroup", {}, "MissingParameter.Id"),
        (
            "CreateAsset",
            {"URL": "https://e.com/a.png", "AssetType": "Image"},
            "MissingParameter.GroupId",
        ),
        ("CreateAsset", {"GroupId": "g", "AssetType": "Image"}, "MissingParameter.URL"),
        (
            "CreateAsset",
            {"GroupId": "g", "URL": "https://e.com/a.png"},
            "MissingParameter.AssetType",
        ),
        (
            "CreateAsset",
            {"GroupId": "g", "URL": "https://e.com/a", "AssetType": "image"},
            "InvalidParameter.AssetType",
        ),
        (
            "CreateAsset",
            {"GroupId": "g", "URL": "data:image/png;base64,AAAA", "AssetType": "Image"},
            "InvalidParameter.URL",
        ),
        (
            "CreateAsset",
            {"GroupId": "g", "URL": "ftp://e.com/a.png", "AssetType": "Image"},
            "InvalidParameter.URL",
        ),
        (
            "CreateAsset",
            {"GroupId": "g", "URL": "file:///etc/passwd", "AssetType": "Image"},
            "InvalidParameter.URL",
        ),
        (
            "CreateAsset",
            {"GroupId": "g", "URL": "https://e.com/a", "AssetType": "Image", "Name": "n" * 65},
            "InvalidParameter.Name",
        ),
        (
            "CreateAsset",
            {
                "GroupId": "group-20260101000000-zzzzz",
                "URL": "https://e.com/a",
                "AssetType": "Image",
            },
            "NotFound.group_id",
        ),
        ("GetAsset", {}, "MissingParameter.Id"),
        ("UpdateAsset", {"Name": "x"}, "MissingParameter.Id"),
        ("DeleteAsset", {"Id": "asset-20260101000000-zzzzz"}, "NotFound.asset_id"),
        ("ListAssets", {"PageSize": 101}, "InvalidParameter.PageSize"),
        ("ListAssets", {"PageSize": 0}, "InvalidParameter.PageSize"),
        ("ListAssets", {"PageNumber": 0}, "InvalidParameter.PageNumber"),
        ("ListAssets", {"PageNumber": "1"}, "InvalidParameter.PageNumber"),
        ("ListAssets", {"SortBy": "Name"}, "InvalidParameter.SortBy"),
        ("ListAssets", {"SortOrder": "desc"}, "InvalidParameter.SortOrder"),
        ("ListAssets", {"Filter": {"Statuses": ["Done"]}}, "InvalidParameter.Filter.Statuses"),
        ("ListAssets", {"Filter": {"GroupIds": "g"}}, "InvalidParameter.Filter.GroupIds"),
        ("ListAssets", {"Filter": []}, "InvalidParameter.Filter"),
        ("ListAssets", {"PageSize": 10, "MaxResults": 10}, "InvalidParameter.NextToken"),
        ("ListAssets", {"NextToken": "garbage!"}, "InvalidParameter.NextToken"),
        ("ListAssetGroups", {"SortBy": "GroupId"}, "InvalidParameter.SortBy"),
        (
            "ListAssetGroups",
            {"Filter": {"GroupType": "Other"}},
            "InvalidParameter.Filter.GroupType",
        ),
    ],
)
async def test_parameter_errors(
    emu: Emulator, session: aiohttp.ClientSession, action: str, body: dict[str, Any], code: str
) -> None:
    assert error_code(await ark(session, emu, action, body)) == (
        400 if "Param" in code else 404,
        code,
    )


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
async def test_body_must_be_a_json_object(
    emu: Emulator, session: aiohttp.ClientSession, raw: bytes
) -> None:
    assert error_code(await ark(session, emu, "ListAssets", raw_body=raw)) == (
        400,
        "InvalidParameter",
    )


async def test_not_found_across_accounts_and_projects(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    group_id = await new_group(session, emu, "p-group", ProjectName="p1")
    asset_id = await new_asset(session, emu, group_id, ProjectName="p1")
    assert result(await ark(session, emu, "GetAssetGroup", {"Id": group_id, "ProjectName": "p1"}))
    assert result(await ark(session, emu, "GetAsset", {"Id": asset_id, "ProjectName": "p1"}))
    # default project: not found
    assert error_code(await ark(session, emu, "GetAssetGroup", {"Id": group_id}))[1] == (
        "NotFound.group_id"
    )
    assert error_code(await ark(session, emu, "GetAsset", {"Id": asset_id}))[1] == (
        "NotFound.asset_id"
    )
    assert error_code(
        await ark(
            session,
            emu,
            "CreateAsset",
            {"GroupId": group_id, "URL": emu.media_url(), "AssetType": "Image"},
        )
    ) == (404, "NotFound.group_id")
    # another account: not found even with the right project, and lists are empty
    for action, body, code in [
        ("GetAssetGroup", {"Id": group_id, "ProjectName": "p1"}, "NotFound.group_id"),
        ("DeleteAssetGroup", {"Id": group_id, "ProjectName": "p1"}, "NotFound.group_id"),
        ("GetAsset", {"Id": asset_id, "ProjectName": "p1"}, "NotFound.asset_id"),
        ("UpdateAsset", {"Id": asset_id, "ProjectName": "p1", "Name": "x"}, "NotFound.asset_id"),
    ]:
        assert error_code(await ark(session, emu, action, body, account=OTHER)) == (404, code)
    listed = result(await ark(session, emu, "ListAssets", {"ProjectName": "p1"}, account=OTHER))
    assert listed["TotalCount"] == 0
    listed = result(
        await ark(session, emu, "ListAssets", {"Filter": {"GroupIds": [group_id]}}, account=OTHER)
    )
    assert listed["TotalCount"] == 0


async def test_group_paging_filters_and_sorting(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    ids = []
    for i in range(25):
        kind = "LivenessFace" if i % 5 == 0 else "AIGC"
        ids.append(await new_group(session, emu, f"Team-{i:02d}", GroupType=kind))
    page1 = result(await ark(session, emu, "ListAssetGroups", {"PageSize": 10}))
    assert page1["TotalCount"] == 25
    assert page1["PageNumber"] == 1
    assert page1["PageSize"] == 10
    assert [g["Id"] for g in page1["Items"]] == ids[::-1][:10]  # Desc by CreateTime
    page3 = result(await ark(session, emu, "ListAssetGroups", {"PageSize": 10, "PageNumber": 3}))
    assert [g["Id"] for g in page3["Items"]] == ids[::-1][20:]
    page9 = result(await ark(session, emu, "ListAssetGroups", {"PageNumber": 9}))
    assert page9["Items"] == []
    assert page9["TotalCount"] == 25
    asc = result(await ark(session, emu, "ListAssetGroups", {"SortOrder": "Asc", "PageSize": 100}))
    assert [g["Id"] for g in asc["Items"]] == ids
    by_name = result(
        await ark(session, emu, "ListAssetGroups", {"Filter": {"Name": "team-1"}, "PageSize": 100})
    )
    assert sorted(g["Name"] for g in by_name["Items"]) == [f"Team-1{i}" for i in range(10)]
    by_ids = result(
        await ark(session, emu, "ListAssetGroups", {"Filter": {"GroupIds": [*ids[:3], "nope"]}})
    )
    assert {g["Id"] for g in by_ids["Items"]} == set(ids[:3])
    faces = result(
        await ark(session, emu, "ListAssetGroups", {"Filter": {"GroupType": "LivenessFace"}})
    )
    assert faces["TotalCount"] == 5
    # UpdateTime sorting: touch the oldest group, it comes first
    emu.advance_time(5)
    await ark(session, emu, "UpdateAssetGroup", {"Id": ids[0], "Description": "touched"})
    by_update = result(await ark(session, emu, "ListAssetGroups", {"SortBy": "UpdateTime"}))
    assert by_update["Items"][0]["Id"] == ids[0]
    # MaxResults / NextToken paging walks every group exactly once
    seen: list[str] = []
    token = ""
    while True:
        body: dict[str, Any] = {"MaxResults": 7}
        if token:
            body["NextToken"] = token
        chunk = result(await ark(session, emu, "ListAssetGroups", body))
        seen += [g["Id"] for g in chunk["Items"]]
        token = chunk["NextToken"]
        if not token:
            break
    assert seen == ids[::-1]


async def test_asset_filters_sorting_and_get_query_style(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    g1 = await new_group(session, emu, "one")
    g2 = await new_group(session, emu, "two", GroupType="LivenessFace")
    good = [await new_asset(session, emu, g1, name=f"hero a{i}") for i in range(3)]
    bad = await new_asset(session, emu, g2, emu.media_url("png", 2000, 400), name="wide b")
    for asset_id in [*good, bad]:
        await wait_status(session, emu, asset_id)
    active = result(await ark(session, emu, "ListAssets", {"Filter": {"Statuses": ["Active"]}}))
    assert {a["Id"] for a in active["Items"]} == set(good)
    failed = result(await ark(session, emu, "ListAssets", {"Filter": {"Statuses": ["Failed"]}}))
    assert [a["Id"] for a in failed["Items"]] == [bad]
    assert failed["Items"][0]["Error"]["Code"] == "InvalidParameter.ImageRatio"
    faces = result(await ark(session, emu, "ListAssets", {"Filter": {"GroupType": "LivenessFace"}}))
    assert [a["Id"] for a in faces["Items"]] == [bad]
    named = result(await ark(session, emu, "ListAssets", {"Filter": {"Name": "HERO"}}))
    assert named["TotalCount"] == 3
    by_group = result(
        await ark(session, emu, "ListAssets", {"SortBy": "GroupId", "SortOrder": "Asc"})
    )
    groups = [a["GroupId"] for a in by_group["Items"]]
    assert groups == sorted(groups)
    # V3 style: GET with the parameters flattened into the query string
    status, body = await ark_get(
        session,
        emu,
        {
            "Action": "ListAssets",
            "Version": "2024-01-01",
            "Filter.Name": "hero a",
            "Filter.GroupIds.1": g1,
            "PageSize": "2",
        },
    )
    assert status == 200, body
    assert body["Result"]["TotalCount"] == 3
    assert len(body["Result"]["Items"]) == 2


async def test_delete_group_removes_its_assets_and_updates_touch_only_allowed_fields(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    g1 = await new_group(session, emu, "one", Description="first")
    asset_ids = [await new_asset(session, emu, g1, name=f"x{i}") for i in range(3)]
    before = result(await ark(session, emu, "GetAssetGroup", {"Id": g1}))
    emu.advance_time(2)
    assert (
        result(
            await ark(
                session,
                emu,
                "UpdateAssetGroup",
                {
                    "Id": g1,
                    "Name": "renamed",
                    "GroupType": "LivenessFace",
                    "ProjectName": "default",
                },
            )
        )
        == {}
    )
    after = result(await ark(session, emu, "GetAssetGroup", {"Id": g1}))
    assert after["Name"] == "renamed"
    assert after["Description"] == "first"
    assert after["GroupType"] == "AIGC"
    assert after["CreateTime"] == before["CreateTime"]
    assert after["UpdateTime"] > before["UpdateTime"]
    assert (
        result(
            await ark(
                session,
                emu,
                "UpdateAsset",
                {"Id": asset_ids[0], "Name": "y", "AssetType": "Video", "GroupId": "other"},
            )
        )
        == {}
    )
    changed = result(await ark(session, emu, "GetAsset", {"Id": asset_ids[0]}))
    assert changed["Name"] == "y"
    assert changed["AssetType"] == "Image"
    assert changed["GroupId"] == g1
    assert result(await ark(session, emu, "DeleteAssetGroup", {"Id": g1})) == {}
    for asset_id in asset_ids:
        assert error_code(await ark(session, emu, "GetAsset", {"Id": asset_id}))[0] == 404
    assert result(await ark(session, emu, "ListAssets", {}))["TotalCount"] == 0
    assert emu.audit().assets == []


def official_sdk_calls(emu: Emulator) -> list[Any]:
    """Drive the emulator with the official volcengine-python-sdk (blocking; run in a thread)."""
    import volcenginesdkcore  # type: ignore[import-untyped]
    from volcenginesdkcore.rest import ApiException  # type: ignore[import-untyped]
    from volcenginesdkcore.universal import (  # type: ignore[import-untyped]
        UniversalApi,
        UniversalInfo,
    )

    conf = volcenginesdkcore.Configuration()
    conf.ak, conf.sk, conf.region = emu.account.access_key, emu.account.secret_key, "cn-beijing"
    conf.host, conf.scheme = emu.url.removeprefix("http://"), "http"
    api = UniversalApi(volcenginesdkcore.ApiClient(conf))

    def call(action: str, body: dict[str, Any]) -> Any:
        info = UniversalInfo(
            method="POST",
            service="ark",
            version="2024-01-01",
            action=action,
            content_type="application/json",
        )
        return api.do_call(info, body)

    group = call("CreateAssetGroup", {"Name": "official sdk", "GroupType": "AIGC"})
    asset = call(
        "CreateAsset", {"GroupId": group["Id"], "URL": emu.media_url(), "AssetType": "Image"}
    )
    listed = call("ListAssets", {"Filter": {"GroupIds": [group["Id"]]}, "PageSize": 5})
    try:
        call("GetAsset", {"Id": "asset-20260101000000-zzzzz"})
    except ApiException as exc:
        missing = (exc.status, exc.body)
    return [group, asset, listed, missing]


async def test_official_volcengine_sdk_is_a_client(emu: Emulator) -> None:
    import anyio

    group, asset, listed, missing = await anyio.to_thread.run_sync(official_sdk_calls, emu)
    assert GROUP_ID.fullmatch(group["Id"])
    assert ASSET_ID.fullmatch(asset["Id"])
    assert listed["TotalCount"] == 1
    assert listed["Items"][0]["Id"] == asset["Id"]
    assert missing[0] == 404
    assert "NotFound.asset_id" in missing[1]
