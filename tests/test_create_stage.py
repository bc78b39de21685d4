"""The create stage and the watcher path against an in-process fake of our client protocol.

The engine's own parts run for real (``CreateStage``, ``Tracker``, ``Results``, the
client's ``Watcher`` and its sweep, the SQLite journal behind ``AsyncJournal``); only the
client is :class:`fake_ark.FakeArk`, whose misbehaviours are switches. Every test runs on
virtual time (``@virtual``): processing times, reconciliation waits and poll intervals cost
nothing, and elapsed times are exact, so they can be compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from fake_ark import FakeArk, FakeAsset
from vclock import virtual

from chenyu_assets._api import AssetAPI
from chenyu_assets.batch.adopt import Adoption
from chenyu_assets.batch.create import CreateStage
from chenyu_assets.batch.fingerprints import register_items
from chenyu_assets.batch.journal import Entry, ItemState, Journal
from chenyu_assets.batch.journal_rows import OUTCOME_OF, STATE_OF
from chenyu_assets.batch.journal_thread import AsyncJournal, JournalFacade
from chenyu_assets.batch.naming import asset_name
from chenyu_assets.batch.results import Results
from chenyu_assets.batch.reuse import Reuse
from chenyu_assets.batch.sources import BadItem, SourceItem
from chenyu_assets.batch.tracking import Tracker
from chenyu_assets.batch.types import Event, IngestOptions, IngestReport, IngestResult, Outcome
from chenyu_assets.batch.upload import Uploads
from chenyu_assets.batch.work import Work

GROUP = "group-fake-1"
OPTIONS = IngestOptions(reconcile_wait=1.0, reconcile_interval=0.2, reconcile_timeout=5.0)


@dataclass
class Ran:
    results: dict[str, IngestResult]
    report: IngestReport
    events: list[Event]
    rows: dict[str, Entry]
    elapsed: float


def _items(n: int) -> list[SourceItem | BadItem]:
    return [
        SourceItem(f"k{i:03d}", None, f"https://media.example/k{i:03d}.png", asset_type="Image")
        for i in range(n)
    ]


async def run_stage(
    fake: FakeArk,
    tmp_path: Path,
    n: int,
    *,
    options: IngestOptions = OPTIONS,
    journal_name: str = "journal.db",
    close_watcher: bool = True,
    adopt: bool = False,
) -> Ran:
    """Register ``n`` URL items and push them through the create stage and the watcher
    (resumed rows in ``creating``/``unknown`` are reconciled first, as the pipeline does;
    with ``adopt``, pending rows go through ``Reuse.adopt_if_present`` first)."""
    loop_time = anyio.current_time
    started = loop_time()
    o = options
    fake.watcher.tune(
        min_interval=o.poll_min_interval,
        starved_interval=o.poll_starved_interval,
        starved_divisor=16,
        max_interval=o.poll_max_interval,
        lookback=o.poll_lookback,
        stale_after=o.stale_after,
    )
    journal = AsyncJournal()
    await journal.open(tmp_path / journal_name, run_info={"group_id": GROUP})
    facade: JournalFacade = journal  # the engine sees the protocol only
    client: AssetAPI = fake
    report, events = IngestReport(), []
    send, receive = anyio.create_memory_object_stream[IngestResult](math.inf)
    sink = Results(facade, report, send, on_event=events.append)
    tracker = Tracker(client, sink, report, group_id=GROUP, options=o)
    urls = Uploads(facade, sink, options=o, chenyu=None, staging=None)
    assert fake.watcher.slots is not None
    stage = CreateStage(
        client,
        facade,
        urls,
        sink,
        tracker,
        group_id=GROUP,
        options=o,
        slots=fake.watcher.slots,
        report=report,
    )
    reuse = Reuse(client, facade, Adoption(client, GROUP), sink, tracker, options=o, report=report)
    try:
        to_create, inbox = anyio.create_memory_object_stream[Work](math.inf)
        for entry, item in await register_items(facade, _items(n)):
            assert isinstance(entry, Entry)
            if entry.state in (ItemState.ACTIVE, ItemState.FAILED, ItemState.SKIPPED):
                continue
            again = entry.state in (ItemState.CREATING, ItemState.UNKNOWN)
            work = Work(entry, item, reconcile=again)
            pending = adopt and entry.state is ItemState.PENDING
            if pending and await reuse.adopt_if_present(work, to_create):
                continue
            to_create.send_nowait(work)
        to_create.close()
        with anyio.fail_after(3600):  # virtual seconds: a hang guard only
            async with anyio.create_task_group() as tg:
                tg.start_soon(tracker.collect)
                async with anyio.create_task_group() as stages:
                    for _ in range(o.create_concurrency):
                        stages.start_soon(stage.run, inbox.clone())
                    inbox.close()
                await tracker.wait_idle()
                tg.cancel_scope.cancel()
        send.close()
        results = {r.key: r async for r in receive}
        rows = {}
        for i in range(n):
            rows[f"k{i:03d}"] = await facade.get(f"k{i:03d}")
    finally:
        await journal.close()
        if close_watcher:
            await fake.watcher.aclose()
    return Ran(results, report, events, rows, loop_time() - started)


def _one_asset_per_name(fake: FakeArk, n: int) -> None:
    names = fake.names()
    assert len(names) == n, names
    assert set(names.values()) == {1}, [k for k, v in names.items() if v > 1]


@virtual
async def test_well_behaved_all_active_one_create_each(tmp_path: Path) -> None:
    fake = FakeArk()
    ran = await run_stage(fake, tmp_path, 40)
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}
    assert len(ran.results) == 40
    assert fake.calls["CreateAsset"] == 40
    assert ran.report.creates == 40
    _one_asset_per_name(fake, 40)
    assert {e.state for e in ran.rows.values()} == {ItemState.ACTIVE}
    assert fake.watcher.mode == "sorted"
    assert fake.max_processing_seen <= fake.max_processing


@virtual
async def test_ambiguous_create_that_created_is_reconciled_never_resent(tmp_path: Path) -> None:
    fake = FakeArk(ambiguous_after_create=5)
    ran = await run_stage(fake, tmp_path, 12)
    assert fake.calls["CreateAsset"] == 12  # the 5 ambiguous ones were found, not re-sent
    _one_asset_per_name(fake, 12)
    assert ran.report.recovered == 5
    assert sum(e.kind == "recovered" for e in ran.events) == 5
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}
    recovered = {e.key for e in ran.events if e.kind == "recovered"}
    assert all(ran.rows[k].asset_id == ran.results[k].asset_id for k in recovered)


@virtual
async def test_ambiguous_create_that_created_nothing_is_sent_again(tmp_path: Path) -> None:
    fake = FakeArk(ambiguous_before_create=3)
    ran = await run_stage(fake, tmp_path, 6)
    assert fake.calls["CreateAsset"] == 9  # 3 lost sends, each reconciled as absent, re-sent
    _one_asset_per_name(fake, 6)
    assert ran.report.recovered == 0
    reasons = [e.data.get("reason") for e in ran.events if e.kind == "retried"]
    assert reasons.count("not found after an ambiguous create") == 3
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}


@virtual
async def test_429_on_create_is_retried_without_a_duplicate(tmp_path: Path) -> None:
    fake = FakeArk(throttle_creates=4)
    ran = await run_stage(fake, tmp_path, 5)
    assert fake.calls["CreateAsset"] == 9
    _one_asset_per_name(fake, 5)
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}
    assert [e.data.get("reason") for e in ran.events if e.kind == "retried"].count(
        "rate limited"
    ) == 4


@virtual
async def test_a_400_is_the_items_verdict_and_the_rest_go_on(tmp_path: Path) -> None:
    fake = FakeArk()
    bad = "k001"
    fake.refuse[asset_name(bad)] = "InvalidParameter.URL"
    ran = await run_stage(fake, tmp_path, 3)
    assert ran.results[bad].outcome is Outcome.FAILED  # not retryable: a verdict
    assert ran.results[bad].error_code == "InvalidParameter.URL"
    assert ran.rows[bad].state is ItemState.FAILED
    assert ran.rows[bad].asset_id is None
    assert [ran.results[k].status for k in ("k000", "k002")] == [Outcome.ACTIVE] * 2
    assert len(fake.assets) == 2


@virtual
async def test_failed_assets_content_code_vs_transient_code(tmp_path: Path) -> None:
    fake = FakeArk()
    fake.fail_codes[asset_name("k000")] = "InvalidParameter.ImageFormat"
    fake.fail_codes[asset_name("k001")] = "InvalidParameter.DownloadFailed"
    ran = await run_stage(fake, tmp_path, 3)
    assert ran.results["k000"].outcome is Outcome.FAILED
    assert ran.results["k001"].outcome is Outcome.RETRYABLE
    assert ran.results["k001"].to_json()["status"] == "failed"  # the JSONL keeps its values
    assert ran.results["k001"].to_json()["retryable"] is True
    assert ran.results["k002"].outcome is Outcome.ACTIVE
    assert ran.report.outcomes()[Outcome.RETRYABLE] == 1
    assert ran.report.outcomes()[Outcome.FAILED] == 1
    assert ran.rows["k001"].state is ItemState.FAILED  # a plain rerun retries it


@virtual
async def test_processing_cap_is_never_exceeded(tmp_path: Path) -> None:
    fake = FakeArk(max_processing=3)
    ran = await run_stage(fake, tmp_path, 15)
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}
    assert fake.max_processing_seen == 3
    assert ran.report.max_processing_seen <= 3


@virtual
async def test_resumed_rows_are_reconciled_not_created(tmp_path: Path) -> None:
    """A run killed between intent and outcome: CREATING rows whose asset exists (one) or
    not (the other) -- the first is found by Name, only the second is created."""
    fake = FakeArk()
    with Journal.open(tmp_path / "journal.db", run_info={"group_id": GROUP}) as j:
        for key in ("k000", "k001"):
            j.register(key, name=asset_name(key), source=f"https://media.example/{key}.png")
            j.mark_intent(key)
    fake.assets["asset-0900"] = _existing(fake, "asset-0900", asset_name("k000"))
    ran = await run_stage(fake, tmp_path, 2)
    assert fake.calls["CreateAsset"] == 1
    assert ran.report.recovered == 1
    assert ran.results["k000"].asset_id == "asset-0900"
    _one_asset_per_name(fake, 2)


def _existing(
    fake: FakeArk, asset_id: str, name: str, *, ready_in: float = -50.0, code: str | None = None
) -> FakeAsset:
    now = fake._now()
    url = "https://media.example/x.png"
    return FakeAsset(asset_id, name, GROUP, url, now - 60, now + ready_in, fail_code=code)


@virtual
async def test_adoption_by_name_of_what_another_journal_left(tmp_path: Path) -> None:
    """The group holds k000 Active, k001 Processing, k002 Failed for a transient code,
    k003 Failed for its content: one listing, then k000/k001/k003 are adopted (k001
    watched to its end), k002's Failed asset is deleted and created anew, k004 created."""
    fake = FakeArk()
    left = {
        "k000": {},
        "k001": {"ready_in": 3.0},
        "k002": {"code": "InvalidParameter.DownloadFailed"},
        "k003": {"code": "InvalidParameter.WidthTooSmall"},
    }
    for i, (key, kw) in enumerate(left.items()):
        asset_id = f"asset-09{i:02d}"
        fake.assets[asset_id] = _existing(fake, asset_id, asset_name(key), **kw)
    ran = await run_stage(fake, tmp_path, 5, adopt=True)
    status = {k: (r.outcome, r.adopted) for k, r in ran.results.items()}
    assert status == {
        "k000": (Outcome.ACTIVE, True),
        "k001": (Outcome.ACTIVE, True),
        "k002": (Outcome.ACTIVE, False),
        "k003": (Outcome.FAILED, True),
        "k004": (Outcome.ACTIVE, False),
    }
    assert fake.calls["CreateAsset"] == 2
    assert fake.calls["DeleteAsset"] == 1
    assert "asset-0902" not in fake.assets
    assert ran.report.adopted == 3
    assert ran.report.deleted_failed == 1
    _one_asset_per_name(fake, 5)


async def _timed(fake: FakeArk, tmp_path: Path, n: int) -> Ran:
    return await run_stage(fake, tmp_path, n, options=OPTIONS)


@virtual
async def test_listing_that_ignores_sort_switches_to_robust_and_keeps_pace(
    tmp_path: Path,
) -> None:
    good = await _timed(FakeArk(), tmp_path / "good", 60)
    bad_fake = FakeArk(ignore_sort=True)
    bad = await _timed(bad_fake, tmp_path / "bad", 60)
    assert {r.status for r in bad.results.values()} == {Outcome.ACTIVE}
    assert bad_fake.watcher.mode == "robust"
    # exact virtual seconds, not wall time: the robust sweep keeps the well-behaved pace
    print(f"sorted {good.elapsed:.2f} s, ignored sort {bad.elapsed:.2f} s")
    assert bad.elapsed <= 1.3 * good.elapsed, (bad.elapsed, good.elapsed)
    assert bad.report.status_calls <= 3 * 60


@virtual
async def test_update_time_that_never_moves_switches_to_robust(tmp_path: Path) -> None:
    good = await _timed(FakeArk(), tmp_path / "good", 60)
    fake = FakeArk(frozen_update_time=True)
    ran = await _timed(fake, tmp_path / "bad", 60)
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}
    assert fake.watcher.mode == "robust"
    print(f"sorted {good.elapsed:.2f} s, frozen UpdateTime {ran.elapsed:.2f} s")
    assert ran.elapsed <= 1.3 * good.elapsed, (ran.elapsed, good.elapsed)


@virtual
async def test_status_that_flips_only_on_get_is_found_by_the_stale_check(tmp_path: Path) -> None:
    """The listing never shows these assets finished until a GetAsset has read them twice:
    the stale check's GetAsset finds them, and the watcher stops trusting the listing."""
    fake = FakeArk(gets_to_finish=2)
    options = IngestOptions(reconcile_wait=1.0, stale_after=3.0)
    ran = await run_stage(fake, tmp_path, 8, options=options)
    assert {r.status for r in ran.results.values()} == {Outcome.ACTIVE}
    assert fake.watcher.mode == "robust"
    assert fake.calls["CreateAsset"] == 8
    assert fake.calls["GetAsset"] >= 16


@virtual
async def test_two_runs_converge_where_the_server_refuses_a_taken_name(tmp_path: Path) -> None:
    """Two runs with different journals started together: where the server refuses a
    second asset with one Name, the run that lost the race adopts the winner's asset."""
    fake = FakeArk(duplicate_names="refuse")
    ran: list[Ran] = []

    async def one(name: str) -> None:
        ran.append(await run_stage(fake, tmp_path, 10, journal_name=name, close_watcher=False))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a.db")
        tg.start_soon(one, "b.db")
    await fake.watcher.aclose()
    _one_asset_per_name(fake, 10)
    assert fake.calls["CreateAsset"] == 20  # each run sent each item once
    assert (
        sorted(r.report.creates for r in ran) == [0, 10] or sum(r.report.creates for r in ran) == 10
    )
    assert sum(r.report.adopted for r in ran) == 10
    for r in ran:
        assert {x.status for x in r.results.values()} == {Outcome.ACTIVE}
        by_name = {a.name: a.id for a in fake.assets.values()}
        assert {k: x.asset_id for k, x in r.results.items()} == {
            k: by_name[asset_name(k)] for k in r.results
        }


def test_outcomes_are_the_journal_and_jsonl_strings() -> None:
    """One table: the terminal journal states are the outcomes, with the same strings."""
    for state, outcome in OUTCOME_OF.items():
        assert state.value == outcome.value
        assert STATE_OF[outcome] is state
    result = IngestResult("k", "n", "active", "src", "asset-1")  # a plain str still works
    assert result.status is Outcome.ACTIVE
    assert result.to_json()["status"] == "active"
    assert type(result.to_json()["status"]) is str
    with pytest.raises(ValueError, match="status is one of"):
        IngestResult("k", "n", Outcome.RETRYABLE, "src")  # a refinement, not a status
