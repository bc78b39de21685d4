"""Limits as data: the published profiles, the rates file, and the CLI flags that load them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chenyu_assets import ArkClient
from chenyu_assets.errors import ConfigurationError
from chenyu_assets.limits import ACTION_RATES, PROFILES, Rate, load_rates, profile_rates
from tests.serve_kit import cli, demo_env


def test_profiles_follow_the_published_tables() -> None:
    assert set(PROFILES) == {
        "volcengine",
        "byteplus-entry",
        "byteplus-advanced",
        "byteplus-premium",
    }
    default = profile_rates("volcengine")
    assert default["CreateAsset"] == Rate(30)
    assert default["GetAsset"] == Rate(100)
    assert set(default) == set(ACTION_RATES)
    for name, per_minute in (("entry", 3), ("advanced", 120), ("premium", 300)):
        table = profile_rates(f"byteplus-{name}")
        assert table["CreateAsset"] == Rate(per_minute, 60.0)
        assert {k: v for k, v in table.items() if k != "CreateAsset"} == {
            k: v for k, v in default.items() if k != "CreateAsset"
        }
    with pytest.raises(ConfigurationError, match="byteplus-entry"):
        profile_rates("nope")


def test_rates_file_overrides_its_profile(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"profile": "byteplus-entry", "rates": {"GetAsset": "50/s"}}))
    rates = load_rates(path)
    assert rates["CreateAsset"] == Rate(3, 60.0)
    assert rates["GetAsset"] == Rate(50)
    assert load_rates(path, profile="volcengine")["CreateAsset"] == Rate(30)
    path.write_text(json.dumps({"rates": {"GetAsset": "fast"}}))
    with pytest.raises(ConfigurationError, match="not a rate"):
        load_rates(path)


def test_ark_client_takes_a_profile_rates_and_the_deprecated_names() -> None:
    keys = {"access_key": "AK", "secret_key": "SK", "base_url": "http://127.0.0.1:9"}
    ark = ArkClient(**keys, limits_profile="byteplus-premium", rates={"GetAsset": "20/s"})
    assert ark.limiters.rate_for("CreateAsset") == Rate(300, 60.0)
    assert ark.limiters.rate_for("GetAsset") == Rate(20)
    old = ArkClient(**keys, rate_limits={"CreateAsset": 5.0})
    assert old.limiters.rate_for("CreateAsset") == Rate(5)


def test_cli_rejects_a_bad_rates_file_and_an_unknown_profile(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    bad = tmp_path / "rates.json"
    bad.write_text("{not json")
    env = demo_env("http://127.0.0.1:9")
    proc = cli(["ingest", str(tmp_path / "src"), "--group", "g", "--rates", str(bad)], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, (out, err)
    assert "rates file" in out + err
    proc = cli(["ingest", str(tmp_path / "src"), "--group", "g", "--limits-profile", "x"], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "byteplus-advanced" in err
