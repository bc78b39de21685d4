"""State across restarts (SQLite + blobs in data_dir) and the in-memory mode's cleanup."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import mediagen
import pytest
from emulator_kit import ark, bearer, config, new_asset, new_group, result, session, wait_status

from chenyu_assets.emulator import Emulator
from chenyu_assets.emulator.store import AssetRec, SqlitePersistence, Store

pytestmark = pytest.mark.anyio
__all__ = ["session"]


async def test_state_survives_a_restart(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with Emulator(config(data_dir=tmp_path)) as first:
        port = first.port
        group_id = await new_group(session, first, "kept", ProjectName="p")
        done = await new_asset(session, first, group_id, ProjectName="p", name="done")
        active = await wait_status(session, first, done, ProjectName="p")
        first.config.processing_delay = 60
        pending = await new_asset(session, first, group_id, ProjectName="p", name="pending")
        form = aiohttp.FormData()
        payload = mediagen.png(500, 500)
        form.add_field("file", payload, filename="keep.png")
        async with session.post(
            first.chenyu_url + "/assets", data=form, headers=bearer(first.account)
        ) as resp:
            uploaded = (await resp.json())["data"]
    assert (tmp_path / "emulator.sqlite3").exists()

    async with Emulator(config(data_dir=tmp_path, port=port)) as second:
        group = result(
            await ark(session, second, "GetAssetGroup", {"Id": group_id, "ProjectName": "p"})
        )
        assert group["Name"] == "kept"
        again = result(await ark(session, second, "GetAsset", {"Id": done, "ProjectName": "p"}))
        assert again["Status"] == "Active"
        assert again["CreateTime"] == active["CreateTime"]
        async with session.get(again["URL"]) as resp:
            assert resp.status == 200
        # the asset left Processing by the first run is processed by the second
        finished = await wait_status(session, second, pending, ProjectName="p")
        assert finished["Status"] == "Active"
        # Chenyu: metadata, blob and the URL-signing secret all survived
        async with session.get(
            f"{second.chenyu_url}/assets/{uploaded['asset_id']}", headers=bearer(second.account)
        ) as resp:
            assert (await resp.json())["data"]["size_bytes"] == len(payload)
        async with session.get(uploaded["signed_url"]) as resp:
            assert resp.status == 200
            assert await resp.read() == payload
        # the gateway's implicit group is remembered too
        listed = result(await ark(session, second, "ListAssets", {"ProjectName": "p"}))
        assert listed["TotalCount"] == 2


async def test_memory_mode_cleans_up(session: aiohttp.ClientSession) -> None:
    async with Emulator(config()) as emu:
        root = emu.data_dir
        form = aiohttp.FormData()
        form.add_field("file", b"some bytes", filename="x.txt")
        async with session.post(
            emu.chenyu_url + "/assets", data=form, headers=bearer(emu.account)
        ) as r:
            assert r.status == 200
        assert list((root / "blobs").iterdir())
        assert not list(root.glob("*.sqlite3"))
    assert not root.exists()


def fill_store(path: Path, count: int = 3000) -> float:
    """Add and finish ``count`` assets in a fresh store; the wall seconds it took."""
    store = Store(SqlitePersistence(path))
    started = time.perf_counter()
    for i in range(count):
        rec = AssetRec(
            id=f"asset-20260101000000-{i:05d}",
            account="demo",
            project="default",
            group_id="group-20260101000000-aaaaa",
            name=f"n{i}",
            source_url="https://example.com/a.png",
            asset_type="Image",
            status="Processing",
            error_code=None,
            error_message=None,
            create_time=1.0 + i,
            update_time=1.0 + i,
        )
        store.add_asset(rec)
        store.finish_asset(rec, status="Active", now=2.0 + i, t=0.0)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def test_store_handles_thousands(tmp_path: Path) -> None:
    fill_store(tmp_path / "db.sqlite3")
    reloaded = Store(SqlitePersistence(tmp_path / "db.sqlite3"))
    assets = list(reloaded.assets("demo", "default"))
    assert len(assets) == 3000
    assert all(a.status == "Active" for a in assets)
    assert reloaded.processing_count("demo") == 0
    reloaded.close()


@pytest.mark.slow
def test_store_handles_thousands_quickly(tmp_path: Path) -> None:
    """Throughput (wall time; ``-m slow``): 3000 adds + finishes well under 3 s."""
    elapsed = fill_store(tmp_path / "db.sqlite3")
    print(f"\n3000 store adds + finishes: {elapsed:.2f} s")
    assert elapsed < 3.0, elapsed


async def create_2000(tmp_path: Path, session: aiohttp.ClientSession) -> float:
    """2000 CreateAssets over HTTP, 100 at a time; checks them and returns the wall seconds."""
    cfg = config(data_dir=tmp_path, enforce_limits=False, validate_media=False)
    async with Emulator(cfg) as emu:
        group_id = await new_group(session, emu)
        url = emu.media_url()
        started = time.perf_counter()
        for start in range(0, 2000, 100):
            replies = await asyncio.gather(
                *(
                    ark(
                        session,
                        emu,
                        "CreateAsset",
                        {"GroupId": group_id, "URL": url, "AssetType": "Image", "Name": f"n{i}"},
                    )
                    for i in range(start, start + 100)
                )
            )
            assert all(status == 200 for status, _ in replies)
        elapsed = time.perf_counter() - started
        listed = result(await ark(session, emu, "ListAssets", {"PageSize": 100}))
        assert listed["TotalCount"] == 2000
        assert not emu.audit().duplicates()
    return elapsed


async def test_two_thousand_creates_over_http(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    await create_2000(tmp_path, session)


@pytest.mark.slow
async def test_two_thousand_creates_over_http_quickly(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Throughput (wall time; ``-m slow``): 2000 creates well under 20 s."""
    elapsed = await create_2000(tmp_path, session)
    print(f"\n2000 CreateAssets over HTTP: {elapsed:.2f} s")
    assert elapsed < 20, elapsed
