"""The engine's seams for a work queue (:class:`~chenyu_assets.batch.work.WorkerSeams`),
each checked on its own against the emulator over 127.0.0.1 (virtual time). The queue
itself is covered by tests/test_queue.py."""

from __future__ import annotations

from pathlib import Path

from chenyu_assets.batch import open_ingest
from chenyu_assets.batch.journal import Entry
from chenyu_assets.batch.types import Event, IngestResult
from chenyu_assets.batch.work import WorkerSeams
from tests.test_ingest import clients, make_images, virtual_emulator
from tests.vclock import virtual


@virtual
async def test_pace_done_and_asset_seams_see_every_item(tmp_path: Path) -> None:
    files = make_images(tmp_path / "src", 6)
    paced: list[Path] = []
    done: list[str] = []
    assets: dict[str, str] = {}

    async def pace(path: Path) -> None:
        paced.append(path)

    async def on_done(result: IngestResult) -> None:
        done.append(result.key)

    def asset(key: str, asset_id: str) -> None:
        assets[key] = asset_id

    seams = WorkerSeams(pace=pace, done=on_done, asset=asset)
    async with virtual_emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="seams")
            results = []
            async with open_ingest(
                ark, tmp_path / "src", group_id=group, chenyu=chenyu, seams=seams
            ) as run:
                async for result in run:
                    assert result.key in done  # recorded before it is reported
                    results.append(result)
        assert emu.audit().duplicates() == {}
    assert sorted(paced) == sorted(files)  # once per upload
    assert sorted(done) == sorted(r.key for r in results)
    assert {r.status for r in results} == {"active"}
    assert assets == {r.key: r.asset_id for r in results}


@virtual
async def test_a_refusing_gate_sends_no_create(tmp_path: Path) -> None:
    make_images(tmp_path / "src", 3)
    asked: list[str] = []
    events: list[Event] = []

    async def may_send(entry: Entry) -> bool:
        asked.append(entry.key)
        return False

    async with virtual_emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="gate")
            async with open_ingest(
                ark,
                tmp_path / "src",
                group_id=group,
                chenyu=chenyu,
                on_event=events.append,
                seams=WorkerSeams(may_send=may_send),
            ) as run:
                results = [r async for r in run]
        assert emu.audit().count("CreateAsset") == 0
    assert len(asked) == 3
    assert results == []  # the gate's owner (another worker) reports them
    taken = [e for e in events if e.kind == "retried" and "taken over" in str(e.data)]
    assert sorted(e.key or "" for e in taken) == sorted(asked)
