"""S3 staging end to end: moto's standalone S3 server in its own process on 127.0.0.1, the
emulator fetching the presigned URLs from it, real files, the CLI as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import pytest

from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import Event, IngestOptions, S3Stage, ingest
from chenyu_assets.emulator import Emulator, EmulatorConfig
from chenyu_assets.errors import ConfigurationError, NotFoundError
from chenyu_assets.limits import ACTION_RATES
from tests import mediagen, serve_kit

pytest.importorskip("aiobotocore")
pytest.importorskip("moto")

SCALE = 10.0
MIB = 1024 * 1024
ACCESS_KEY = "AKIACANARYACCESS0001"
SECRET_KEY = "canary-secret-Zm9vYmFyYmF6cXV4-0123456789"
SESSION_TOKEN = "canary-session-token-c2Vzc2lvbi10b2tlbi1jYW5hcnk"
PUT_LINE = re.compile(r'"(PUT|POST) /[^ ]+ HTTP/1\.1" 200')


class Moto(NamedTuple):
    url: str
    authority: str
    log: Path

    def writes(self) -> int:
        """PUT/POST requests moto answered 200 (object PUTs, parts, multipart starts)."""
        return len(PUT_LINE.findall(self.log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = None
        for _ in range(600):  # hang guard: 30 s for the server to print its address
            found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())
            if found:
                url = found.group(1)
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        assert url, log.read_text()
        yield Moto(url, url.removeprefix("http://"), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Canary credentials through the standard environment variables, nothing from ~/.aws."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def stage_for(moto: Moto, bucket: str, **kw: object) -> S3Stage:
    return S3Stage(
        bucket=bucket, prefix="staging/run", endpoint_url=moto.url, region="us-east-1", **kw
    )  # type: ignore[arg-type]


async def make_bucket(moto: Moto) -> str:
    from aiobotocore.session import get_session

    name = f"bkt-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto.url
    ) as c:
        await c.create_bucket(Bucket=name)
    return name


async def object_keys(moto: Moto, bucket: str) -> list[str]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto.url
    ) as c:
        answer = await c.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in answer.get("Contents", []))


def make_images(root: Path, n: int) -> list[Path]:
    """``n`` PNGs with distinct bytes (content addressing would merge equal ones)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"img-{i:03d}.png"
        path.write_bytes(mediagen.png(640 + i, 480))
        paths.append(path)
    return paths


def ark_for(emu: Emulator) -> ArkClient:
    acct = emu.account
    return ArkClient(
        access_key=acct.access_key,
        secret_key=acct.secret_key,
        base_url=emu.url,
        rate_limits={k: v * SCALE for k, v in ACTION_RATES.items()},
    )


@pytest.fixture
async def emu(moto: Moto) -> AsyncIterator[Emulator]:
    config = EmulatorConfig(
        time_scale=SCALE, processing_delay=0.5, fetch_allowlist=(moto.authority,)
    )
    async with Emulator(config) as e:
        yield e


def assert_all_active(emu: Emulator, expected: int) -> None:
    audit = emu.audit()
    assert audit.duplicates() == {}
    assert len(audit.assets) == expected
    assert {a.status for a in audit.assets} == {"Active"}


# -- the whole path --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_s3_stage_ingest_all_active_then_reruns(
    moto: Moto, emu: Emulator, tmp_path: Path
) -> None:
    make_images(tmp_path / "src", 12)
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket))
    events: list[Event] = []
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        writes0 = moto.writes()
        first = await ingest(
            ark,
            tmp_path / "src",
            group_id=group,
            journal=tmp_path / "j1.db",
            options=options,
            on_event=events.append,
        )
        writes1 = moto.writes()
        # the same journal: everything is finished, nothing is sent anywhere
        same = await ingest(
            ark, tmp_path / "src", group_id=group, journal=tmp_path / "j1.db", options=options
        )
        writes2 = moto.writes()
    assert first.fatal is None
    assert (first.total, first.active, first.failed, first.skipped) == (12, 12, 0, 0)
    assert first.creates == 12
    assert first.staging is not None
    assert (first.staging.uploads, first.staging.reused, first.staging.refreshed) == (12, 0, 0)
    assert writes1 - writes0 == 12  # one PUT per object at moto
    assert_all_active(emu, 12)
    keys = await object_keys(moto, bucket)
    assert len(keys) == 12
    assert all(re.fullmatch(r"staging/run/[0-9a-f]{64}", k) for k in keys)
    assert not any(e.kind == "url_refreshed" for e in events)
    # CreateAsset got SigV4 presigned GET URLs of the content-addressed objects
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "src").iterdir()}
    seen = set()
    for asset in emu.audit().assets:
        url = urlsplit(asset.url)
        query = dict(parse_qsl(url.query))
        assert url.netloc == moto.authority
        assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert query["X-Amz-Expires"] == str(12 * 3600)
        assert query["X-Amz-Security-Token"] == SESSION_TOKEN  # only the service sees it
        assert url.path.startswith(f"/{bucket}/staging/run/")
        seen.add(url.path.rsplit("/", 1)[1])
    assert seen == digests
    assert (same.active, same.resumed, same.creates) == (12, 12, 0)
    assert same.staging is not None
    assert same.staging.heads == 0
    assert writes2 == writes1
    assert_all_active(emu, 12)


@pytest.mark.anyio
async def test_new_journal_uploads_nothing_again(moto: Moto, emu: Emulator, tmp_path: Path) -> None:
    make_images(tmp_path / "src", 6)
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket))
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        await ingest(
            ark, tmp_path / "src", group_id=group, journal=tmp_path / "a.db", options=options
        )
        before = moto.writes()
        second = await ingest(
            ark, tmp_path / "src", group_id=group, journal=tmp_path / "b.db", options=options
        )
    assert (second.active, second.adopted, second.creates) == (6, 6, 0)
    assert second.staging is not None
    # adopted by Name before staging: not even a HEAD (issue 13), 0 PUT/POST at moto
    assert (second.staging.uploads, second.staging.reused, second.staging.heads) == (0, 0, 0)
    assert moto.writes() == before


@pytest.mark.anyio
async def test_new_journal_creates_no_asset_again(
    moto: Moto, emu: Emulator, tmp_path: Path
) -> None:
    make_images(tmp_path / "src", 3)
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket))
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        await ingest(
            ark, tmp_path / "src", group_id=group, journal=tmp_path / "a.db", options=options
        )
        second = await ingest(
            ark, tmp_path / "src", group_id=group, journal=tmp_path / "b.db", options=options
        )
    assert second.creates == 0
    assert second.adopted == 3
    assert second.active == 3
    assert_all_active(emu, 3)


@pytest.mark.anyio
async def test_url_with_too_little_validity_left_is_presigned_again_before_create(
    moto: Moto, emu: Emulator, tmp_path: Path
) -> None:
    # a 60 s URL against a 1 h minimum: by the time each item has its processing slot, its
    # URL is (for the pipeline) too short-lived, so it must be presigned again first
    make_images(tmp_path / "src", 5)
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket, url_ttl=60.0), url_min_validity=3600.0)
    events: list[Event] = []
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        report = await ingest(
            ark, tmp_path / "src", group_id=group, options=options, on_event=events.append
        )
    assert report.active == 5
    assert report.staging is not None
    assert report.staging.refreshed == 5
    assert report.staging.presigned == 10  # once after staging, once before CreateAsset
    assert {
        dict(parse_qsl(urlsplit(a.url).query))["X-Amz-Expires"] for a in emu.audit().assets
    } == {"60"}
    for key in {e.key for e in events if e.kind == "created"}:
        kinds = [e.kind for e in events if e.key == key]
        assert kinds.index("uploaded") < kinds.index("url_refreshed") < kinds.index("created")
    assert_all_active(emu, 5)


@pytest.mark.anyio
async def test_cleanup_deletes_staged_objects_of_active_items_shared_bytes_once(
    moto: Moto, emu: Emulator, tmp_path: Path
) -> None:
    paths = make_images(tmp_path / "src", 4)
    (tmp_path / "src" / "copy.png").write_bytes(paths[0].read_bytes())  # same bytes, 1 object
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket, cleanup=True))
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        report = await ingest(ark, tmp_path / "src", group_id=group, options=options)
    assert report.active == 5
    assert report.staging is not None
    assert report.staging.uploads + report.staging.reused == 5
    assert report.staging.uploads >= 4
    assert report.staging.deleted == 4
    assert await object_keys(moto, bucket) == []
    assert_all_active(emu, 5)


@pytest.mark.anyio
async def test_missing_bucket_is_a_fatal_stop_with_a_typed_safe_error(
    moto: Moto, emu: Emulator, tmp_path: Path
) -> None:
    make_images(tmp_path / "src", 2)
    options = IngestOptions(stage=stage_for(moto, "no-such-bucket-here"))
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        report = await ingest(ark, tmp_path / "src", group_id=group, options=options)
    assert report.fatal is not None
    assert "no-such-bucket-here" in report.fatal
    assert SECRET_KEY not in report.fatal
    assert SESSION_TOKEN not in report.fatal
    assert emu.audit().count("CreateAsset") == 0
    src = tmp_path / "src" / "img-000.png"
    data = src.read_bytes()
    async with stage_for(moto, "no-such-bucket-here").client() as client:
        with pytest.raises(NotFoundError) as info:
            await client.put_file(
                src,
                "no-such-bucket-here",
                "k",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                part_size=5 * MIB,
            )
    err = info.value
    assert err.code == "NoSuchBucket"
    assert err.__cause__ is None
    assert err.__context__ is None  # botocore's exception (and its request) is gone
    assert SECRET_KEY not in repr(err.__dict__)


def test_stage_configuration_is_validated() -> None:
    assert S3Stage.from_uri("s3://b/a/b/").prefix == "a/b"
    assert S3Stage.from_uri("s3://b").key_for("ab") == "ab"
    for bad in ("s3:/b", "http://b/x", "s3://b/x?y=1"):
        with pytest.raises(ConfigurationError):
            S3Stage.from_uri(bad)
    with pytest.raises(ConfigurationError, match="7 days"):
        S3Stage(bucket="b", url_ttl=8 * 24 * 3600.0)
    with pytest.raises(ConfigurationError, match="5 MiB"):
        S3Stage(bucket="b", part_size=MIB)


# -- bounded memory --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_100_mb_file_is_staged_multipart_in_bounded_memory(
    moto: Moto, tmp_path: Path
) -> None:
    path = mediagen.big_png(tmp_path / "big.png", 100 * MIB)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    bucket = await make_bucket(moto)
    part = 8 * MIB
    parts_seen: list[int] = []
    async with stage_for(moto, bucket).client() as client:
        rss_base = _reset_peak_rss()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            sent = await client.put_file(
                path,
                bucket,
                "big",
                size=path.stat().st_size,
                sha256=digest.hexdigest(),
                part_size=part,
                on_part=lambda: parts_seen.append(1),
            )
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        rss_growth = _peak_rss() - rss_base if rss_base is not None else None
        assert await client.head(bucket, "big") == 100 * MIB
    assert sent == len(parts_seen) == 13  # ceil(100 / 8)
    print(f"peak Python memory while staging 100 MiB in 8 MiB parts: {peak / MIB:.1f} MiB")
    assert peak < 3 * part  # one part read + botocore's view of it, never the file
    if rss_growth is not None:  # the whole process, C buffers included (Linux)
        print(f"peak RSS growth: {rss_growth / MIB:.1f} MiB")
        assert rss_growth < 6 * part


def _reset_peak_rss() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux clear_refs "5"); the current RSS, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kb("VmRSS") * 1024


def _peak_rss() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


# -- credentials never leak -------------------------------------------------------------------


def test_cli_stage_s3_never_shows_credentials(moto: Moto, tmp_path: Path) -> None:
    import asyncio

    make_images(tmp_path / "src", 4)
    bucket = asyncio.run(make_bucket(moto))
    config = tmp_path / "emu.json"
    config.write_text(json.dumps({"fetch_allowlist": [moto.authority], "processing_delay": 0.2}))
    with serve_kit.serve("--config", str(config), "--time-scale", str(SCALE)) as served:
        env = {k: v for k, v in served.env.items() if not k.startswith("CHENYU_")}
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_SESSION_TOKEN=SESSION_TOKEN,
            AWS_ENDPOINT_URL_S3=moto.url,
            AWS_REGION="us-east-1",
            AWS_CONFIG_FILE=str(tmp_path / "none"),
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        )
        outputs = []
        # two groups: in one group the second run would adopt the first run's assets
        # (issue 13) and never reach the bad bucket
        runs = ((f"s3://{bucket}/p", "ok.db", "canary"), ("s3://no-such-bkt-9/p", "bad.db", "c2"))
        for stage, journal, group in runs:
            args = ["-vv", "ingest", str(tmp_path / "src"), "--group", group]
            args += ["--journal", str(tmp_path / journal), "--out", str(tmp_path / "out.jsonl")]
            args += ["--stage", stage, "--rate-scale", str(SCALE), "--no-progress", "--json"]
            proc = serve_kit.cli(args, env)
            out, err = proc.communicate(timeout=120)
            outputs.append((proc.returncode, out, err))
    (rc_ok, out_ok, err_ok), (rc_bad, out_bad, err_bad) = outputs
    assert rc_ok == 0, err_ok
    summary = json.loads(out_ok.strip().splitlines()[-1])
    assert summary["active"] == 4
    assert summary["staging"]["uploads"] == 4
    assert rc_bad == 4, err_bad
    assert "no-such-bkt-9" in err_bad
    assert "DEBUG" in err_ok  # -vv really logged
    blobs = [out_ok, err_ok, out_bad, err_bad, (tmp_path / "out.jsonl").read_text()]
    for db in tmp_path.glob("*.db*"):
        blobs.append(db.read_bytes().decode("latin-1"))
    for blob in blobs:
        assert SECRET_KEY not in blob
        assert SESSION_TOKEN not in blob
        assert "X-Amz-Signature=" not in blob or "X-Amz-Signature=***" in blob
    journal = (tmp_path / "ok.db").read_bytes()
    assert f"s3://{bucket}/p/".encode() in journal  # the journal keeps where, not the URL
    assert b"X-Amz-" not in journal


def test_missing_extra_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    # a process where aiobotocore cannot be imported (as without the extra)
    code = (
        "import sys, asyncio\n"
        "sys.modules['aiobotocore'] = None\n"
        "sys.modules['aiobotocore.session'] = None\n"
        "from chenyu_assets.batch import S3Stage\n"
        "from chenyu_assets.errors import ConfigurationError\n"
        "async def main():\n"
        "    async with S3Stage(bucket='b').client():\n"
        "        pass\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "chenyu-assets[s3]" in out.stdout


@pytest.mark.anyio
async def test_a_server_that_never_answers_ends_by_the_deadline_as_a_typed_error() -> None:
    import asyncio

    from chenyu_assets.errors import RequestTimeoutError

    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read the request, never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stage = S3Stage(
        bucket="bkt-silent",
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        read_timeout=30.0,
        max_attempts=1,
        deadline=0.3,
    )
    try:
        async with stage.client() as client:
            with pytest.raises(RequestTimeoutError, match=r"within 0\.3 s") as info:
                await asyncio.wait_for(client.head("bkt-silent", "k"), timeout=30)  # hang guard
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert info.value.__context__ is None
    assert SECRET_KEY not in str(info.value)


@pytest.mark.anyio
async def test_emulator_without_the_allow_list_refuses_the_bucket(
    moto: Moto, tmp_path: Path
) -> None:
    # negative control: the emulator really fetches the presigned URL, and only because
    # fetch_allowlist names moto's host:port (a private address is refused otherwise)
    make_images(tmp_path / "src", 2)
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket))
    config = EmulatorConfig(time_scale=SCALE, processing_delay=0.2)
    async with Emulator(config) as closed, ark_for(closed) as ark:
        group = await ark.create_asset_group(name="staged")
        report = await ingest(ark, tmp_path / "src", group_id=group, options=options)
    assert (report.active, report.failed) == (0, 2)
    assert all("DownloadFailed" in code for code in report.failures), report.failures


@pytest.mark.anyio
async def test_staged_objects_are_private(moto: Moto, emu: Emulator, tmp_path: Path) -> None:
    from aiobotocore.session import get_session

    make_images(tmp_path / "src", 1)
    bucket = await make_bucket(moto)
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        report = await ingest(
            ark,
            tmp_path / "src",
            group_id=group,
            options=IngestOptions(stage=stage_for(moto, bucket)),
        )
    assert report.active == 1
    (key,) = await object_keys(moto, bucket)
    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto.url) as c:
        acl = await c.get_object_acl(Bucket=bucket, Key=key)
    grantees = [g["Grantee"] for g in acl["Grants"]]
    assert all(g.get("Type") == "CanonicalUser" for g in grantees), grantees  # owner only


@pytest.mark.anyio
async def test_a_run_stopped_early_resumes_without_duplicates_or_second_uploads(
    moto: Moto, emu: Emulator, tmp_path: Path
) -> None:
    from chenyu_assets.batch import open_ingest

    make_images(tmp_path / "src", 10)
    bucket = await make_bucket(moto)
    options = IngestOptions(stage=stage_for(moto, bucket))
    journal = tmp_path / "j.db"
    async with ark_for(emu) as ark:
        group = await ark.create_asset_group(name="staged")
        async with open_ingest(
            ark, tmp_path / "src", group_id=group, journal=journal, options=options
        ) as run:
            async for _result in run:
                break  # leave early: the run is cancelled, the journal stays consistent
        first = run.report.staging
        second = await ingest(
            ark, tmp_path / "src", group_id=group, journal=journal, options=options
        )
    assert first is not None
    assert second.staging is not None
    assert second.active == 10
    assert first.uploads + second.staging.uploads <= 10  # no object is uploaded twice
    assert len(await object_keys(moto, bucket)) == 10
    assert_all_active(emu, 10)


def test_cli_embedded_emulator_allows_the_stage_endpoint_and_cleans_up(
    moto: Moto, tmp_path: Path
) -> None:
    import asyncio

    make_images(tmp_path / "src", 3)
    bucket = asyncio.run(make_bucket(moto))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHENYU_", "VOLC_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    base = ["ingest", str(tmp_path / "src"), "--emulator", "--no-progress", "--json"]
    base += ["--emulator-time-scale", str(SCALE), "--rate-scale", str(SCALE)]
    ok = serve_kit.cli(
        [*base, "--stage", f"s3://{bucket}/x", "--s3-endpoint", moto.url, "--stage-cleanup"], env
    )
    out, err = ok.communicate(timeout=120)
    assert ok.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["active"] == 3
    assert (summary["staging"]["uploads"], summary["staging"]["deleted"]) == (3, 3)
    assert asyncio.run(object_keys(moto, bucket)) == []
    bad = serve_kit.cli([*base, "--stage-cleanup"], env)  # clean-up needs an S3 stage
    _out, err = bad.communicate(timeout=60)
    assert bad.returncode == 4
    assert "--stage-cleanup needs --stage s3://" in err
