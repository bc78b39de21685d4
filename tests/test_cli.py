"""The small CLI commands, run as real subprocesses against a ``serve`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import serve_kit

pytestmark = pytest.mark.subprocess

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "media" / "sample-00.png"


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    with serve_kit.serve() as served:
        yield served.env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chenyu_assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_version_and_help() -> None:
    done = run(dict(os.environ), "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("chenyu-assets ")
    done = run(dict(os.environ))
    assert done.returncode == 2
    for command in ("ingest", "serve", "upload", "get", "list", "groups"):
        assert command in done.stdout


def test_groups_upload_get_list(env: dict[str, str]) -> None:
    created = lines(run(env, "groups", "--create", "cli-demo").stdout)
    group_id = str(created[0]["id"])
    listed = lines(run(env, "groups", "--name", "cli-demo").stdout)
    assert [g["id"] for g in listed] == [group_id]

    uploaded = run(env, "upload", str(EXAMPLE))
    assert uploaded.returncode == 0, uploaded.stderr
    asset = lines(uploaded.stdout)[0]
    assert str(asset["asset_uri"]).startswith("asset://asset_")
    assert "signed_url" not in asset  # bearer URLs only with --show-url
    with_url = lines(run(env, "get", str(asset["asset_id"]), "--show-url").stdout)[0]
    assert "signature=" in str(with_url["signed_url"])

    assert lines(run(env, "list", "--group-id", group_id).stdout) == []


def test_errors_are_reported_with_exit_code_4(env: dict[str, str]) -> None:
    done = run(env, "get", "asset-20260101000000-zzzzz")
    assert done.returncode == 4
    assert "NotFound.asset_id" in done.stderr
    assert "request_id=" in done.stderr
    bad = {**env, "VOLC_SECRETKEY": "WRONGsecretKEY0000000000000000000000000000=="}
    denied = run(bad, "groups")
    assert denied.returncode == 4
    assert "SignatureDoesNotMatch" in denied.stderr
    assert "WRONGsecret" not in denied.stderr


def test_get_takes_any_id_shape_and_a_service_override(env: dict[str, str]) -> None:
    """No id is validated by its shape: an ``assetgroup-``-style or short id goes to Ark;
    ``--service`` overrides the documented Chenyu heuristic (``asset_`` + 32 hex)."""
    odd = run(env, "get", "assetgroup-20260101000000-abcde")
    assert odd.returncode == 4
    assert "NotFound.asset_id" in odd.stderr  # Ark answered: the id was sent as it is
    assert "POST /" in odd.stderr
    chenyu_shaped = "asset_" + "0" * 32
    as_ark = run(env, "get", chenyu_shaped, "--service", "ark")
    assert as_ark.returncode == 4
    assert "NotFound.asset_id" in as_ark.stderr
    as_chenyu = run(env, "get", "asset-20260101000000-zzzzz", "--service", "chenyu")
    assert as_chenyu.returncode == 4
    assert "GET /api/open/v2/assets/asset-20260101000000-zzzzz" in as_chenyu.stderr  # Chenyu
    assert "NotFound.asset_id" not in as_chenyu.stderr
