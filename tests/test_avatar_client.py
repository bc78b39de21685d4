"""PrivateAvatarClient specifics: routes and bodies on the wire, the three actions the proxy
lacks, the ``model`` routing key, and configuration. Behaviour shared with ArkClient (every
action, paging, errors, waiting) is covered per transport in test_ark_client.py."""

from __future__ import annotations

import json

import pytest
from ark_kit import Stub, emu, make_client, stub, volc

from chenyu_assets.avatar import AVATAR_MODELS, PrivateAvatarClient
from chenyu_assets.emulator import Emulator
from chenyu_assets.errors import ConfigurationError

pytestmark = pytest.mark.anyio
__all__ = ["emu", "stub"]  # fixtures

ASSET = "asset-20260601120000-abcde"
GROUP = "group-20260601120000-abcde"


async def test_routes_and_bodies_on_the_wire(stub: Stub) -> None:
    stub.body = volc({"Id": GROUP, "Items": [], "TotalCount": 0})
    model = AVATAR_MODELS[1]
    # processing_slots=None: no watcher sweep after create_asset, only these calls on the wire
    av = PrivateAvatarClient(
        api_key="k", base_url=stub.url + "/", model=model, processing_slots=None
    )
    async with av:
        await av.create_asset_group(name="g", description="d", project_name="ignored")
        await av.list_asset_groups(name="g", page_size=5)
        await av.delete_asset_group(GROUP)
        await av.create_asset(group_id=GROUP, url="https://e.com/a.png", name="a")
        await av.list_assets(statuses=["Active"], sort_by="UpdateTime")
        await av.get_asset(ASSET)
        await av.update_asset(ASSET, name="b")
    wire = [
        (s.method, s.path, dict(s.query), json.loads(s.body) if s.body else None) for s in stub.seen
    ]
    base = "/v1/private-avatar"
    assert wire == [
        ("POST", f"{base}/groups", {},
         {"model": model, "Name": "g", "Description": "d", "GroupType": "AIGC"}),
        ("POST", f"{base}/groups/list", {},
         {"model": model, "Filter": {"Name": "g"}, "PageNumber": 1, "PageSize": 5}),
        ("DELETE", f"{base}/groups/{GROUP}", {"model": model}, None),
        ("POST", f"{base}/assets", {},
         {"model": model, "GroupId": GROUP, "URL": "https://e.com/a.png", "AssetType": "Image",
          "Name": "a"}),
        ("POST", f"{base}/assets/list", {},
         {"model": model, "Filter": {"Statuses": ["Active"]}, "PageNumber": 1, "PageSize": 100,
          "SortBy": "UpdateTime"}),
        ("GET", f"{base}/assets/{ASSET}", {"model": model}, None),
        ("PATCH", f"{base}/assets/{ASSET}", {}, {"model": model, "Id": ASSET, "Name": "b"}),
    ]  # fmt: skip
    for seen in stub.seen:
        assert seen.headers["Authorization"] == "Bearer k"
        assert ("Content-Type" in seen.headers) == bool(seen.body)


async def test_missing_actions_fail_before_any_io() -> None:
    av = PrivateAvatarClient(api_key="k", base_url="http://127.0.0.1:9")  # never opened
    with pytest.raises(ConfigurationError, match="no endpoint for GetAssetGroup"):
        await av.get_asset_group(GROUP)
    with pytest.raises(ConfigurationError, match="no endpoint for UpdateAssetGroup"):
        await av.update_asset_group(GROUP, name="x")
    with pytest.raises(ConfigurationError, match="no endpoint for DeleteAsset"):
        await av.delete_asset(ASSET)
    assert av.stats.requests == 0


@pytest.mark.parametrize("model", AVATAR_MODELS)
async def test_both_models_route(emu: Emulator, model: str) -> None:
    async with make_client("avatar", emu, model=model) as av:
        group_id = await av.create_asset_group(name=f"m-{model}")
        assert [g.id async for g in av.list_asset_groups(group_ids=[group_id])] == [group_id]


def test_construction_checks() -> None:
    with pytest.raises(ConfigurationError, match="model"):
        PrivateAvatarClient(api_key="k", base_url="https://proxy.example", model="gpt")
    with pytest.raises(ConfigurationError, match="AVATAR_API_KEY"):
        PrivateAvatarClient(base_url="https://proxy.example")
    with pytest.raises(ConfigurationError, match="AVATAR_BASE_URL"):
        PrivateAvatarClient(api_key="k")
    with pytest.raises(ConfigurationError, match="base_url"):
        PrivateAvatarClient(api_key="k", base_url="proxy.example")
    av = PrivateAvatarClient(api_key="cy_secretsecret", base_url="https://proxy.example/")
    assert av.base_url == "https://proxy.example"
    assert "secretsecret" not in repr(av)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AVATAR_API_KEY", "AVATAR_BASE_URL", "AVATAR_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_from_env_names_what_is_missing(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="AVATAR_API_KEY"):
        PrivateAvatarClient.from_env()
    env.setenv("AVATAR_API_KEY", "cy_CANARYKEY")
    with pytest.raises(ConfigurationError, match="AVATAR_BASE_URL") as info:
        PrivateAvatarClient.from_env()
    assert "CANARYKEY" not in str(info.value)
    env.setenv("AVATAR_BASE_URL", "https://proxy.example")
    env.setenv("AVATAR_MODEL", "nope")
    with pytest.raises(ConfigurationError, match="model"):
        PrivateAvatarClient.from_env()
    env.setenv("AVATAR_MODEL", AVATAR_MODELS[1])
    assert PrivateAvatarClient.from_env().model == AVATAR_MODELS[1]
    assert PrivateAvatarClient.from_env(model=AVATAR_MODELS[0]).model == AVATAR_MODELS[0]


async def test_from_env_against_the_emulator(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    env.setenv("AVATAR_API_KEY", emu.account.api_key)
    env.setenv("AVATAR_BASE_URL", emu.avatar_url)
    async with PrivateAvatarClient.from_env() as av:
        group_id = await av.create_asset_group(name="env")
        asset_id = await av.create_asset(group_id=group_id, url=emu.media_url())
        assert (await av.wait_for_asset(asset_id, timeout=30, interval=0.02)).status == "Active"
    # the proxy works in the account's default project: the official endpoint sees it
    async with make_client("volcengine", emu) as ark:
        assert (await ark.get_asset(asset_id)).group_id == group_id
