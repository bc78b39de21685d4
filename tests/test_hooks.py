"""Typed event hooks (chenyu_assets.events) against the emulator over 127.0.0.1, on
virtual time: what each attempt, retry, 429 and call reports; the ingest's item
transitions and the watcher's slots; no event built without a hook; a failing hook never
breaks a call; the old string hook still works (deprecated)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from emulator_kit import config, virtual_emulator

from chenyu_assets import (
    AttemptEvent,
    CallEvent,
    IngestEvent,
    ItemEvent,
    RetryEvent,
    SlotEvent,
    SweepEvent,
    ThrottleEvent,
)
from chenyu_assets import watcher as watcher_mod
from chenyu_assets._core import engine
from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestOptions, SourceItem, ingest, orchestrator
from chenyu_assets.batch import hooks as batch_hooks
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.emulator import Emulator, EmulatorConfig, FaultRule
from chenyu_assets.errors import AmbiguousOutcomeError, ServerError
from chenyu_assets.events import HookEvent
from tests import mediagen
from tests.vclock import emulator_clock, virtual

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_elapsed=10, rate_limit_wait=0.05)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[Emulator]:
    emu, _ = virtual_emulator(EmulatorConfig(processing_delay=0.5, processing_jitter=0))
    async with emu:
        yield emu


def ark_client(emu: Emulator, **kw: Any) -> ArkClient:
    acct = emu.account
    opts: dict[str, Any] = {
        "access_key": acct.access_key,
        "secret_key": acct.secret_key,
        "base_url": emu.url,
        "retry": FAST,
        **kw,
    }
    return ArkClient(**opts)


class Recorder:
    def __init__(self) -> None:
        self.events: list[HookEvent] = []

    def __call__(self, event: HookEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@virtual
async def test_every_attempt_retry_and_429_is_a_typed_event() -> None:
    rec = Recorder()
    async with running() as emu, ark_client(emu, hooks=[rec]) as ark:
        group = await ark.create_asset_group(name="g")
        emu.set_faults(
            [
                FaultRule(action="GetAssetGroup", status=503, max_count=1),
                FaultRule(action="GetAssetGroup", status=429, retry_after="0.2", max_count=1),
            ]
        )
        rec.events.clear()
        await ark.get_asset_group(group)
        port = emu.port
    kinds = [type(e).__name__ for e in rec.events]
    assert kinds == [
        "AttemptEvent",
        "RetryEvent",
        "AttemptEvent",
        "ThrottleEvent",
        "RetryEvent",
        "AttemptEvent",
        "CallEvent",
    ]
    a1, a2, a3 = rec.of(AttemptEvent)
    assert {e.call_id for e in rec.events} == {a1.call_id}  # one call ties them together
    assert [a.attempt for a in (a1, a2, a3)] == [1, 2, 3]
    assert [a.status for a in (a1, a2, a3)] == [503, 429, 200]
    assert (a1.error_type, a2.error_type, a3.error_type) == ("ServerError", "RateLimitError", None)
    assert all(a.action == "GetAssetGroup" and a.method == "POST" for a in (a1, a2, a3))
    assert {a.host for a in (a1, a2, a3)} == {f"127.0.0.1:{port}"}
    assert a3.path == "/"
    assert all(a.request_id for a in (a1, a2, a3))
    assert len({a.request_id for a in (a1, a2, a3)}) == 3
    assert all(a.bytes_sent and a.bytes_sent > 0 for a in (a1, a2, a3))
    assert a3.bytes_received > 0
    assert a3.duration >= 0
    [throttle] = rec.of(ThrottleEvent)
    assert (throttle.action, throttle.attempt, throttle.pause, throttle.cap) == (
        "GetAssetGroup",
        2,
        0.2,
        False,
    )
    r1, r2 = rec.of(RetryEvent)
    assert (r1.attempt, r1.status, r1.error_type) == (1, 503, "ServerError")
    assert (r2.attempt, r2.status, r2.error_type) == (2, 429, "RateLimitError")
    assert r1.delay > 0
    [call] = rec.of(CallEvent)
    assert (call.action, call.outcome, call.error_type) == ("GetAssetGroup", "ok", None)
    assert call.duration >= 0.2  # it waited out the 429's pause (virtual time: exact)


@virtual
async def test_a_failed_call_and_a_vendor_code_are_reported() -> None:
    rec = Recorder()
    async with running() as emu, ark_client(emu, hooks=[rec]) as ark:
        rec.events.clear()
        with pytest.raises(Exception, match="NotFound"):
            await ark.get_asset_group("group-does-not-exist")
    [attempt] = rec.of(AttemptEvent)
    assert attempt.status == 404
    assert attempt.error_code
    assert "NotFound" in attempt.error_code
    [call] = rec.of(CallEvent)
    assert (call.outcome, call.error_type) == ("error", "NotFoundError")


def test_events_are_frozen_and_slotted() -> None:
    for cls in (AttemptEvent, RetryEvent, ThrottleEvent, CallEvent, ItemEvent, IngestEvent):
        assert dataclasses.is_dataclass(cls), cls
        assert "__slots__" in cls.__dict__, cls
    event = ItemEvent("k", "planned")
    assert not hasattr(event, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.state = "active"  # type: ignore[misc]


def make_images(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    data = mediagen.png(640, 480)
    for i in range(n):
        (root / f"img-{i}.png").write_bytes(data)


async def _ingest_with_faults(tmp_path: Path, hooks: list[Any]) -> Any:
    """3 local files and one server-side failure; one create throttled past its retries."""
    async with running() as emu:
        make_images(tmp_path / "src", 3)
        acct = emu.account
        ark = ark_client(emu, hooks=hooks, retry=RetryPolicy(max_attempts=1, rate_limit_wait=0.01))
        chenyu = ChenyuClient(api_key=acct.api_key, base_url=emu.chenyu_url)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            emu.set_faults(
                [FaultRule(action="CreateAsset", status=429, retry_after="0.05", max_count=1)]
            )
            items = [
                *(
                    SourceItem(key=f"f{i}", path=tmp_path / "src" / f"img-{i}.png", url=None)
                    for i in range(3)
                ),
                SourceItem(key="ratio", path=None, url=emu.media_url("png", 3000, 500)),
            ]
            report = await ingest(
                ark,
                items,
                group_id=group,
                chenyu=chenyu,
                options=IngestOptions(allow_private_urls=True),
            )
        return report


@virtual
async def test_ingest_item_transitions_slots_and_sweep(tmp_path: Path) -> None:
    rec = Recorder()
    report = await _ingest_with_faults(tmp_path, [rec])
    assert (report.active, report.failed) == (3, 1)
    phases: dict[str, list[str]] = {}
    for e in rec.of(ItemEvent):
        phases.setdefault(e.key, []).append(e.state)
    throttled = [k for k, p in phases.items() if "retryable" in p]
    assert len(throttled) == 1  # the one 429 on CreateAsset, past the client's one attempt
    for key in ("f0", "f1", "f2"):
        expect = ["planned", "uploaded", "created", "active"]
        if key in throttled:
            expect = ["planned", "uploaded", "retryable", "created", "active"]
        assert phases[key] == expect, key
    assert phases["ratio"] in (
        ["planned", "created", "failed"],
        ["planned", "retryable", "created", "failed"],
    )
    ends = [e for e in rec.of(ItemEvent) if e.state in ("active", "failed")]
    assert all(e.asset_id for e in ends)
    [failed] = [e for e in ends if e.state == "failed"]
    assert failed.error_code == "InvalidParameter.ImageRatio"
    retry = next(e for e in rec.of(ItemEvent) if e.state == "retryable")
    assert retry.reason == "rate limited"
    started, ended = rec.of(IngestEvent)
    assert (started.phase, ended.phase) == ("started", "ended")
    assert started.run_id == ended.run_id > 0
    assert ended.counts is not None
    assert ended.counts["active"] == 3
    assert ended.counts["failed"] == 1
    assert ended.counts["rate_limited"] >= 1
    slots = rec.of(SlotEvent)
    taken = [s for s in slots if s.kind == "taken"]
    freed = [s for s in slots if s.kind == "freed"]
    assert len(taken) == len(freed) >= 4
    assert all(s.limit > 0 and 0 <= s.in_use <= s.limit for s in slots)
    finished = [s for s in rec.of(SweepEvent) if s.kind == "finished"]
    assert {s.status for s in finished} == {"Active", "Failed"}
    assert len(rec.of(ThrottleEvent)) >= 1


@virtual
async def test_no_hook_builds_no_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def counting(module: Any, name: str) -> None:
        real = getattr(module, name)

        def wrapper(*args: Any, **kw: Any) -> Any:
            built.append(name)
            return real(*args, **kw)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("_attempt", "_retry", "_call_event", "ThrottleEvent"):
        counting(engine, name)
    counting(watcher_mod, "watcher_event")
    for name in ("item_event", "result_event", "ended", "forwarder"):
        counting(batch_hooks, name)
    counting(orchestrator, "IngestEvent")
    report = await _ingest_with_faults(tmp_path, [])
    assert (report.active, report.failed, report.rate_limited) == (3, 1, 1)
    # "forwarder" builds the hook the ingest installs only for on_event; nothing else ran
    assert [b for b in built if b != "forwarder"] == []
    # the control: the same run with one hook builds every kind of event
    built.clear()
    await _ingest_with_faults(tmp_path / "again", [lambda e: None])
    assert {"_attempt", "_call_event", "ThrottleEvent", "watcher_event"} <= set(built)
    assert {"item_event", "result_event", "ended", "IngestEvent"} <= set(built)


@virtual
async def test_a_failing_hook_never_breaks_a_call_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: HookEvent) -> None:
        raise ValueError("boom")

    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="chenyu_assets.events"):
        async with running() as emu, ark_client(emu, hooks=[broken, rec]) as ark:
            group = await ark.create_asset_group(name="g")
            for _ in range(5):
                assert (await ark.get_asset_group(group)).id == group
            failures = ark.hooks.failures
    assert failures == len(rec.events) >= 12  # every event reached the next hook too
    warnings = [r for r in caplog.records if r.name == "chenyu_assets.events"]
    assert len(warnings) == 1  # once per hook (then at most once a minute)
    assert "broken" in warnings[0].getMessage()
    assert "ValueError" in warnings[0].getMessage()
    assert "boom" not in warnings[0].getMessage()  # the type only: messages may hold data


@virtual
async def test_the_old_string_hook_still_works_and_warns() -> None:
    seen: list[tuple[str, Mapping[str, Any]]] = []

    def old(event: str, fields: Mapping[str, Any]) -> None:
        seen.append((event, fields))

    async with running() as emu, ark_client(emu) as ark:
        group = await ark.create_asset_group(name="g")
        with pytest.warns(DeprecationWarning, match="add_hook"):
            ark.add_event_hook(old)
        emu.set_faults(
            [FaultRule(action="GetAssetGroup", status=429, retry_after="0.05", max_count=1)]
        )
        await ark.get_asset_group(group)
        emu.set_faults([FaultRule(action="CreateAsset", status=500, max_count=1)])
        with pytest.raises(AmbiguousOutcomeError):
            await ark.create_asset(group_id=group, url=emu.media_url("png", 800, 800))
        ark.remove_event_hook(old)
        assert not ark.hooks  # removed: nothing left to build events for
        await ark.get_asset_group(group)
    assert [e for e, _ in seen] == ["rate_limited", "retry", "ambiguous"]
    assert seen[2][1]["endpoint"] == "CreateAsset"
    assert isinstance(seen[2][1]["error"], ServerError)  # the cause, as before
    assert seen[0][1] == {"endpoint": "GetAssetGroup", "pause": 0.05}
    assert seen[1][1]["attempt"] == 1
    assert seen[1][1]["delay"] >= 0


@virtual
async def test_watcher_lease_and_switch_are_typed_events() -> None:
    rec = Recorder()
    cfg = config(
        processing_delay=1.0, processing_jitter=0.5, validate_media=False, ignore_sort=True
    )
    async with Emulator(cfg, clock=emulator_clock()) as emu:
        acct = emu.account
        ark = ArkClient(
            base_url=emu.url,
            access_key=acct.access_key,
            secret_key=acct.secret_key,
            processing_slots=2,
            slot_lease=5.0,
            hooks=[rec],
        )
        async with ark:
            group = await ark.create_asset_group(name="g")
            url = emu.media_url()
            emu.set_faults([FaultRule(action="CreateAsset", kind="stuck", max_count=1)])
            stuck = await ark.create_asset(group_id=group, url=url)
            ids = [await ark.create_asset(group_id=group, url=url) for _ in range(12)]
            await ark.wait_for_assets(ids, timeout=60)
            await asyncio.sleep(6.0)  # past the stuck asset's lease
    [lease] = [s for s in rec.of(SlotEvent) if s.kind == "lease_expired"]
    assert (lease.asset_id, lease.limit) == (stuck, 2)
    assert lease.holder
    [switch] = [s for s in rec.of(SweepEvent) if s.kind == "switched"]
    assert switch.reason
    assert ark.watcher.mode == "robust"
    finished = {s.asset_id for s in rec.of(SweepEvent) if s.kind == "finished"}
    assert set(ids) <= finished
