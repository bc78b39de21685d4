"""ArkClient (and the proxy through the shared typed methods) against the emulator.

Every action on every transport, paging, the error table of api-reference.md §2.4,
``wait_for_asset``'s three outcomes, project scoping, configuration from the environment,
STS tokens, models, and the official Volcengine SDK as a second client and signer.
Retry pacing, 429 pauses, ambiguous creates and log redaction live in test_engine.py.
"""

from __future__ import annotations

import inspect
import types
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from ark_kit import (
    NO_RETRY,
    TRANSPORTS,
    Stub,
    client,
    emu,
    flat,
    make_client,
    stub,
    transport,
    volc,
)
from emulator_kit import ASSET_ID, GROUP_ID, config, virtual_emulator
from vclock import virtual

from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets._core.signing import (
    Credentials,
    SignatureError,
    sign_request,
    verify_request,
)
from chenyu_assets.ark import ArkClient, ArkFamilyClient, official_endpoint
from chenyu_assets.emulator import Emulator, FaultRule
from chenyu_assets.errors import (
    APIError,
    AssetFailedError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InvalidReferenceError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    WaitTimeoutError,
)
from chenyu_assets.limits import ACTION_RATES
from chenyu_assets.models.ark import Asset, AssetGroup
from chenyu_assets.refs import parse_asset_reference

pytestmark = pytest.mark.anyio
__all__ = ["client", "emu", "stub", "transport"]  # fixtures

MISSING_ASSET = "asset-20260101000000-zzzzz"
MISSING_GROUP = "group-20260101000000-zzzzz"
OFFICIAL = ("volcengine", "byteplus")


# -- every action on every transport ------------------------------------------------------


async def test_every_action(transport: str, client: ArkFamilyClient, emu: Emulator) -> None:
    group_id = await client.create_asset_group(name="hero", description="d")
    assert type(group_id) is str
    assert GROUP_ID.fullmatch(group_id)
    if transport == "avatar":  # the proxy has no GetAssetGroup / UpdateAssetGroup
        with pytest.raises(ConfigurationError, match="GetAssetGroup"):
            await client.get_asset_group(group_id)
        with pytest.raises(ConfigurationError, match="UpdateAssetGroup"):
            await client.update_asset_group(group_id, name="hero2")
    else:
        group = await client.get_asset_group(group_id)
        assert isinstance(group, AssetGroup)
        assert (group.id, group.name, group.description) == (group_id, "hero", "d")
        assert group.group_type == "AIGC"
        assert group.request_id
        await client.update_asset_group(group_id, name="hero2", description="d2")
        group = await client.get_asset_group(group_id)
        assert (group.name, group.description) == ("hero2", "d2")
    groups = await client.list_asset_groups(group_ids=[group_id])
    assert [g.id for g in groups.items] == [group_id]
    assert groups.total_count == 1
    assert groups.request_id

    asset_id = await client.create_asset(
        group_id=group_id, url=emu.media_url("png", 800, 1200), name="a1"
    )
    assert type(asset_id) is str
    assert ASSET_ID.fullmatch(asset_id)
    asset = await client.get_asset(asset_id)
    assert asset.id == asset_id
    assert asset.request_id
    assert asset.status in ("Processing", "Active")
    asset = await client.wait_for_asset(asset_id, timeout=30, interval=0.02)
    assert asset.status == "Active"
    assert asset.asset_type == "Image"
    assert asset.url
    assert asset.reference == f"asset://{asset_id}"
    assert parse_asset_reference(asset.reference) == asset_id
    assert parse_asset_reference(f"Asset://{asset_id}") == asset_id

    page = await client.list_assets(group_ids=[group_id], statuses=["Active"])
    assert [a.id for a in page.items] == [asset_id]
    assert page.total_count == 1
    assert page.items[0].request_id == page.request_id

    await client.update_asset(asset_id, name="a2")
    assert (await client.get_asset(asset_id)).name == "a2"
    if transport == "avatar":  # nor DeleteAsset
        with pytest.raises(ConfigurationError, match="DeleteAsset"):
            await client.delete_asset(asset_id)
    else:
        await client.delete_asset(asset_id)
        with pytest.raises(NotFoundError) as info:
            await client.get_asset(asset_id)
        assert info.value.code == "NotFound.asset_id"
    await client.delete_asset_group(group_id)
    assert (await client.list_asset_groups(group_ids=[group_id])).total_count == 0
    audit = emu.audit()
    if transport == "avatar":  # the refused actions never reached the wire
        for action in ("GetAssetGroup", "UpdateAssetGroup", "DeleteAsset"):
            assert audit.count(action) == 0
    assert all(r.status == 200 for r in audit.requests if r.action != "GetAsset"), [
        (r.action, r.status) for r in audit.requests
    ]


async def test_gateway_creates_in_its_implicit_group(emu: Emulator) -> None:
    async with make_client("gateway", emu) as gw:
        asset_id = await gw.create_asset(group_id=None, url=emu.media_url(), asset_type="Image")
        asset = await gw.wait_for_asset(asset_id, timeout=30, interval=0.02)
        assert asset.status == "Active"
        groups = [g async for g in gw.list_asset_groups()]
        assert [g.name for g in groups] == ["gateway-default"]


@pytest.mark.parametrize("asset_type", ["Video", "Audio"])
async def test_video_and_audio_assets(
    asset_type: str, client: ArkFamilyClient, emu: Emulator
) -> None:
    group_id = await client.create_asset_group(name="media")
    url = emu.media_url("mp4" if asset_type == "Video" else "wav", 640, 960, duration=3)
    asset_id = await client.create_asset(group_id=group_id, url=url, asset_type=asset_type)
    asset = await client.wait_for_asset(asset_id, timeout=30, interval=0.02)
    assert (asset.status, asset.asset_type) == ("Active", asset_type)


async def test_create_asset_refuses_an_unknown_type_before_sending(
    client: ArkFamilyClient, emu: Emulator
) -> None:
    with pytest.raises(ValueError, match="asset_type"):
        await client.create_asset(group_id="g", url=emu.media_url(), asset_type="image")
    assert emu.audit().count("CreateAsset") == 0


# -- paging -------------------------------------------------------------------------------


async def test_paging_250_assets(transport: str, emu: Emulator) -> None:
    emu.config.enforce_limits = False
    # processing_slots=None: no watcher sweep, so the audit counts only this test's listings
    rates = dict.fromkeys(ACTION_RATES, 1e4)
    async with make_client(transport, emu, rate_limits=rates, processing_slots=None) as c:
        group_id = await c.create_asset_group(name="many")
        url = emu.media_url("png", 800, 800)
        created: list[str] = []
        slots = anyio.CapacityLimiter(16)

        async def one(i: int) -> None:
            async with slots:
                created.append(await c.create_asset(group_id=group_id, url=url, name=f"a{i:03d}"))

        async with anyio.create_task_group() as tg:
            for i in range(250):
                tg.start_soon(one, i)

        def lists() -> int:
            return emu.audit().count("ListAssets")

        page = await c.list_assets(group_ids=[group_id], page_size=100)
        assert (len(page.items), page.total_count, page.page_number) == (100, 250, 1)
        assert page.request_id
        assert lists() == 1

        seen: list[str] = []
        async for asset in c.list_assets(group_ids=[group_id], page_size=100):
            seen.append(asset.id)
            if len(seen) in (1, 100):  # lazy: one page at a time
                assert lists() == 2
            elif len(seen) == 101:
                assert lists() == 3
        assert lists() == 4  # the short third page ends the walk
        assert len(seen) == 250
        assert set(seen) == set(created)
        assert seen[:100] == [a.id for a in page.items]

        rest = [a.id async for a in c.list_assets(group_ids=[group_id], page_number=2)]
        assert rest == seen[100:]
        last = await c.list_assets(group_ids=[group_id], page_size=100, page_number=3)
        assert (len(last.items), last.page_number, last.total_count) == (50, 3, 250)
        small = await c.list_assets(group_ids=[group_id], page_size=7, page_number=36)
        assert [a.id for a in small.items] == seen[245:]


async def test_group_paging_filters_and_sorting(client: ArkFamilyClient) -> None:
    ids = [await client.create_asset_group(name=f"team-{i:02d}") for i in range(12)]
    face = await client.create_asset_group(name="face", group_type="LivenessFace")
    walked = [g.id async for g in client.list_asset_groups(name="team", page_size=5)]
    assert walked == ids[::-1]  # newest first by default
    ascending = client.list_asset_groups(name="team", page_size=5, sort_order="Asc")
    assert [g.id async for g in ascending] == ids
    third = await client.list_asset_groups(name="team", page_size=5, page_number=3)
    assert [g.id for g in third.items] == ids[1::-1]
    assert third.total_count == 12
    faces = await client.list_asset_groups(group_type="LivenessFace")
    assert [g.id for g in faces.items] == [face]


def test_paging_arguments_are_checked_without_io() -> None:
    ark = ArkClient(access_key="AKLTX", secret_key="s", base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="page_size"):
        ark.list_assets(page_size=101)
    with pytest.raises(ValueError, match="page_size"):
        ark.list_asset_groups(page_size=0)
    with pytest.raises(ValueError, match="page_number"):
        ark.list_assets(page_number=0)


# -- errors from the emulator -------------------------------------------------------------

#: Injected HTTP errors and the code the emulator's fault envelope carries for each.
FAULTS = [
    (400, "InvalidParameter", BadRequestError),
    (401, "MissingAuthenticationToken", AuthenticationError),
    (403, "AccessDenied", PermissionDeniedError),
    (404, "InvalidActionOrVersion", NotFoundError),
    (429, "FlowLimitExceeded", RateLimitError),
    (500, "InternalError", ServerError),
    (503, "ServiceUnavailable", ServerError),
]


@pytest.mark.parametrize(("status", "code", "cls"), FAULTS)
async def test_injected_error_statuses_map_to_classes(
    transport: str, emu: Emulator, status: int, code: str, cls: type[APIError]
) -> None:
    async with make_client(transport, emu, retry=NO_RETRY) as c:
        emu.set_faults([FaultRule(action="ListAssets", status=status)])
        with pytest.raises(cls) as info:
            await c.list_assets()
    err = info.value
    assert (err.status, err.code) == (status, code)
    assert err.request_id
    assert err.request_id in str(err)
    assert str(status) in str(err)


async def test_natural_errors(transport: str, client: ArkFamilyClient, emu: Emulator) -> None:
    with pytest.raises(NotFoundError) as nf:
        await client.get_asset(MISSING_ASSET)
    assert (nf.value.status, nf.value.code) == (404, "NotFound.asset_id")
    with pytest.raises(NotFoundError) as nf:
        await client.create_asset(group_id=MISSING_GROUP, url=emu.media_url())
    assert nf.value.code == "NotFound.group_id"
    with pytest.raises(BadRequestError) as bad:
        await client.create_asset_group(name="x" * 65)
    assert (bad.value.status, bad.value.code) == (400, "InvalidParameter.Name")
    with pytest.raises(BadRequestError) as bad:
        await client.create_asset(group_id=MISSING_GROUP, url="ftp://example.com/a.png")
    assert bad.value.code == "InvalidParameter.URL"
    if transport != "gateway":  # the gateway's CreateAsset needs no group
        with pytest.raises(BadRequestError) as bad:
            await client.create_asset(group_id=None, url=emu.media_url())
        assert bad.value.code == "MissingParameter.GroupId"
    assert client.stats.retries == 0


async def test_in_flight_cap_is_a_rate_limit_error(transport: str, emu: Emulator) -> None:
    emu.config.max_processing = 1
    emu.set_faults([FaultRule(action="CreateAsset", kind="stuck")])
    async with make_client(transport, emu, retry=NO_RETRY) as c:
        group_id = await c.create_asset_group(name="cap")
        await c.create_asset(group_id=group_id, url=emu.media_url())
        with pytest.raises(RateLimitError) as info:
            await c.create_asset(group_id=group_id, url=emu.media_url())
    assert (info.value.status, info.value.code) == (429, "FlowLimitExceeded")


@pytest.mark.parametrize("transport", ["gateway", "avatar"])
async def test_unknown_bearer_key(transport: str, emu: Emulator) -> None:
    async with make_client(transport, emu, api_key="cy_" + "0" * 32) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.list_assets()
    assert info.value.status == 401
    assert info.value.code == "InvalidAuthorization"
    assert "0" * 32 not in str(info.value)


@pytest.mark.parametrize("transport", OFFICIAL)
async def test_signature_errors(transport: str, emu: Emulator) -> None:
    async with make_client(transport, emu, access_key="AKLTNOBODY00000000") as c:
        with pytest.raises(AuthenticationError) as info:
            await c.list_assets()
    assert (info.value.status, info.value.code) == (401, "InvalidAccessKey")
    async with make_client(transport, emu, secret_key="not-the-secret") as c:
        with pytest.raises(AuthenticationError) as info:
            await c.list_assets()
    assert (info.value.status, info.value.code) == (401, "SignatureDoesNotMatch")


@pytest.mark.parametrize("transport", OFFICIAL)
async def test_skewed_clock_is_invalid_timestamp_and_not_retried(
    transport: str, emu: Emulator
) -> None:
    emu.config.clock_offset_seconds = 1200  # the emulator allows 900 s of skew
    async with make_client(transport, emu) as c:  # FAST retries, yet none happen
        with pytest.raises(BadRequestError) as info:
            await c.list_assets()
        assert c.stats.retries == 0
    assert (info.value.status, info.value.code) == (400, "InvalidTimestamp")
    assert emu.audit().count("ListAssets") == 1


@pytest.mark.parametrize("transport", OFFICIAL)
async def test_unknown_action_is_not_found(transport: str, emu: Emulator) -> None:
    async with make_client(transport, emu) as c:
        with pytest.raises(NotFoundError) as info:
            await c._call("NoSuchAction", {})
    assert info.value.code == "InvalidActionOrVersion"


async def test_truncated_answer_to_a_read_is_retried(
    client: ArkFamilyClient, emu: Emulator
) -> None:
    group_id = await client.create_asset_group(name="t")
    asset_id = await client.create_asset(group_id=group_id, url=emu.media_url())
    emu.set_faults([FaultRule(action="GetAsset", kind="truncate", max_count=1)])
    asset = await client.get_asset(asset_id)
    assert asset.id == asset_id
    assert client.stats.retries == 1
    assert emu.audit().count("GetAsset") == 2


async def test_html_error_page_without_retries(transport: str, emu: Emulator) -> None:
    emu.set_faults([FaultRule(action="ListAssets", status=502, body="html")])
    async with make_client(transport, emu, retry=NO_RETRY) as c:
        with pytest.raises(ResponseFormatError) as info:
            await c.list_assets()
    assert info.value.status == 502
    assert "text/html" in str(info.value)


# -- errors the emulator never sends: a stub server -----------------------------------------

#: Every code of api-reference.md §2.4 with its HTTP status and exception class.
CODES = [
    ("MissingParameter", 400, BadRequestError),
    ("MissingParameter.Name", 400, BadRequestError),
    ("InvalidParameter", 400, BadRequestError),
    ("InvalidParameter.DownloadFailed", 400, BadRequestError),
    ("InvalidTimestamp", 400, BadRequestError),
    ("MissingAuthenticationToken", 401, AuthenticationError),
    ("MissingSignature", 401, AuthenticationError),
    ("InvalidAccessKey", 401, AuthenticationError),
    ("SignatureDoesNotMatch", 401, AuthenticationError),
    ("AccessDenied", 403, PermissionDeniedError),
    ("InvalidActionOrVersion", 404, NotFoundError),
    ("NotFound.group_id", 404, NotFoundError),
    ("NotFound.asset_id", 404, NotFoundError),
    ("FlowLimitExceeded", 429, RateLimitError),
    ("InternalError", 500, ServerError),
]


@pytest.mark.parametrize("in_200", [False, True], ids=["http-status", "inside-200"])
@pytest.mark.parametrize(("code", "status", "cls"), CODES)
async def test_every_code_maps_in_the_volcengine_envelope(
    stub: Stub, code: str, status: int, cls: type[APIError], in_200: bool
) -> None:
    stub.status = 200 if in_200 else status
    stub.body = volc(error=code)
    async with stub.official() as ark:
        with pytest.raises(cls) as info:
            await ark.get_asset(MISSING_ASSET)
    err = info.value
    assert (err.code, err.status, err.request_id) == (code, stub.status, "req-stub-1")
    assert err.message == f"stub says {code}"
    assert len(stub.seen) == 1


@pytest.mark.parametrize("in_200", [False, True], ids=["http-status", "inside-200"])
@pytest.mark.parametrize(("code", "status", "cls"), CODES)
async def test_every_code_maps_in_the_gateway_envelope(
    stub: Stub, code: str, status: int, cls: type[APIError], in_200: bool
) -> None:
    stub.status = 200 if in_200 else status
    stub.body = flat(status_code=status, msg=f"{code}: stub says so")
    async with stub.gateway() as gw:
        with pytest.raises(cls) as info:
            await gw.get_asset(MISSING_ASSET)
    assert (info.value.code, info.value.status) == (code, stub.status)


async def test_gateway_numeric_status_code_inside_200(stub: Stub) -> None:
    stub.body = flat(status_code=404, msg="no such asset")
    async with stub.gateway() as gw:
        with pytest.raises(NotFoundError) as info:
            await gw.get_asset(MISSING_ASSET)
    assert info.value.code == "404"
    stub.body = flat(status_code=1001, msg="something odd")
    async with stub.gateway() as gw:
        with pytest.raises(APIError) as generic:
            await gw.get_asset(MISSING_ASSET)
    assert generic.value.code == "1001"
    stub.body = b'{"Id": "asset-1"}'
    async with stub.gateway() as gw:
        with pytest.raises(ResponseFormatError, match="base_resp"):
            await gw.get_asset(MISSING_ASSET)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "cls"),
    [
        (200, b'{"Result": {"Id": "asset-1"}}', "application/json", ResponseFormatError),
        (404, b'{"message": "nope"}', "application/json", NotFoundError),
        (500, b'{"message": "nope"}', "application/json", ServerError),
        (200, b"<html><body>hello</body></html>", "text/html", ResponseFormatError),
        (502, b"<html><body>Bad Gateway</body></html>", "text/html", ResponseFormatError),
        (200, b'{"ResponseMetadata": {"RequestId": "r"}, "Result": [1]}', "application/json",
         ResponseFormatError),
        (200, b'{"ResponseMetadata": {"RequestId": "r"}, "Result": {"Name": "no id"}}',
         "application/json", ResponseFormatError),
        (200, b'{"ResponseMetadata": {"RequestId": "r"}, "Resu', "application/json",
         ResponseFormatError),
    ],
    ids=["no-metadata", "404-no-metadata", "500-no-metadata", "html-200", "html-502",
         "result-not-object", "asset-without-id", "truncated-json"],
)  # fmt: skip
async def test_malformed_answers(
    stub: Stub, status: int, body: bytes, content_type: str, cls: type[APIError]
) -> None:
    stub.status, stub.body, stub.content_type = status, body, content_type
    async with stub.official() as ark:
        with pytest.raises(cls) as info:
            await ark.get_asset(MISSING_ASSET)
    assert info.value.status in (status, None)


async def test_malformed_answer_to_a_read_is_retried(stub: Stub) -> None:
    stub.status, stub.body, stub.content_type = 502, b"<html>Bad Gateway</html>", "text/html"
    retry = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    async with stub.official(retry=retry) as ark:
        with pytest.raises(ResponseFormatError):
            await ark.get_asset(MISSING_ASSET)
    assert len(stub.seen) == 3


async def test_unknown_status_and_fields_are_tolerated(stub: Stub) -> None:
    asset = {
        "Id": MISSING_ASSET,
        "Status": "Archived",
        "Brand": {"New": True},
        "Error": {"Code": "X", "Message": "m", "Hint": "new"},
        "CreateTime": "2026-03-18T03:33:32Z",
    }
    stub.body = volc(asset)
    async with stub.official() as ark:
        got = await ark.get_asset(MISSING_ASSET)
        assert got.status == "Archived"
        assert not got.is_terminal
        assert got.model_extra == {"Brand": {"New": True}}
        assert got.error is not None
        assert got.error.code == "X"
        assert got.create_time == datetime(2026, 3, 18, 3, 33, 32, tzinfo=UTC)
        with pytest.raises(WaitTimeoutError, match="Archived"):
            await ark.wait_for_asset(MISSING_ASSET, timeout=0.1, interval=0.02)
        stub.body = volc({"Items": [asset], "TotalCount": 1, "NextToken": "", "Other": 1})
        page = await ark.list_assets()
        assert [a.status for a in page.items] == ["Archived"]
    stub.body = flat({**asset, "Surprise": [1]})
    async with stub.gateway() as gw:
        assert (await gw.get_asset(MISSING_ASSET)).status == "Archived"


# -- waiting ------------------------------------------------------------------------------


async def test_wait_for_a_failed_asset(client: ArkFamilyClient, emu: Emulator) -> None:
    group_id = await client.create_asset_group(name="bad")
    asset_id = await client.create_asset(group_id=group_id, url=emu.media_url("png", 2000, 400))
    with pytest.raises(AssetFailedError) as info:
        await client.wait_for_asset(asset_id, timeout=30, interval=0.02)
    err = info.value
    assert (err.asset_id, err.code) == (asset_id, "InvalidParameter.ImageRatio")
    assert err.message
    assert "InvalidParameter.ImageRatio" in str(err)


@pytest.mark.parametrize("transport", TRANSPORTS)
@virtual
async def test_wait_until_the_deadline(transport: str) -> None:
    timeout = 0.3
    emulator, vt = virtual_emulator(config())
    async with emulator as emu, make_client(transport, emu, rate_limits=dict(ACTION_RATES)) as c:
        emu.set_faults([FaultRule(action="CreateAsset", kind="stuck")])
        group_id = await c.create_asset_group(name="slow")
        asset_id = await c.create_asset(group_id=group_id, url=emu.media_url())
        started = vt.audit_now()
        with pytest.raises(WaitTimeoutError, match="Processing") as info:
            await c.wait_for_asset(asset_id, timeout=timeout, interval=0.02, max_interval=0.05)
        ended = vt.audit_now()
        watched = c.watcher.watched()
    assert isinstance(info.value, TimeoutError)
    assert ended - started == pytest.approx(timeout, abs=1e-6)  # exactly at the deadline
    audit = emu.audit()  # the watcher's sweep looked (one listing per tick, not GetAsset polls)
    assert audit.count("ListAssets") + audit.count("GetAsset") >= 1
    assert asset_id in watched  # it still holds the stuck asset's slot


# -- project scoping ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", [*OFFICIAL, "gateway"])
async def test_project_scoping(transport: str, emu: Emulator) -> None:
    async with (
        make_client(transport, emu, project_name="p1") as p1,
        make_client(transport, emu) as default,
    ):
        group_id = await p1.create_asset_group(name="scoped")
        asset_id = await p1.create_asset(group_id=group_id, url=emu.media_url())
        assert (await p1.get_asset(asset_id)).id == asset_id
        assert (await default.get_asset(asset_id, project_name="p1")).id == asset_id
        with pytest.raises(NotFoundError) as info:
            await default.get_asset(asset_id)
        assert info.value.code == "NotFound.asset_id"
        with pytest.raises(NotFoundError) as info:
            await default.create_asset(group_id=group_id, url=emu.media_url())
        assert info.value.code == "NotFound.group_id"
        with pytest.raises(NotFoundError):
            await default.delete_asset(asset_id)
        assert (await default.list_assets(group_ids=[group_id])).total_count == 0
        assert (await p1.list_assets(group_ids=[group_id])).total_count == 1
        if transport != "gateway":  # the gateway's GetAsset shows neither field
            asset = await p1.get_asset(asset_id)
            assert (asset.project_name, asset.group_id) == ("p1", group_id)
            group = await default.get_asset_group(group_id, project_name="p1")
            assert group.project_name == "p1"


# -- configuration ------------------------------------------------------------------------

ENV_NAMES = (
    "VOLC_ACCESSKEY",
    "VOLC_SECRETKEY",
    "VOLC_SESSION_TOKEN",
    "BYTEPLUS_ACCESSKEY",
    "BYTEPLUS_SECRETKEY",
    "BYTEPLUS_SESSION_TOKEN",
    "ARK_REGION",
    "ARK_BASE_URL",
    "ARK_API_KEY",
    "ARK_STYLE",
    "ARK_PROJECT_NAME",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_from_env_official_regions(env: pytest.MonkeyPatch) -> None:
    env.setenv("VOLC_ACCESSKEY", "AKLTENV")
    env.setenv("VOLC_SECRETKEY", "envsecret")
    ark = ArkClient.from_env()
    assert (ark.style, ark.region, ark.base_url) == (
        "official",
        "cn-beijing",
        "https://open.volcengineapi.com",
    )
    env.setenv("ARK_REGION", "ap-southeast-1")
    ark = ArkClient.from_env()
    assert (ark.region, ark.base_url) == (
        "ap-southeast-1",
        "https://ark.ap-southeast-1.byteplusapi.com",
    )
    assert official_endpoint("eu-west-1") == "https://ark.eu-west-1.byteplusapi.com"
    env.setenv("ARK_BASE_URL", "https://ark.cn-beijing.volcengineapi.com/")
    env.setenv("ARK_PROJECT_NAME", "p9")
    ark = ArkClient.from_env(region="cn-beijing")  # an argument beats the environment
    assert (ark.region, ark.base_url) == ("cn-beijing", "https://ark.cn-beijing.volcengineapi.com")
    assert ark.project_name == "p9"
    assert "envsecret" not in repr(ark)


def test_from_env_byteplus_names(env: pytest.MonkeyPatch) -> None:
    env.setenv("BYTEPLUS_ACCESSKEY", "AKLTBP")
    env.setenv("BYTEPLUS_SECRETKEY", "bpsecret")
    env.setenv("BYTEPLUS_SESSION_TOKEN", "bptoken")
    env.setenv("ARK_REGION", "ap-southeast-1")
    ark = ArkClient.from_env()
    assert ark.style == "official"
    assert ark._credentials == Credentials("AKLTBP", "bpsecret", "bptoken")


def test_from_env_gateway(env: pytest.MonkeyPatch) -> None:
    env.setenv("ARK_API_KEY", "gw-key")
    ark = ArkClient.from_env()  # a key and no AK/SK: the gateway
    assert (ark.style, ark.base_url) == (
        "gateway",
        "https://api.agentsflare.com/byteplus/_unstable/open",
    )
    env.setenv("VOLC_ACCESSKEY", "AKLTENV")
    env.setenv("VOLC_SECRETKEY", "envsecret")
    assert ArkClient.from_env().style == "official"
    env.setenv("ARK_STYLE", "gateway")
    env.setenv("ARK_BASE_URL", "https://gw.example.com/open")
    ark = ArkClient.from_env()
    assert (ark.style, ark.base_url) == ("gateway", "https://gw.example.com/open")
    env.setenv("ARK_STYLE", "sideways")
    with pytest.raises(ConfigurationError, match="style"):
        ArkClient.from_env()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "VOLC_ACCESSKEY"),
        ({"VOLC_ACCESSKEY": "AKLTCANARY1"}, "VOLC_SECRETKEY"),
        ({"BYTEPLUS_ACCESSKEY": "AKLTCANARY2"}, "BYTEPLUS_SECRETKEY"),
        ({"VOLC_SECRETKEY": "CANARYSECRET3"}, "VOLC_ACCESSKEY"),
        ({"ARK_STYLE": "gateway"}, "ARK_API_KEY"),
        ({"VOLC_ACCESSKEY": "AKLTCANARY4", "VOLC_SECRETKEY": "CANARYSECRET4",
          "ARK_BASE_URL": "ftp://x"}, "base_url"),
    ],
)  # fmt: skip
def test_from_env_missing_settings_are_named(
    env: pytest.MonkeyPatch, settings: dict[str, str], named: str
) -> None:
    for name, value in settings.items():
        env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=named) as info:
        ArkClient.from_env()
    for name, value in settings.items():
        if name.endswith("KEY"):  # credentials never appear in messages
            assert value not in str(info.value)


async def test_from_env_against_the_emulator(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    env.setenv("VOLC_ACCESSKEY", emu.account.access_key)
    env.setenv("VOLC_SECRETKEY", emu.account.secret_key)
    env.setenv("ARK_BASE_URL", emu.url)
    env.setenv("ARK_PROJECT_NAME", "from-env")
    async with ArkClient.from_env() as ark:
        group_id = await ark.create_asset_group(name="env")
        assert (await ark.get_asset_group(group_id)).project_name == "from-env"
    env.setenv("ARK_API_KEY", emu.account.api_key)
    env.setenv("ARK_STYLE", "gateway")
    env.setenv("ARK_BASE_URL", emu.gateway_url)
    async with ArkClient.from_env() as gw:
        assert (await gw.get_asset_group(group_id, project_name="from-env")).id == group_id


# -- STS session tokens -------------------------------------------------------------------


async def test_session_token_is_sent_and_signed(stub: Stub) -> None:
    stub.body = volc({"Id": "group-20260101000000-abcde"})
    async with stub.official(session_token="STS-TOKEN-123") as ark:
        assert await ark.create_asset_group(name="sts") == "group-20260101000000-abcde"
    seen = stub.seen[0]
    assert seen.headers["X-Security-Token"] == "STS-TOKEN-123"
    signed_list = seen.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert "x-security-token" in signed_list.split(";")

    def verify(headers: dict[str, str]) -> Any:
        return verify_request(
            method=seen.method,
            path=seen.path,
            query=seen.query,
            headers=headers,
            body=seen.body,
            lookup_secret={"AKLTSTUBACCESSKEY": "STUBsecret0000"}.get,
            now=datetime.now(UTC),
        )

    assert "x-security-token" in verify(seen.headers).signed_headers
    with pytest.raises(SignatureError) as info:
        verify({**seen.headers, "X-Security-Token": "STS-TOKEN-999"})
    assert info.value.code == "SignatureDoesNotMatch"


async def test_session_token_against_the_emulator(emu: Emulator) -> None:
    async with make_client("volcengine", emu, session_token="STS-TOKEN") as ark:
        group_id = await ark.create_asset_group(name="sts")
        assert (await ark.get_asset_group(group_id)).id == group_id


# -- API shape and models -----------------------------------------------------------------

#: Methods whose one positional argument is an id; every other argument is keyword-only.
ID_FIRST = {
    "get_asset_group",
    "update_asset_group",
    "delete_asset_group",
    "get_asset",
    "update_asset",
    "delete_asset",
    "wait_for_asset",
}
TYPED = (
    "create_asset_group",
    "list_asset_groups",
    "create_asset",
    "list_assets",
    *sorted(ID_FIRST),
)


@pytest.mark.parametrize("method", TYPED)
def test_arguments_are_keyword_only(method: str) -> None:
    params = list(inspect.signature(getattr(ArkFamilyClient, method)).parameters.values())[1:]
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    expected = ("group_id" if "group" in method else "asset_id") if method in ID_FIRST else None
    assert positional == ([expected] if expected else [])


async def test_create_methods_reject_positional_arguments(emu: Emulator) -> None:
    async with make_client("volcengine", emu) as ark:
        with pytest.raises(TypeError):
            await ark.create_asset_group("positional")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            await ark.create_asset("g", "https://e.com/a.png")  # type: ignore[call-arg]


def test_models_use_snake_case_with_wire_aliases() -> None:
    wire = {
        "Id": "asset-20260601120000-abcde",
        "Name": "n",
        "URL": "https://x/y",
        "AssetType": "Video",
        "GroupId": "group-20260601120000-abcde",
        "Status": "Failed",
        "Error": {"Code": "FaceMismatch", "Message": "m"},
        "ProjectName": "default",
        "CreateTime": "2026-06-01T12:00:00Z",
        "UpdateTime": "2026-06-01T12:00:01Z",
    }
    asset = Asset.model_validate(wire)
    assert (asset.asset_type, asset.group_id, asset.project_name) == (
        "Video",
        "group-20260601120000-abcde",
        "default",
    )
    assert asset.error is not None
    assert asset.error.code == "FaceMismatch"
    assert asset.is_terminal
    assert asset.request_id is None
    dumped = asset.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert set(dumped) == set(wire)
    assert "https://x/y" not in repr(asset)  # the signed URL is a credential
    assert Asset(id="asset-1", group_id="g").group_id == "g"  # snake_case names work too
    group = AssetGroup.model_validate({"Id": "g", "GroupType": "LivenessFace"})
    assert group.group_type == "LivenessFace"


def test_references_are_lower_case_and_checked() -> None:
    asset = Asset(id="asset-20260601120000-abcde")
    assert asset.reference == "asset://asset-20260601120000-abcde"
    assert parse_asset_reference("Asset://asset-20260601120000-abcde") == asset.id
    for bad in ("asset:/asset-1", "asset://", "asset://asset 1", "https://a/b", "asset://x/y"):
        with pytest.raises(InvalidReferenceError):
            parse_asset_reference(bad)


def test_construction_does_no_io_and_validates() -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        ArkClient(access_key="AKLTX", secret_key="s", base_url="not a url")
    with pytest.raises(ConfigurationError, match="style"):
        ArkClient(access_key="AKLTX", secret_key="s", style="other")  # type: ignore[arg-type]
    ark = ArkClient(access_key="AKLTX", secret_key="s")
    assert "official" in repr(ark)


# -- the official Volcengine SDK ------------------------------------------------------------

AK = "AKLTEXAMPLEACCESSKEYID00000000000000"
SK = "EXAMPLESECRETKEYbase64ZZZ0000000000000000000=="
SIGNED_AT = datetime(2026, 6, 1, 12, 0, 0)


@pytest.mark.parametrize(
    ("method", "host", "query", "body", "region", "token"),
    [
        ("POST", "open.volcengineapi.com", {"Action": "CreateAssetGroup"},
         '{"Name": "my-character-group", "GroupType": "AIGC"}', "cn-beijing", None),
        ("POST", "open.volcengineapi.com:443", {"Action": "GetAsset"},
         '{"Id":"asset-20260601120000-abcde","ProjectName":"default"}', "cn-beijing", None),
        ("POST", "127.0.0.1:8765", {"Action": "GetAsset"}, '{"Id":"é"}', "cn-beijing", "STS"),
        ("GET", "open.volcengineapi.com",
         {"Action": "ListAssets", "Filter.Name": "a b*c~d/é", "PageSize": "10"}, "",
         "cn-beijing", None),
        ("POST", "ark.ap-southeast-1.byteplusapi.com", {"Action": "ListAssets"},
         '{"PageSize": 10}', "ap-southeast-1", "STS-TOKEN"),
    ],
)  # fmt: skip
def test_our_signer_agrees_with_the_official_one(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    host: str,
    query: dict[str, str],
    body: str,
    region: str,
    token: str | None,
) -> None:
    from volcenginesdkcore import signv4  # type: ignore[import-untyped]

    class Frozen(datetime):
        @classmethod
        def utcnow(cls) -> Frozen:
            return cls(2026, 6, 1, 12, 0, 0)

    monkeypatch.setattr(signv4, "datetime", types.SimpleNamespace(datetime=Frozen))
    query = {**query, "Version": "2024-01-01"}
    headers = {"Host": host}
    if method == "POST":
        headers["Content-Type"] = "application/json"
    official = dict(headers)
    signv4.SignerV4.sign("/", method, official, body, None, query, AK, SK, region, "ark", token)
    ours = sign_request(
        method=method,
        path="/",
        query=query,
        headers=headers,
        body=body.encode(),
        credentials=Credentials(AK, SK, token),
        region=region,
        now=SIGNED_AT.replace(tzinfo=UTC),
    )
    for name in ("Authorization", "X-Date", "X-Content-Sha256"):
        assert ours[name] == official[name], name
    assert ours.get("X-Security-Token") == official.get("X-Security-Token")
    verified = verify_request(
        method=method,
        path="/",
        query=query,
        headers=official,
        body=body.encode(),
        lookup_secret={AK: SK}.get,
        now=SIGNED_AT.replace(tzinfo=UTC),
    )
    assert verified.region == region


def official_sdk_session(emu: Emulator, group_id: str, asset_id: str) -> dict[str, Any]:
    """Use our client's objects through the official SDK (blocking; run in a thread)."""
    import volcenginesdkcore
    from volcenginesdkcore.universal import (  # type: ignore[import-untyped]
        UniversalApi,
        UniversalInfo,
    )

    conf = volcenginesdkcore.Configuration()
    conf.ak, conf.sk, conf.region = emu.account.access_key, emu.account.secret_key, "ap-southeast-1"
    conf.host, conf.scheme = emu.url.removeprefix("http://"), "http"
    api = UniversalApi(volcenginesdkcore.ApiClient(conf))

    def call(action: str, body: dict[str, Any]) -> Any:
        info = UniversalInfo(
            method="POST", service="ark", version="2024-01-01", action=action,
            content_type="application/json",
        )  # fmt: skip
        return api.do_call(info, body)

    out = {"asset": call("GetAsset", {"Id": asset_id})}
    out["groups"] = call("ListAssetGroups", {"Filter": {"GroupIds": [group_id]}})
    call("UpdateAsset", {"Id": asset_id, "Name": "renamed by the official sdk"})
    out["new_group"] = call("CreateAssetGroup", {"Name": "official", "GroupType": "LivenessFace"})
    return out


async def test_official_sdk_and_our_client_share_state(emu: Emulator) -> None:
    async with make_client("byteplus", emu) as ark:
        group_id = await ark.create_asset_group(name="ours")
        asset_id = await ark.create_asset(group_id=group_id, url=emu.media_url(), name="a")
        await ark.wait_for_asset(asset_id, timeout=30, interval=0.02)
        seen = await anyio.to_thread.run_sync(official_sdk_session, emu, group_id, asset_id)
        assert (seen["asset"]["Id"], seen["asset"]["Status"]) == (asset_id, "Active")
        assert [g["Id"] for g in seen["groups"]["Items"]] == [group_id]
        assert (await ark.get_asset(asset_id)).name == "renamed by the official sdk"
        theirs = await ark.get_asset_group(seen["new_group"]["Id"])
        assert theirs.group_type == "LivenessFace"
