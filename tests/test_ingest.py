"""Bulk ingest end to end: the emulator over 127.0.0.1, real files, real subprocesses.

The in-process runs are on virtual time (``@virtual``, the emulator on the same clock at
the real limits): the rate windows and the Processing cap are checked exactly, instantly.
The CLI runs (real processes, real time) check only what holds on a loaded machine.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestOptions, SourceItem, ingest, open_ingest
from chenyu_assets.chenyu import CHENYU_RATES, ChenyuClient
from chenyu_assets.emulator import Emulator, EmulatorConfig, FaultRule
from chenyu_assets.limits import ACTION_RATES, MAX_PROCESSING
from tests import mediagen, serve_kit
from tests import reliability_kit as rk
from tests.vclock import emulator_clock, virtual

SCALE = 10.0


def make_images(root: Path, n: int, *, start: int = 0) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    data = mediagen.png(640, 480)
    paths = []
    for i in range(start, start + n):
        path = root / f"img-{i:04d}.png"
        # distinct bytes per file (a comment chunk would do; the name is enough for keys)
        path.write_bytes(data)
        paths.append(path)
    return paths


def clients(emu: Emulator, scale: float = 1.0) -> tuple[ArkClient, ChenyuClient]:
    acct = emu.account
    ark = ArkClient(
        access_key=acct.access_key,
        secret_key=acct.secret_key,
        base_url=emu.url,
        rate_limits={k: v * scale for k, v in ACTION_RATES.items()},
    )
    chenyu = ChenyuClient(
        api_key=acct.api_key,
        base_url=emu.chenyu_url,
        rate_limits={k: v * scale for k, v in CHENYU_RATES.items()},
    )
    return ark, chenyu


def virtual_emulator() -> Emulator:
    """An emulator for a ``@virtual`` test, on the loop's virtual clock at the real limits
    (time scale 1, 2 s of processing): build it inside the test."""
    return Emulator(EmulatorConfig(processing_delay=2.0), clock=emulator_clock())


def assert_clean_audit(emu: Emulator, expected: int, scale: float = 1.0) -> None:
    audit = emu.audit()
    assert audit.duplicates() == {}
    assert len(audit.assets) == expected
    assert {a.status for a in audit.assets} == {"Active"}
    assert audit.rejected_429 == {} or sum(audit.rejected_429.values()) == 0
    for action, rate in ACTION_RATES.items():
        assert audit.max_in_window(action, window=1.0) <= rate * scale, action
    assert max(audit.max_processing.values()) <= MAX_PROCESSING


@virtual
async def test_300_items_all_active_no_duplicates_no_rejections(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        make_images(tmp_path / "src", 300)
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            report = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            )
        assert report.fatal is None
        assert (report.total, report.active, report.failed, report.skipped) == (300, 300, 0, 0)
        assert report.creates == 300
        assert report.rate_limited == 0
        assert report.max_processing_seen <= MAX_PROCESSING
        assert report.status_calls_per_asset < 1.0
        assert_clean_audit(emu, 300)
        statuses = [r.status for r in emu.audit().requests]
        assert all(200 <= s < 300 for s in statuses)


@virtual
async def test_rerun_resumes_without_a_single_request(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        make_images(tmp_path / "src", 20)
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            first = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            )
            before = len(emu.audit().requests)
            second = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            )
        assert first.active == second.active == 20
        assert second.resumed == 20
        assert len(emu.audit().requests) == before


@virtual
async def test_ambiguous_creates_are_reconciled_not_duplicated(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        make_images(tmp_path / "src", 40)
        emu.set_faults(
            [FaultRule(action="CreateAsset", kind="reset", phase="after", probability=0.3)]
        )
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            report = await ingest(
                ark,
                tmp_path / "src",
                group_id=group,
                journal=tmp_path / "j.db",
                chenyu=chenyu,
                options=IngestOptions(reconcile_wait=2.0),
            )
        assert report.active == 40
        assert report.recovered >= 1
        assert_clean_audit(emu, 40)
        # every create that was reset after commit was found again, never re-sent
        assert emu.audit().count("CreateAsset") == 40


@virtual
async def test_bad_items_fail_alone_and_results_stream(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        src = tmp_path / "src"
        make_images(src, 5)
        (src / "page.png").write_text("<html>not an image</html>")
        mediagen.write(src / "wide.png", mediagen.png(2500, 400))
        (src / "empty.png").write_bytes(b"")
        ark, chenyu = clients(emu)
        seen = []
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            async with open_ingest(
                ark, src, group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            ) as run:
                async for result in run:
                    seen.append(result)
        by_key = {r.key: r for r in seen}
        assert by_key["page.png"].status == "skipped"
        assert by_key["page.png"].error_code == "unrecognized"
        assert by_key["wide.png"].error_code == "image_ratio"
        assert by_key["empty.png"].error_code == "empty"
        assert run.report.active == 5
        assert all(
            r.reference and r.reference.startswith("asset://") for r in seen if r.status == "active"
        )


@virtual
async def test_url_manifest_and_server_side_failures(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        good = emu.media_url("png", 800, 800)
        bad_ratio = emu.media_url("png", 3000, 500)
        items = [
            SourceItem(key="good", path=None, url=good),
            SourceItem(key="ratio", path=None, url=bad_ratio),
            SourceItem(key="local-file-url", path=None, url="file:///etc/passwd"),
        ]
        ark, _ = clients(emu)
        async with ark:
            group = await ark.create_asset_group(name="urls")
            results = []
            report = await ingest(
                ark,
                items,
                group_id=group,
                options=IngestOptions(allow_private_urls=True),
                on_result=results.append,
            )
        by_key = {r.key: r for r in results}
        assert by_key["good"].status == "active"
        assert by_key["ratio"].status == "failed"
        assert by_key["ratio"].error_code == "InvalidParameter.ImageRatio"
        assert by_key["local-file-url"].error_code == "bad_url"
        assert report.total == 3


@virtual
async def test_private_addresses_are_refused_by_default() -> None:
    async with virtual_emulator() as emu:
        items = [
            SourceItem(key="lo", path=None, url=emu.media_url("png", 800, 800)),
            SourceItem(key="meta", path=None, url="http://169.254.169.254/latest/x.png"),
        ]
        ark, _ = clients(emu)
        async with ark:
            group = await ark.create_asset_group(name="urls")
            results = []
            await ingest(ark, items, group_id=group, on_result=results.append)
        assert {r.error_code for r in results} == {"bad_url"}
        assert emu.audit().count("CreateAsset") == 0


@virtual
async def test_urls_with_credentials_are_never_sent_nor_journaled(tmp_path: Path) -> None:
    secret = "urlPassw0rdCanary"
    url = f"https://user:{secret}@cdn.example.com/a.png"
    items = [
        SourceItem(key=url, path=None, url=url),  # the key is the URL, as manifests make it
        SourceItem(key="named", path=None, url=url),
    ]
    journal = tmp_path / "j.db"
    async with virtual_emulator() as emu:
        ark, _ = clients(emu)
        async with ark:
            group = await ark.create_asset_group(name="userinfo")
            results = []
            await ingest(ark, items, group_id=group, journal=journal, on_result=results.append)
        assert emu.audit().count("CreateAsset") == 0
    assert sorted((r.key, r.error_code) for r in results) == [
        ("https://***@cdn.example.com/a.png", "bad_url"),
        ("named", "bad_url"),
    ]
    assert all(secret not in repr(r) for r in results)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in raw
    with sqlite3.connect(journal) as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone() == (0,)
    conn.close()


@virtual
async def test_missing_group_is_a_fatal_stop_with_the_journal_intact(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        make_images(tmp_path / "src", 5)
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            report = await ingest(
                ark,
                tmp_path / "src",
                group_id="group-20260101000000-nope0",
                journal=tmp_path / "j.db",
                chenyu=chenyu,
            )
        assert report.fatal is not None
        assert "not found" in report.fatal
        conn = sqlite3.connect(tmp_path / "j.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = {s for (s,) in conn.execute("SELECT state FROM items")}
        assert states <= {"pending", "uploaded"}


# -- the CLI, killed at random moments ---------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``chenyu-assets serve`` in its own process, and the environment a CLI needs."""
    with serve_kit.serve("--time-scale", str(SCALE), "--data-dir", str(tmp_path / "emu")) as s:
        yield s.url, s.env


_cli = serve_kit.cli


def _audit(url: str) -> dict[str, object]:
    import urllib.request

    with urllib.request.urlopen(url + "/_emulator/audit", timeout=10) as resp:
        data: dict[str, object] = json.loads(resp.read())
    return data


@pytest.mark.subprocess
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment_then_rerun(
    served: tuple[str, dict[str, str]], tmp_path: Path, seed: int
) -> None:
    url, env = served
    n = 60
    make_images(tmp_path / "src", n)
    journal, out = tmp_path / "j.db", tmp_path / "results.jsonl"

    def args(rate_scale: float) -> list[str]:
        return [
            "ingest",
            str(tmp_path / "src"),
            "--group",
            "crash",
            "--journal",
            str(journal),
            "--rate-scale",
            str(rate_scale),
            "--no-progress",
            "--json",
        ]

    # the killed run creates at a fifth of the server's limits, so that the items left at
    # the kill moment are still in flight when the signal lands, even on a loaded machine
    proc = _cli(args(SCALE / 5), env)
    at_kill = rk.kill_mid_run(proc, journal, n, random.Random(seed))  # asserts mid-run
    codes = []
    for _ in range(4):  # rerun until it finishes
        done = subprocess.run(
            [sys.executable, "-m", "chenyu_assets.cli", *args(SCALE), "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        codes.append(done.returncode)
        if done.returncode == 0:
            break
    assert codes == [0], (at_kill, codes, done.stderr[-2000:])  # one rerun finishes the job
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["active"] == n
    assert summary["resumed"] == at_kill.get("active", 0)  # the finished ones were kept
    audit = _audit(url)
    assets = audit["assets"]
    assert isinstance(assets, list)
    names = [a["name"] for a in assets]
    assert len(names) == n
    assert len(set(names)) == n  # 0 duplicates
    assert {a["status"] for a in assets} == {"Active"}
    conn = sqlite3.connect(journal)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert {s for (s,) in conn.execute("SELECT state FROM items")} == {"active"}
