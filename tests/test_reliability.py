"""Reliability under load and faults (issue 8, "Faults"): figures that show nothing is lost,
duplicated or leaked.

* soak — N items through the whole ingest (upload → create → poll) under the fault mix of
  :func:`reliability_kit.fault_mix` (per request, seeded) on CreateAsset, GetAsset,
  ListAssets and the Chenyu UploadAsset, plus list lag;
* crash — the ingest process SIGKILLed at a seeded random moment under the same mix, rerun
  until it exits 0; and at the two dangerous instants of a create (intent journaled but
  nothing sent; sent and committed but no outcome journaled), with the real CLI;
* retry storms, hangs, a 1 byte/s upload, Retry-After in every form, a 429 pausing every
  task, and a skewed clock, against the in-process emulator or a tiny local server;
* regressions for the bugs these runs found in the batch engine.

The CI-sized runs are the default; ``@pytest.mark.slow`` ones (2,000-item soak, longer crash
runs) run with ``pytest -m slow``. Every test prints its figures (``-s`` shows them); with
``RELIABILITY_RECORD=1`` they are also appended to ``benchmarks/results/reliability.jsonl``.
``benchmarks/soak.py`` is the same soak as a script.

Definitions used in the figures: see :data:`reliability_kit.DEFINITIONS`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chenyu_assets._core.retry import RetryBudget, RetryPolicy
from chenyu_assets._core.transport import Timeouts
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestOptions, SourceItem, ingest
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.emulator import Emulator, EmulatorConfig, FaultRule
from chenyu_assets.errors import (
    BadRequestError,
    ChenyuAssetsError,
    RequestTimeoutError,
    ServerError,
)
from chenyu_assets.limits import ACTION_RATES, MAX_PROCESSING
from tests import mediagen
from tests import reliability_kit as rk
from tests.vclock import emulator_clock, virtual

SCALE = 10.0  # the emulator runs 10× faster; every client rate is scaled the same
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_elapsed=10)
RECORD = os.environ.get("RELIABILITY_RECORD") == "1"


def show(name: str, rows: list[dict[str, Any]], **meta: Any) -> None:
    rk.report(name, rows, record=RECORD, **meta)


def ark_for(emu: Emulator, **kw: Any) -> ArkClient:
    opts: dict[str, Any] = {"retry": FAST, **kw}
    return ArkClient(
        access_key=emu.account.access_key,
        secret_key=emu.account.secret_key,
        base_url=emu.url,
        **opts,
    )


def virtual_emulator(**overrides: Any) -> Emulator:
    """The :func:`emu` emulator for a ``@virtual`` test: built on this loop, on its clock
    (rate windows, hangs, processing and audit times are all virtual)."""
    config = EmulatorConfig(**{"processing_delay": 0.05, "processing_jitter": 0, **overrides})
    return Emulator(config, clock=emulator_clock())


# == soak ================================================================================


def check(out: rk.Outcome, n: int) -> None:
    """The pass criteria of a soak or crash run."""
    figs, audit = out.figures, out.audit
    assert out.runs[-1].code == 0, (out.runs[-1].summary, out.runs[-1].stderr[-3000:])
    assert figs.problems == []
    assert figs.passed  # lost 0, duplicated 0, unexpected 0
    assert figs.active == n
    assert figs.extra["journal_integrity"] == "ok"
    assert figs.extra["faults"] > 0.1 * figs.extra["requests"]  # the mix really was on
    # the pacing held under faults: no window over the scaled limits, the cap respected
    for action in ("CreateAsset", "ListAssets", "GetAsset"):
        assert audit.max_in_window(action, window=1.0) <= ACTION_RATES[action] * SCALE
    assert max(audit.max_processing.values()) <= MAX_PROCESSING


def soak(tmp_path: Path, n: int, seed: int) -> None:
    mix = rk.Mix()
    out = rk.ingest_under_faults(tmp_path, n, seed=seed, mix=mix, time_scale=SCALE, max_runs=1)
    show(
        f"soak n={n} seed={seed}",
        [out.figures.row()],
        mix=mix.describe(),
        definitions=rk.DEFINITIONS,
    )
    check(out, n)
    assert out.figures.recovered >= 1


@pytest.mark.subprocess
def test_soak_300_items_under_the_fault_mix(tmp_path: Path) -> None:
    soak(tmp_path, 300, seed=8)


@pytest.mark.subprocess
@pytest.mark.slow
def test_soak_2000_items_under_the_fault_mix(tmp_path: Path) -> None:
    soak(tmp_path, 2000, seed=2000)


# == crash: SIGKILL at a random moment, under faults ======================================


def crash(tmp_path: Path, n: int, seed: int, kills: int) -> None:
    mix = rk.Mix()
    out = rk.ingest_under_faults(tmp_path, n, seed=seed, kills=kills, mix=mix, time_scale=SCALE)
    figs = out.figures
    at_kill = out.killed_at[0]
    figs.extra["at_kill"] = " ".join(
        f"{k}:{v}" for k, v in sorted(at_kill.items()) if k in ("creating", "unknown")
    )
    show(f"crash n={n} seed={seed} kills={kills}", [figs.row()], mix=mix.describe())
    check(out, n)
    # assets whose create got no usable answer (a fault after the commit, or the kill)
    # exist once each: reconciliation adopted every one of them (in whichever run)
    assert figs.extra["committed_unanswered"] >= 1


@pytest.mark.subprocess
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_under_faults_then_rerun(tmp_path: Path, seed: int) -> None:
    crash(tmp_path, 60, seed, kills=1)


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("seed", [101, 102, 103])
def test_sigkill_three_times_under_faults_300_items(tmp_path: Path, seed: int) -> None:
    crash(tmp_path, 300, seed, kills=3)


# == crash at the dangerous instants of a create (the real CLI) ============================


def _cli_args(tmp_path: Path, group: str) -> list[str]:
    return [
        "ingest",
        str(tmp_path / "src"),
        "--group-id",
        group,
        "--journal",
        str(tmp_path / "j.db"),
        "--out",
        str(tmp_path / "r.jsonl"),
        "--rate-scale",
        str(SCALE),
        "--no-progress",
        "--json",
    ]


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("phase", "committed"),
    [
        pytest.param("before", False, id="intent-journaled-nothing-sent"),
        pytest.param("after", True, id="sent-committed-no-outcome"),
    ],
)
def test_kill_at_a_dangerous_instant_of_a_create(
    tmp_path: Path, phase: str, committed: bool
) -> None:
    n = 20
    keys = rk.make_images(tmp_path / "src", n)
    journal = tmp_path / "j.db"
    with rk.Served(tmp_path / "emu", time_scale=SCALE) as served:
        group = served.create_group("instant")
        # every CreateAsset hangs: "before" = the server never commits it, "after" = it
        # commits, then never answers. The CLI's read timeout is 60 s: it waits.
        served.set_faults(
            [{"family": "ark", "action": "CreateAsset", "kind": "hang", "phase": phase}]
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "chenyu_assets.cli", *_cli_args(tmp_path, group)],
            env=served.env,
            cwd=rk.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        rk.wait_for_state(journal, "creating", timeout=60)
        # the kill lands at the dangerous instant: a create the journal holds as intent
        # is at the server, hanging (the fault fired), polled for, not slept for
        give_up = time.monotonic() + 60
        while not served.fired()[0]:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < give_up, "no CreateAsset reached the server in 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        at_kill = [k for k, s in rk.states(journal).items() if s == "creating"]
        fired = served.fired()[0]
        give_up = time.monotonic() + 30  # the server notices every dead connection
        while sum(r.code == "fault:hang" for r in served.audit().requests) < fired:
            assert time.monotonic() < give_up, "the server never saw the connections close"
            time.sleep(0.05)
        served.set_faults([])
        before = served.audit()
        assets_before = len([a for a in before.assets if a.group_id == group])
        rerun = subprocess.run(
            [sys.executable, "-m", "chenyu_assets.cli", *_cli_args(tmp_path, group)],
            env=served.env,
            cwd=rk.ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        audit = served.audit()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    creates = [r for r in audit.requests if r.action == "CreateAsset"]
    hung = [r for r in creates if r.code == "fault:hang"]
    figs = rk.figures(
        keys,
        audit=audit,
        group_id=group,
        journal=journal,
        results=tmp_path / "r.jsonl",
        recovered=int(summary["recovered"]),
    )
    figs.extra.update(
        creating_at_kill=len(at_kill),
        hung_creates=len(hung),
        assets_before_rerun=assets_before,
        rerun_creates=summary["creates"],
    )
    show(f"kill with CreateAsset hanging {phase} the commit", [figs.row()])
    assert at_kill
    assert hung
    assert len(hung) <= len(at_kill)
    assert figs.problems == []
    assert figs.passed
    assert figs.active == n
    assert figs.extra["journal_integrity"] == "ok"
    names = [a.name for a in audit.assets if a.group_id == group]
    assert len(names) == len(set(names)) == n  # exactly one asset per item
    assert sum(1 for r in creates if r.status == 200) == n - (len(hung) if committed else 0)
    if committed:
        # the hung creates committed: reconciliation found every one, none was sent again
        assert assets_before == len(hung)
        assert len(creates) == n
        assert summary["recovered"] == len(hung)
        assert summary["creates"] == n - len(hung)
    else:
        # nothing was committed: reconciliation found nothing and each was created once
        assert assets_before == 0
        assert len(creates) == n + len(hung)
        assert summary["recovered"] == 0
        assert summary["creates"] == n


# == retry storms ===========================================================================


@pytest.mark.parametrize(
    ("budget", "attempts", "calls", "deadline"),
    [
        pytest.param(RetryBudget, 5, 100, 2.0, id="default-budget"),
        pytest.param(
            lambda: RetryBudget(ratio=0.1, floor_per_second=0.0, capacity=5),
            5,
            100,
            2.0,
            id="tight-budget",
        ),
        # a budget too big to bind and unlimited attempts: the deadline alone ends each call
        pytest.param(
            lambda: RetryBudget(ratio=1.0, floor_per_second=1000.0, capacity=10_000),
            10_000,
            20,
            1.0,
            id="deadline-only",
        ),
    ],
)
@virtual
async def test_retry_storm_is_bounded_and_every_call_ends_by_its_deadline(
    budget: Any, attempts: int, calls: int, deadline: float
) -> None:
    spend = budget()
    policy = RetryPolicy(max_attempts=attempts, base_delay=0.05, max_delay=0.4, max_elapsed=30)
    rates = {**ACTION_RATES, "GetAsset": 1000.0}
    loop = asyncio.get_running_loop()
    async with (
        virtual_emulator() as emu,
        # processing_slots=None: no watcher sweep beside the storm (it would add requests
        # of its own to the counts this test bounds)
        ark_for(
            emu, retry=policy, retry_budget=spend, rate_limits=rates, processing_slots=None
        ) as ark,
    ):
        group = await ark.create_asset_group(name="g")
        asset_id = await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        emu.set_faults([FaultRule(family="ark", action="GetAsset", status=503)])
        before = emu.audit().count("GetAsset")
        durations: list[float] = []

        async def one() -> BaseException | None:
            started = loop.time()
            try:
                await ark.get_asset(asset_id, deadline=deadline)
            except ChenyuAssetsError as exc:
                return exc
            finally:
                durations.append(loop.time() - started)
            return None

        # RetryBudget refills its floor on time.monotonic (real time), so the allowance
        # takes the real elapsed time (an upper bound: real time runs slower than virtual)
        real_started = time.monotonic()
        outcomes = await asyncio.gather(*(one() for _ in range(calls)))
        real_elapsed = time.monotonic() - real_started
        sent = emu.audit().count("GetAsset") - before
    allowance = spend._capacity + spend._ratio * calls + spend._floor * real_elapsed
    kinds = sorted({type(o).__name__ for o in outcomes})
    show(
        f"retry storm: every GetAsset answers 503 ({calls} calls at once)",
        [
            {
                "budget": f"ratio {spend._ratio:g}, +{spend._floor:g}/s, cap {spend._capacity:g}",
                "attempts": attempts,
                "logical_calls": calls,
                "sent": sent,
                "retries": spend.spent,
                "denied": spend.denied,
                "budget_allowance": round(allowance, 1),
                "amplification": round(sent / calls, 2),
                "deadline_s": deadline,
                "slowest_call_s": round(max(durations), 3),
                "errors": "/".join(kinds),
            }
        ],
    )
    assert all(isinstance(o, ServerError | RequestTimeoutError) for o in outcomes), kinds
    assert sent == calls + spend.spent  # every request accounted for: a first try or a retry
    assert sent <= calls + allowance
    # virtual time: the server answers in no time, so only the client's waits count
    assert max(durations) <= deadline  # no call outlives its deadline
    if attempts < 100:
        assert spend.denied > 0  # the budget, not the attempts, stopped the storm
    else:
        # only the deadline stopped it: each call gave up when its next backoff would
        # have crossed the deadline (the backoff is capped at max_delay = 0.4 s)
        assert min(durations) >= deadline - policy.max_delay


# == hangs ===================================================================================


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@virtual
async def test_hanging_endpoint_ends_by_its_deadline_and_leaves_nothing_behind() -> None:
    calls, deadline = 10, 0.5
    loop = asyncio.get_running_loop()
    async with (
        virtual_emulator() as emu,
        # processing_slots=None: no watcher sweep of the created asset opens a connection of
        # its own while the GetAssets hang (this test counts connections and tasks)
        ark_for(emu, timeouts=Timeouts(connect=2, read=30), processing_slots=None) as ark,
    ):
        group = await ark.create_asset_group(name="g")
        asset_id = await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        await ark.get_asset(asset_id)  # warm: a pooled keep-alive connection exists
        connector = ark._transport._session.connector  # type: ignore[union-attr]
        assert connector is not None
        emu.set_faults([FaultRule(family="ark", action="GetAsset", kind="hang")])
        tasks_before = asyncio.all_tasks()
        started = loop.time()
        outcomes = await asyncio.gather(
            *(ark.get_asset(asset_id, deadline=deadline) for _ in range(calls)),
            return_exceptions=True,
        )
        took = loop.time() - started
        # the server side notices each closed connection (and records the hang) at once
        for _ in range(100):
            hung = [r for r in emu.audit().requests if r.code == "fault:hang"]
            if len(hung) == calls:
                break
            await asyncio.sleep(0.02)
        leaked = asyncio.all_tasks() - tasks_before
        acquired = len(connector._acquired)
    show(
        "hanging GetAsset, per-call deadline",
        [
            {
                "calls": calls,
                "deadline_s": deadline,
                "all_ended_after_s": round(took, 3),
                "errors": "/".join(sorted({type(o).__name__ for o in outcomes})),
                "server_saw_closed": len(hung),
                "tasks_leaked": len(leaked),
                "connections_in_use": acquired,
            }
        ],
    )
    assert all(isinstance(o, RequestTimeoutError) for o in outcomes)
    assert took == pytest.approx(deadline, abs=1e-6)  # virtual time: the deadline, exactly
    assert len(hung) == calls  # every hanging connection was closed by the client
    assert leaked == set()
    assert acquired == 0


@virtual
async def test_socket_read_timeout_ends_a_hang_without_a_deadline() -> None:
    read = 0.4
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_elapsed=5)
    loop = asyncio.get_running_loop()
    async with (
        virtual_emulator() as emu,
        ark_for(emu, timeouts=Timeouts(connect=2, read=read), retry=policy) as ark,
    ):
        group = await ark.create_asset_group(name="g")
        emu.set_faults([FaultRule(family="ark", action="ListAssets", kind="hang")])
        clock = emu._running().clock  # the audit's clock
        started = loop.time()
        with pytest.raises(RequestTimeoutError):
            await ark.list_assets(group_ids=[group])
        took = loop.time() - started
        ended = clock.elapsed()
        connector = ark._transport._session.connector  # type: ignore[union-attr]
        assert connector is not None
        acquired = len(connector._acquired)
        for _ in range(100):  # the server records a hang once it sees the connection close
            if emu.audit().count("ListAssets") >= 2:
                break
            await asyncio.sleep(0.02)
        lists = [r.t for r in emu.audit().requests if r.action == "ListAssets"]
        sent = len(lists)
    show(
        "hanging ListAssets, socket read timeout only",
        [{"read_timeout_s": read, "attempts": sent, "ended_after_s": round(took, 3)}],
    )
    assert sent == 2
    # virtual time, exact: the retry went out one read timeout plus one backoff (full
    # jitter, at most base_delay) after the first try, and the call ended one read timeout
    # after the retry went out
    assert read <= lists[1] - lists[0] <= read + policy.base_delay
    assert ended - lists[1] == pytest.approx(read, abs=1e-6)
    assert took >= 2 * read
    assert acquired == 0


#: A reader that takes 1 byte per second from the first connection, in its own process (so
#: this process's descriptors are the client's alone), with a 4 KiB receive buffer. It
#: prints its port, then "closed <bytes read>" once the peer has gone (POLLRDHUP sees that
#: even while unread bytes are queued).
SLOW_READER = """
import select, socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
poll = select.poll()
poll.register(conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
received = 0
while not poll.poll(0):
    if not conn.recv(1):
        break
    received += 1
    time.sleep(1.0)
print("closed", received, flush=True)
"""


@pytest.fixture
def slow_reader() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_READER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/api/open/v2", proc
    finally:
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.anyio
async def test_one_byte_per_second_upload_ends_by_its_deadline_without_leaks(
    slow_reader: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    base_url, reader = slow_reader
    # far larger than the socket buffers between us and the reader, so the sender really
    # stalls (a sparse file: no disk or memory cost)
    size_mb = 64
    path = mediagen.big_png(tmp_path / "big.png", size_mb * 1024 * 1024)
    deadline = 1.5
    fds_before = _open_fds()
    async with ChenyuClient(
        api_key="cy_" + "0" * 32,
        base_url=base_url,
        timeouts=Timeouts(connect=2, read=60),  # the read timeout never fires while sending
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
    ) as chenyu:
        connector = chenyu._transport._session.connector  # type: ignore[union-attr]
        assert connector is not None
        tasks_before = asyncio.all_tasks()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await chenyu.upload(path, deadline=deadline)
        took = time.monotonic() - started
        await asyncio.sleep(0.05)
        leaked = asyncio.all_tasks() - tasks_before
        acquired = len(connector._acquired)
        pooled = sum(len(v) for v in connector._conns.values())
        fds_after = _open_fds()  # the client is still open: only the call's own resources
    assert reader.stdout is not None
    ready, _, _ = select.select([reader.stdout], [], [], 10.0)  # "closed" comes at once
    line = reader.stdout.readline() if ready else "(nothing within 10 s)"
    show(
        "upload read at 1 byte/s, per-call deadline",
        [
            {
                "file_mb": size_mb,
                "deadline_s": deadline,
                "ended_after_s": round(took, 3),
                "error": type(info.value).__name__,
                "reader_saw": line.strip(),
                "tasks_leaked": len(leaked),
                "connections_in_use": acquired,
                "connections_pooled": pooled,
                "fds_leaked": fds_after - fds_before,
            }
        ],
    )
    # real time (a stalled real socket freezes the virtual clock, so this test cannot be
    # virtual): the call ends at its own deadline, never early, and long before anything
    # else could end it (the read timeout is 60 s); 10 s of margin for a loaded machine
    assert deadline - 0.01 <= took < deadline + 10
    assert line.startswith("closed")  # the connection is really gone, not lingering
    assert leaked == set()
    assert acquired == 0
    assert pooled == 0  # a half-sent request's connection is never reused
    assert fds_after <= fds_before  # the socket and the file are closed


# == throttling ===============================================================================


def _http_date(seconds_ahead: float) -> tuple[str, float]:
    when = math.ceil(time.time() + seconds_ahead)
    return email.utils.formatdate(when, usegmt=True), float(when)


async def _gap_after_429(retry_after: str | None) -> tuple[float, float]:
    """On virtual time: (seconds between the 429 and the next GetAsset on the emulator's
    clock, real wall time just before the call)."""
    async with (
        virtual_emulator() as emu,
        ark_for(emu, retry=RetryPolicy(base_delay=0.01, max_elapsed=20)) as ark,
    ):
        group = await ark.create_asset_group(name="g")
        asset_id = await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        rule = FaultRule(
            family="ark", action="GetAsset", status=429, retry_after=retry_after, max_count=1
        )
        emu.set_faults([rule])
        called = time.time()
        await ark.get_asset(asset_id)
        records = [r for r in emu.audit().requests if r.action == "GetAsset"][-2:]
    assert [r.status for r in records] == [429, 200]
    return records[1].t - records[0].t, called


#: What the client adds to a server-requested pause, at most: a tenth of one backoff
#: (base_delay 0.01 s, full jitter) to spread the herd, and the GetAsset limiter's spacing
#: (it restarts empty after a pause: 1/100 s at 100 GetAsset/s).
SPREAD = 0.1 * 0.01 + 1 / ACTION_RATES["GetAsset"]


@virtual
async def test_retry_after_in_every_form_is_honoured_or_safely_ignored() -> None:
    rows = []
    default_pause = RetryPolicy().rate_limit_wait
    cases: list[tuple[str, str | None, float | None]] = [
        ("seconds", "0.8", 0.8),
        ("http-date", None, None),  # filled in below (it depends on the clock)
        ("garbage", "soon, maybe", default_pause),
        ("absent", None, default_pause),
    ]
    for form, header, expected in cases:
        low = 0.0
        if form == "http-date":
            header, when = _http_date(1.2)
            gap, called = await _gap_after_429(header)
            expected = when - called  # what the date meant just before the call
            # the client reads the real wall clock when the 429 arrives, a little after
            # ``called``: one in-process request, well under 0.5 s even on a loaded box
            low = 0.5
        else:
            gap, _ = await _gap_after_429(header)
        assert expected is not None
        rows.append(
            {
                "form": form,
                "header": header or "-",
                "expected_wait_s": round(expected, 3),
                "measured_wait_s": round(gap, 3),
            }
        )
        # virtual time: exact, but for the client's own spread (and the date's real clock)
        assert expected - low <= gap <= expected + SPREAD + 1e-9, (form, header, gap)
    rows.append(await _retry_after_ms_row())
    show("Retry-After: wait between the 429 and the next request", rows)


async def _retry_after_ms_row() -> dict[str, Any]:
    """``retry-after-ms`` (which wins over ``Retry-After``), from a tiny local server."""
    seen: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(asyncio.get_running_loop().time())
        meta = {"RequestId": f"r{len(seen)}", "Action": "GetAsset", "Version": "2024-01-01"}
        if len(seen) == 1:
            meta["Error"] = {"Code": "FlowLimitExceeded", "Message": "slow down"}
            return web.json_response(
                {"ResponseMetadata": meta},
                status=429,
                headers={"retry-after-ms": "700", "Retry-After": "30"},
            )
        result = {"Id": "asset-20260101000000-aaaaa", "Status": "Active"}
        return web.json_response({"ResponseMetadata": meta, "Result": result})

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with ArkClient(
            access_key="AKLTx1234567", secret_key="s" * 20, base_url=url, retry=FAST
        ) as ark:
            await ark.get_asset("asset-20260101000000-aaaaa")
    finally:
        await runner.cleanup()
    gap = seen[1] - seen[0]
    assert 0.7 <= gap <= 0.7 + 0.1 * FAST.base_delay + 1 / ACTION_RATES["GetAsset"] + 1e-9, gap
    return {
        "form": "retry-after-ms",
        "header": "retry-after-ms: 700 (Retry-After: 30)",
        "expected_wait_s": 0.7,
        "measured_wait_s": round(gap, 3),
    }


@virtual
async def test_a_429_pauses_the_endpoint_for_every_task() -> None:
    tasks, pause = 12, 0.8
    async with (
        virtual_emulator() as emu,
        ark_for(emu, retry=RetryPolicy(base_delay=0.01, max_elapsed=20)) as ark,
    ):
        group = await ark.create_asset_group(name="g")
        asset_id = await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        stop = asyncio.Event()
        finished: list[float] = []  # emulator time at which each call returned

        async def worker() -> int:
            done = 0
            while not stop.is_set():
                await ark.get_asset(asset_id)
                finished.append(emu._running().clock.elapsed())
                done += 1
            return done

        async with asyncio.TaskGroup() as tg:
            running = [tg.create_task(worker()) for _ in range(tasks)]
            await asyncio.sleep(0.6)  # steady traffic from every task (virtual: free)
            emu.set_faults(
                [
                    FaultRule(
                        family="ark",
                        action="GetAsset",
                        status=429,
                        retry_after=str(pause),
                        max_count=1,
                    )
                ]
            )
            await asyncio.sleep(pause + 0.8)
            stop.set()
        completed = sum(t.result() for t in running)
        records = [r for r in emu.audit().requests if r.action == "GetAsset"]
    t429 = next(r.t for r in records if r.status == 429)
    # virtual time: requests already sent when the 429 went out arrive at its very instant
    inflight = [r for r in records if r.t == t429 and r.status != 429]
    eps = 1e-9  # float rounding of the emulator's elapsed-time subtraction
    inside = [r for r in records if t429 < r.t < t429 + pause - eps]
    after = [r.t for r in records if r.t >= t429 + pause - eps]
    # the window limiter may spend a window's worth at once: look back a whole window
    before = [r for r in records if t429 - 1.1 <= r.t < t429]
    # calls that returned during the pause: only those whose request was already sent
    returned_inside = [t for t in finished if t429 < t < t429 + pause - eps]
    show(
        "one 429 (Retry-After 0.8 s) with 12 tasks calling GetAsset",
        [
            {
                "tasks": tasks,
                "calls_completed": completed,
                "requests_in_1.1s_before": len(before),
                "in_flight_at_429": len(inflight),
                "requests_during_pause": len(inside),
                "first_request_after_s": round(min(after) - t429, 3),
                "requests_in_0.5s_after": sum(1 for t in after if t < t429 + pause + 0.5),
            }
        ],
    )
    # the endpoint was busy at its limit (100 GetAsset/s) from all 12 tasks before...
    assert len(before) >= 45
    assert len(inflight) <= tasks - 1
    # ... silent for the whole pause, for every task (not only the one that got the 429)...
    assert inside == []
    assert returned_inside == []
    assert min(after) >= t429 + pause - eps
    # ... and busy again right after it
    assert sum(1 for t in after if t < t429 + pause + 0.5) >= 45
    assert all(r.status == 200 for r in records if r.status != 429)


# == clock skew ===============================================================================


@pytest.mark.anyio
async def test_a_clock_20_minutes_off_is_one_clear_error_never_a_retry_loop(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(processing_delay=0.05, processing_jitter=0)
    async with Emulator(config) as emu, ark_for(emu) as ark:
        group = await ark.create_asset_group(name="g")
        emu.config.clock_offset_seconds = 1200
        before = len(emu.audit().requests)
        with pytest.raises(BadRequestError) as info:
            await ark.get_asset_group(group)
        sdk_requests = len(emu.audit().requests) - before
        # a bulk ingest stops at once (fatal) and leaves every item to resume
        items = [
            SourceItem(key=f"k{i}", path=None, url=emu.media_url("png", 800, 800))
            for i in range(20)
        ]
        options = IngestOptions(allow_private_urls=True, create_concurrency=4)
        journal = tmp_path / "j.db"
        before = len(emu.audit().requests)
        report = await ingest(ark, items, group_id=group, journal=journal, options=options)
        ingest_requests = len(emu.audit().requests) - before
        states = set(rk.states(journal).values())
        emu.config.clock_offset_seconds = 0  # the clock is fixed: a rerun finishes the job
        again = await ingest(ark, items, group_id=group, journal=journal, options=options)
    err = info.value
    show(
        "emulator clock 20 minutes ahead",
        [
            {
                "call": "get_asset_group",
                "error": f"{type(err).__name__} {err.code}",
                "requests": sdk_requests,
                "retries": 0,
            },
            {
                "call": "ingest of 20 items",
                "error": "fatal: " + (report.fatal or "")[:40],
                "requests": ingest_requests,
                "retries": report.retries,
            },
        ],
    )
    assert err.code == "InvalidTimestamp"
    assert "InvalidTimestamp" in str(err)
    assert sdk_requests == 1
    assert report.fatal is not None
    assert "InvalidTimestamp" in report.fatal
    assert report.failed == 0  # no item is blamed for the clock
    assert ingest_requests <= options.create_concurrency  # one per create task, no loop
    assert report.retries == 0
    assert states <= {"pending"}
    assert again.active == 20


# == regressions found by the runs above ======================================================


@virtual
async def test_a_failed_listing_is_never_taken_for_an_absent_asset(tmp_path: Path) -> None:
    """Found by the soak: reconciliation used to treat a ListAssets that failed as "no such
    asset" and created the item again — a duplicate."""
    async with virtual_emulator() as emu:
        async with ark_for(emu, retry=RetryPolicy(max_attempts=2, base_delay=0.01)) as ark:
            group = await ark.create_asset_group(name="g")
            emu.set_faults(
                [
                    FaultRule(action="CreateAsset", kind="reset", phase="after", max_count=1),
                    FaultRule(action="ListAssets", status=503, max_count=40),  # the whole wait
                ]
            )
            items = [SourceItem(key="one", path=None, url=emu.media_url("png", 800, 800))]
            options = IngestOptions(
                allow_private_urls=True,
                reconcile_wait=0.3,
                reconcile_interval=0.05,
                stale_after=0.5,
            )
            report = await ingest(
                ark, items, group_id=group, journal=tmp_path / "j.db", options=options
            )
        audit = emu.audit()
        assert audit.duplicates() == {}
        assert audit.count("CreateAsset") == 1
        assert report.active == 1
        assert report.recovered == 1


@virtual
async def test_reconciliation_that_can_never_list_stops_the_run_resumably(tmp_path: Path) -> None:
    async with virtual_emulator() as emu:
        async with ark_for(emu, retry=RetryPolicy(max_attempts=1)) as ark:
            group = await ark.create_asset_group(name="g")
            emu.set_faults(
                [
                    FaultRule(action="CreateAsset", kind="reset", phase="after", max_count=1),
                    FaultRule(action="ListAssets", status=503),
                ]
            )
            items = [SourceItem(key="one", path=None, url=emu.media_url("png", 800, 800))]
            options = IngestOptions(
                allow_private_urls=True,
                reconcile_wait=0.2,
                reconcile_interval=0.05,
                reconcile_timeout=0.5,
                adopt_existing=False,  # reconciliation's own listing is under test
            )
            journal = tmp_path / "j.db"
            report = await ingest(ark, items, group_id=group, journal=journal, options=options)
            assert report.fatal is not None
            assert "reconcile" in report.fatal
            assert set(rk.states(journal).values()) == {"unknown"}  # the next run reconciles it
            emu.set_faults([])
            again = await ingest(ark, items, group_id=group, journal=journal, options=options)
        assert again.active == 1
        assert again.recovered == 1
        assert emu.audit().count("CreateAsset") == 1


@virtual
async def test_transient_create_failures_never_fail_an_item_for_good(tmp_path: Path) -> None:
    """Found by the 2,000-item soak: three uncommitted 503s in a row failed an item, for
    good (a rerun skipped it)."""
    async with virtual_emulator() as emu:
        async with ark_for(emu) as ark:
            group = await ark.create_asset_group(name="g")
            items = [SourceItem(key="one", path=None, url=emu.media_url("png", 800, 800))]
            options = IngestOptions(
                allow_private_urls=True, reconcile_wait=0.1, reconcile_interval=0.05
            )
            journal = tmp_path / "j.db"
            emu.set_faults([FaultRule(action="CreateAsset", status=503, max_count=4)])
            first = await ingest(ark, items, group_id=group, journal=journal, options=options)
            assert first.active == 1  # four failed tries, the fifth created it
            emu.set_faults([FaultRule(action="CreateAsset", status=503)])
            items2 = [SourceItem(key="two", path=None, url=emu.media_url("png", 800, 800))]
            second = await ingest(ark, items2, group_id=group, journal=journal, options=options)
            assert second.failures == {"create_retries_exhausted": 1}
            assert rk.states(journal)["two"] == "pending"  # resumable, not failed for good
            emu.set_faults([])
            third = await ingest(ark, items2, group_id=group, journal=journal, options=options)
        assert third.active == 1
        assert emu.audit().duplicates() == {}


@virtual
async def test_transient_upload_failures_are_retried_then_left_resumable(tmp_path: Path) -> None:
    """Found by the soak: one upload call that ran out of retries (or of retry budget)
    failed its item for good."""
    async with virtual_emulator() as emu:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.png").write_bytes(mediagen.png(640, 480))
        async with (
            ark_for(emu) as ark,
            ChenyuClient(
                api_key=emu.account.api_key, base_url=emu.chenyu_url, retry=FAST
            ) as chenyu,
        ):
            group = await ark.create_asset_group(name="g")
            journal = tmp_path / "j.db"
            upload_503 = FaultRule(family="chenyu", action="UploadAsset", status=503)
            emu.set_faults([upload_503.model_copy(update={"max_count": 5})])  # one whole call
            first = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert first.active == 1
            (src / "b.png").write_bytes(mediagen.png(640, 480))
            emu.set_faults([upload_503])
            second = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert second.failures == {"upload_failed": 1}
            assert rk.states(journal)["b.png"] == "pending"
            emu.set_faults([])
            third = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
        assert third.active == 2
        assert third.resumed == 1
