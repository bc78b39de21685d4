"""Exactly once whatever the journal (issue 13): adoption by Name, failed vs retryable.

In-process ingests on virtual time against the emulator over 127.0.0.1 (``@virtual``, the
emulator built inside the test on the loop's clock); the CLI tests are real processes.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import anyio
import pytest

from chenyu_assets._cli_groups import exact_groups, resolve_group
from chenyu_assets.batch import IngestOptions, ingest
from chenyu_assets.batch.adopt import NameIndex
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.types import retryable
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.emulator import Emulator, EmulatorConfig, FaultRule
from tests import mediagen, serve_kit
from tests.test_ingest import clients, make_images
from tests.vclock import emulator_clock, virtual


def emulator(delay: float = 2.0) -> Emulator:
    return Emulator(EmulatorConfig(processing_delay=delay), clock=emulator_clock())


def creates(emu: Emulator) -> int:
    return emu.audit().count("CreateAsset", 200)


@virtual
async def test_rerun_with_a_new_journal_creates_no_asset(tmp_path: Path) -> None:
    async with emulator() as emu:
        make_images(tmp_path / "src", 120)
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            first = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "a.db", chenyu=chenyu
            )
            sent_before = creates(emu)
            uploads_before = len(emu.audit().uploads)
            lists_before = emu.audit().count("ListAssets")
            second = await ingest(
                ark,
                tmp_path / "src",
                group_id=group,
                journal=tmp_path / "other" / "b.db",
                chenyu=chenyu,
            )
        assert (first.active, first.creates, first.adopted) == (120, 120, 0)
        assert (second.active, second.adopted, second.creates, second.failed) == (120, 120, 0, 0)
        assert creates(emu) == sent_before == 120  # 0 CreateAsset on the second run
        assert len(emu.audit().uploads) == uploads_before  # nothing staged again either
        # one walk of the group, 100 per call: ceil(120 / 100) = 2 ListAssets
        assert emu.audit().count("ListAssets") - lists_before == math.ceil(120 / 100)
        audit = emu.audit()
        assert audit.duplicates() == {}
        assert len(audit.assets) == 120


@virtual
async def test_processing_assets_are_adopted_and_watched(tmp_path: Path) -> None:
    async with emulator(delay=30.0) as emu:
        paths = make_images(tmp_path / "src", 5)
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            up = await chenyu.upload(paths[0])
            url = up.signed_url or up.url or up.content_url
            assert url
            made = [
                await ark.create_asset(group_id=group, url=url, name=asset_name(p.name))
                for p in paths[:3]  # another machine's run, still Processing
            ]
            report = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            )
        assert (report.active, report.adopted, report.creates) == (5, 3, 2)
        audit = emu.audit()
        assert audit.duplicates() == {}
        assert {a.status for a in audit.assets} == {"Active"}
        assert set(made) <= {a.id for a in audit.assets}
        assert len(audit.assets) == 5


async def _tiny_images(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):  # 100 px a side: the service refuses it (a verdict on the content)
        (root / f"tiny-{i}.png").write_bytes(mediagen.png(100, 100))


@virtual
async def test_content_failures_are_final_unless_retry_failed(tmp_path: Path) -> None:
    async with emulator() as emu:
        await _tiny_images(tmp_path / "src", 3)
        ark, chenyu = clients(emu)
        no_check = IngestOptions(preflight=False)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            first = await ingest(
                ark,
                tmp_path / "src",
                group_id=group,
                journal=tmp_path / "a.db",
                chenyu=chenyu,
                options=no_check,
            )
            plain = await ingest(  # same journal: nothing is sent again
                ark,
                tmp_path / "src",
                group_id=group,
                journal=tmp_path / "a.db",
                chenyu=chenyu,
                options=no_check,
            )
            adopted = await ingest(  # a new journal adopts the Failed assets, creates none
                ark,
                tmp_path / "src",
                group_id=group,
                journal=tmp_path / "b.db",
                chenyu=chenyu,
                options=no_check,
            )
            again = await ingest(
                ark,
                tmp_path / "src",
                group_id=group,
                journal=tmp_path / "a.db",
                chenyu=chenyu,
                options=IngestOptions(preflight=False, retry_failed=True),
            )
        assert (first.failed, first.retryable, first.creates) == (3, 0, 3)
        assert (plain.failed, plain.resumed, plain.creates) == (3, 3, 0)
        assert (adopted.failed, adopted.adopted, adopted.creates) == (3, 3, 0)
        assert (again.failed, again.deleted_failed, again.creates) == (3, 3, 3)
        audit = emu.audit()
        assert audit.count("DeleteAsset", 200) == 3
        assert len(audit.assets) == 3  # each Failed asset deleted before its retry
        assert audit.duplicates() == {}


@virtual
async def test_misconfigured_upload_url_fails_retryable_then_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    async with emulator() as emu:
        make_images(tmp_path / "src", 24)
        ark, chenyu = clients(emu)
        typo = ChenyuClient(api_key=emu.account.api_key, base_url=emu.chenyu_url + "/typo")
        async with ark, chenyu, typo:
            group = await ark.create_asset_group(name="bulk")
            bad = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "j.db", chenyu=typo
            )
            fixed = await ingest(
                ark, tmp_path / "src", group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            )
        assert bad.fatal is None
        assert (bad.failed, bad.retryable, bad.creates) == (24, 24, 0)
        assert set(bad.failures) == {"upload_failed"}
        assert (fixed.active, fixed.failed, fixed.creates) == (24, 0, 24)
        audit = emu.audit()
        assert len(audit.assets) == 24
        assert audit.duplicates() == {}


@virtual
async def test_racing_find_or_create_converges_on_the_oldest_group() -> None:
    # the first listings answer after 0.5 s: the racers find nothing and create
    slow = FaultRule(action="ListAssetGroups", kind="latency", delay=0.5, max_count=3)
    config = EmulatorConfig(processing_delay=2.0, faults=[slow])
    async with Emulator(config, clock=emulator_clock()) as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            ids: list[str] = []

            async def one() -> None:
                ids.append(await resolve_group(ark, None, "race"))

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(one)
            left = await exact_groups(ark, "race")
        audit = emu.audit()
        made = audit.count("CreateAssetGroup", 200)
        assert made >= 2  # the race really happened
        assert len(ids) == 3
        assert len(set(ids)) == 1
        assert [g.id for g in left] == ids[:1]
        assert audit.count("DeleteAssetGroup", 200) == made - 1


@virtual
async def test_transient_failed_assets_are_deleted_and_created_anew(tmp_path: Path) -> None:
    async with emulator() as emu:
        paths = make_images(tmp_path / "src", 4)
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            watched = await ark.create_asset_group(name="w")
            listed = await ark.create_asset_group(name="l")
            for group in (watched, listed):
                for p in paths[:2]:  # another run's assets whose download fails (transient)
                    await ark.create_asset(
                        group_id=group, url="http://127.0.0.1:9/gone.png", name=asset_name(p.name)
                    )
            src, opts = tmp_path / "src", {"chenyu": chenyu}
            # still Processing when listed: adopted, watched, Failed: retryable
            first = await ingest(ark, src, group_id=watched, journal=tmp_path / "w.db", **opts)
            rerun = await ingest(ark, src, group_id=watched, journal=tmp_path / "w.db", **opts)
            await anyio.sleep(10)  # virtual: the other group's assets are Failed by now
            fresh = await ingest(ark, src, group_id=listed, journal=tmp_path / "l.db", **opts)
        assert (first.active, first.failed, first.retryable, first.adopted) == (2, 2, 2, 2)
        assert set(first.failures) == {"InvalidParameter.DownloadFailed"}
        assert (rerun.active, rerun.deleted_failed, rerun.creates, rerun.resumed) == (4, 2, 2, 2)
        assert (fresh.active, fresh.deleted_failed, fresh.adopted, fresh.creates) == (4, 2, 0, 4)
        audit = emu.audit()
        assert len(audit.assets) == 8
        assert {a.status for a in audit.assets} == {"Active"}
        assert audit.duplicates() == {}


def test_retryable_codes() -> None:
    for code in ("InvalidParameter.DownloadFailed", "TranscodingFailed", "InternalError"):
        assert retryable(code), code
    assert retryable("upload_failed")
    assert retryable("create_retries_exhausted")
    for code in ("WidthTooSmall", "InvalidParameter.FormatUnsupported", "FaceMismatch", None):
        assert not retryable(code), code


def test_name_index_exact_match_and_preference() -> None:
    index = NameIndex()
    index.add("cat-0123456789abcdef", "asset-1", "Failed", "InvalidParameter.DownloadFailed")
    index.add("cat-0123456789abcdef", "asset-2", "Active")  # an Active one wins
    index.add("cat-0123456789abcdef", "asset-3", "Processing")
    found = index.get("cat-0123456789abcdef")
    assert found is not None
    assert (found.asset_id, found.status) == ("asset-2", "Active")
    assert index.get("cat-0123456789abcde") is None  # a substring is not the name
    assert index.get("xcat-0123456789abcdef") is None
    failed = NameIndex()
    failed.add("n", "asset-9", "Failed", "InvalidParameter.DownloadFailed")
    hit = failed.get("n")
    assert hit is not None
    assert hit.error_code == "InvalidParameter.DownloadFailed"


def _index_peak(n: int) -> tuple[NameIndex, int]:
    """Build an index of ``n`` synthetic assets (names shaped like ours) and return it with
    the peak of memory allocated while building it (tracemalloc)."""
    tracemalloc.start()
    try:
        index = NameIndex()
        for i in range(n):
            name = f"img-{i:07d}-{i * 2654435761 % 2**64:016x}"
            index.add(name, f"asset-20261204{i:012d}", "Active")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == n
    hit = index.get(f"img-{777:07d}-{777 * 2654435761 % 2**64:016x}")
    assert hit is not None
    assert hit.asset_id == f"asset-20261204{777:012d}"
    return index, peak


def test_name_index_stays_under_100_bytes_per_asset() -> None:
    _, peak = _index_peak(100_000)
    assert peak <= 100 * 100_000  # the 1,000,000-in-100-MB budget, per asset


@pytest.mark.slow
def test_name_index_of_a_million_assets_fits_in_100_mb() -> None:
    _, peak = _index_peak(1_000_000)
    print(f"NameIndex: 1,000,000 assets, peak {peak / 1e6:.1f} MB")
    assert peak <= 100e6


# -- the CLI (real processes on real time: only counts and exit codes are asserted) --------


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = serve_kit.cli(args, env)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_cli_groups_by_exact_name(tmp_path: Path) -> None:
    make_images(tmp_path / "src", 2)
    with serve_kit.serve("--time-scale", "10") as served:
        env = served.env
        rc, out, _ = _run(["groups", "--create", "photos-2024"], env)  # fuzzy-matches "photos"
        assert rc == 0
        rc, out, err = _run(["groups", "--create", "photos"], env)
        assert rc == 0, err
        first = json.loads(out)["id"]
        rc, out, err = _run(["groups", "--create", "photos"], env)
        assert rc == 4
        assert first in err
        assert "--allow-duplicate" in err
        rc, out, err = _run(["groups", "--create", "photos", "--allow-duplicate"], env)
        assert rc == 0, err
        second = json.loads(out)["id"]
        ingest_args = ["ingest", str(tmp_path / "src"), "--group", "photos", "--no-progress"]
        ingest_args += ["--journal", str(tmp_path / "j.db"), "--rate-scale", "10"]
        rc, out, err = _run(ingest_args, env)
        assert rc == 4
        [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert first in line
        assert second in line
        # an exact, unique name is used as it is; a new one is created once
        rc, out, err = _run([*ingest_args[:3], "photos-2024", *ingest_args[4:], "--json"], env)
        assert rc == 0, err
        rc, out, _ = _run(["groups", "--name", "photos"], env)
        names = [json.loads(line)["name"] for line in out.splitlines()]
        assert sorted(names) == ["photos", "photos", "photos-2024"]


def test_cli_misconfigured_upload_url_exits_retryable_then_rerun_finishes(tmp_path: Path) -> None:
    make_images(tmp_path / "src", 6)
    with serve_kit.serve("--time-scale", "10") as served:
        args = ["ingest", str(tmp_path / "src"), "--group", "g", "--no-progress", "--json"]
        args += ["--journal", str(tmp_path / "j.db"), "--rate-scale", "10"]
        args += ["--out", str(tmp_path / "out.jsonl")]
        typo = {**served.env, "CHENYU_BASE_URL": served.url + "/api/open/v3"}
        rc, out, err = _run(args, typo)
        assert rc == 5, err
        bad = json.loads(out.strip().splitlines()[-1])
        assert (bad["failed"], bad["retryable"], bad["creates"]) == (6, 6, 0)
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert {(r["status"], r["retryable"], r["error_code"]) for r in rows} == {
            ("failed", True, "upload_failed")
        }
        rc, out, err = _run(args, served.env)
        assert rc == 0, err
        fixed = json.loads(out.strip().splitlines()[-1])
        assert (fixed["active"], fixed["creates"], fixed["failed"]) == (6, 6, 0)


def test_cli_two_ingests_creating_one_group_converge_on_one(tmp_path: Path) -> None:
    # both may list (nothing), create, and list again: each must end in the oldest group
    # and the other group must be gone (whatever the interleaving, one group remains)
    make_images(tmp_path / "src", 2)
    with serve_kit.serve("--time-scale", "10") as served:
        procs = []
        for i in range(2):
            args = ["ingest", str(tmp_path / "src"), "--group", "race", "--no-progress"]
            args += ["--journal", str(tmp_path / f"{i}.db"), "--rate-scale", "10", "--json"]
            procs.append(serve_kit.cli(args, served.env))
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
        used = {json.loads(out.strip().splitlines()[-1])["group_id"] for out, _ in outs}
        rc, out, _ = _run(["groups", "--name", "race"], served.env)
        assert rc == 0
        remaining = [json.loads(line)["id"] for line in out.splitlines()]
        assert len(remaining) == 1
        assert used == set(remaining)
