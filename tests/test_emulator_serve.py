"""``chenyu-assets serve`` as a subprocess, and the vendor pages' Python examples against the
emulator (requests-based, run in a worker thread, only base URL / key / asset URL changed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import mediagen
import pytest
from emulator_kit import config, session

from chenyu_assets.cli import main as cli_main
from chenyu_assets.emulator import Emulator

pytestmark = pytest.mark.anyio
__all__ = ["session"]

API_KEY = "cy_" + "5" * 32
ACCESS_KEY = "AKLTSERVETEST00000000000000000000000"


async def start_serve(tmp_path: Path, *extra: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {
        **os.environ,
        "CHENYU_EMULATOR_API_KEY": API_KEY,
        "CHENYU_EMULATOR_ACCESS_KEY": ACCESS_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chenyu_assets.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "state"),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    with anyio.fail_after(60):  # hang guard: a loaded machine starts Python slowly
        first = (await proc.stdout.readline()).decode()
    assert "listening on http://127.0.0.1:" in first, first
    return proc, first.rsplit(" ", 1)[1].strip()


async def stop_serve(proc: asyncio.subprocess.Process, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    with anyio.fail_after(30):  # hang guard
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_subprocess(
    tmp_path: Path, session: aiohttp.ClientSession, sig: signal.Signals
) -> None:
    settings = tmp_path / "emulator.json"
    settings.write_text(json.dumps({"window": "token_bucket", "seed": 5}))
    proc, url = await start_serve(
        tmp_path, "--config", str(settings), "--time-scale", "10", "--processing-delay", "1"
    )
    try:
        async with session.get(f"{url}/_emulator/config") as resp:
            cfg = await resp.json()
        assert cfg["base_url"] == url
        assert cfg["window"] == "token_bucket"
        assert cfg["seed"] == 5
        assert cfg["time_scale"] == 10
        assert cfg["processing_delay"] == 1
        assert cfg["accounts"] == [{"name": "demo", "access_key": ACCESS_KEY}]
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"URL": f"{url}/_emulator/media/png/800x1200.png", "AssetType": "Image"}
        async with session.post(
            f"{url}/byteplus/_unstable/open/CreateAsset", json=body, headers=headers
        ) as resp:
            asset_id = (await resp.json())["Id"]
        rules = [{"action": "GetAsset", "kind": "http_error", "status": 503, "max_count": 1}]
        async with session.post(f"{url}/_emulator/faults", json=rules) as resp:
            assert resp.status == 200
        get_url = f"{url}/byteplus/_unstable/open/GetAsset"
        async with session.post(get_url, json={"Id": asset_id}, headers=headers) as resp:
            assert resp.status == 503
        with anyio.fail_after(30):  # hang guard: processing takes 1 s / 10 = 0.1 s
            while True:
                async with session.post(get_url, json={"Id": asset_id}, headers=headers) as resp:
                    got = await resp.json()
                if got["Status"] != "Processing":
                    break
                await anyio.sleep(0.05)
        assert got["Status"] == "Active"
        async with session.get(f"{url}/_emulator/audit") as resp:
            audit = await resp.json()
        assert [r["status"] for r in audit["requests"]][:2] == [200, 503]
    finally:
        code, out = await stop_serve(proc, sig)
    assert code == 0
    assert "emulator stopped" in out
    assert API_KEY in out
    assert "printed on purpose" in out
    assert (tmp_path / "state" / "emulator.sqlite3").exists()


def test_serve_rejects_bad_settings_without_echoing_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli_main(["serve", "--time-scale", "0", "--secret-key", "TOPSECRETVALUE"])
    assert code == 2
    err = capsys.readouterr().err
    assert "time_scale" in err
    assert "TOPSECRETVALUE" not in err
    code = cli_main(["serve", "--secret-key", "BAD SECRET\n", "--port", "0"])
    assert code == 2
    assert "BAD SECRET" not in capsys.readouterr().err


# -- the vendor pages' examples ----------------------------------------------------------------
# Each is the page's code with only the base URL, the key (and file / asset URL) substituted.

CHENYU_UPLOAD = """
import requests

url = "https://www.chenyu.cn/api/open/v2/assets"
headers = {"Authorization": "Bearer your_api_key"}
files = {"file": open("input.png", "rb")}
data = {
    "media_type": "image",
    "purpose": "temp_input"
}

response = requests.post(url, headers=headers, files=files, data=data)
asset_uri = response.json()["data"]["asset_uri"]
print(asset_uri)
"""

CHENYU_GET = """
import requests
asset_id = "asset_38d2ff7769fb3b7267039941547e6a78"
url = f"https://www.chenyu.cn/api/open/v2/assets/{asset_id}"
headers = {"Authorization": "Bearer your_api_key"}
response = requests.get(url, headers=headers)
print(response.json()["data"]["asset_uri"])
"""

GATEWAY = """
import time
import requests

API_KEY = "your_api_key"
BASE_URL = "https://api.agentsflare.com/byteplus/_unstable/open"
HEADERS = {
    "Content-Type": "application/json",
    "Authorization": f"Bearer {API_KEY}",
}

def create_asset(name: str, image_url: str) -> str:
    resp = requests.post(
        f"{BASE_URL}/CreateAsset",
        headers=HEADERS,
        json={"Name": name, "URL": image_url, "AssetType": "Image"},
    )
    resp.raise_for_status()
    data = resp.json()
    if data.get("base_resp", {}).get("status_code") != 0:
        raise RuntimeError(f"CreateAsset failed: {data}")
    return data["Id"]

def get_asset(asset_id: str) -> dict:
    resp = requests.post(
        f"{BASE_URL}/GetAsset",
        headers=HEADERS,
        json={"Id": asset_id},
    )
    resp.raise_for_status()
    return resp.json()

def poll_asset_active(asset_id: str, timeout_sec: int = 120, interval_sec: int = 3) -> dict:
    deadline = time.time() + timeout_sec
    while time.time() < deadline:
        data = get_asset(asset_id)
        status = data.get("Status", "")
        print(f"Asset status: {status}")
        if status == "Active":
            return data
        if status == "Failed":
            raise RuntimeError(f"Asset processing failed: {data}")
        time.sleep(interval_sec)
    raise TimeoutError("Polling asset status timed out")

if __name__ == "__main__":
    asset_id = create_asset("test asset", "https://static.example.com/character.png")
    print(f"Created asset: {asset_id}")
    result = poll_asset_active(asset_id)
    print("Asset ready:", result)
"""


def run_example(source: str, replacements: dict[str, str]) -> dict[str, Any]:
    for old, new in replacements.items():
        assert old in source, old
        source = source.replace(old, new)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<vendor example>", "exec"), namespace)
    return namespace


async def test_vendor_examples_run_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "input.png").write_bytes(mediagen.png(800, 1200))
    async with Emulator(config(processing_delay=0, validate_media=False)) as emu:
        key = {"your_api_key": emu.account.api_key}
        ns = await anyio.to_thread.run_sync(
            run_example,
            CHENYU_UPLOAD,
            {
                "https://www.chenyu.cn/api/open/v2": emu.chenyu_url,
                '"input.png"': repr(str(tmp_path / "input.png")),
                **key,
            },
        )
        ns["files"]["file"].close()  # the page's example leaves its file open
        asset_uri = ns["asset_uri"]
        assert asset_uri.startswith("asset://asset_")
        asset_id = asset_uri.removeprefix("asset://")
        await anyio.to_thread.run_sync(
            run_example,
            CHENYU_GET,
            {
                "https://www.chenyu.cn/api/open/v2": emu.chenyu_url,
                "asset_38d2ff7769fb3b7267039941547e6a78": asset_id,
                **key,
            },
        )
        ns = await anyio.to_thread.run_sync(
            run_example,
            GATEWAY,
            {
                "https://api.agentsflare.com/byteplus/_unstable/open": emu.gateway_url,
                "https://static.example.com/character.png": emu.media_url("png", 800, 1200),
                **key,
            },
        )
        assert ns["result"]["Status"] == "Active"
        assert emu.audit().uploads[0].media_type == "image"
    out = capsys.readouterr().out
    assert out.count(asset_uri) == 2
    assert "Created asset: asset-" in out
    assert "Asset status: Active" in out
