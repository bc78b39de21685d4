"""Exactly once in the corners (issue 13): changed content of a Failed item, replacing a
changed Active item when the delete fails at first or the journal is new, and two runs with
different journals started together.

In-process ingests on virtual time against the emulator over 127.0.0.1 (``@virtual``)."""

from __future__ import annotations

from pathlib import Path

import anyio

from chenyu_assets.batch import IngestOptions, ingest
from chenyu_assets.emulator import Emulator, EmulatorConfig, FaultRule
from tests import mediagen
from tests.test_ingest import clients, make_images
from tests.vclock import emulator_clock, virtual


def emulator() -> Emulator:
    return Emulator(EmulatorConfig(processing_delay=2.0), clock=emulator_clock())


@virtual
async def test_changed_content_of_a_failed_item_replaces_its_failed_asset(tmp_path: Path) -> None:
    """A file the service refused (a content verdict) is fixed: the rerun with the same
    journal deletes the Failed asset and creates the new content, once -- with or without
    ``replace_changed``; a new journal cannot see the change and reports the adopted Failed
    asset until ``retry_failed``."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(mediagen.png(100, 100))  # too small: Failed
    no_check = IngestOptions(preflight=False)
    async with emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            kw = {"group_id": group, "chenyu": chenyu}
            first = await ingest(ark, src, journal=tmp_path / "a.db", options=no_check, **kw)
            (src / "a.png").write_bytes(mediagen.png(640, 480))  # fixed
            (src / "b.png").write_bytes(mediagen.png(700, 500))
            fresh = await ingest(ark, src, journal=tmp_path / "new.db", options=no_check, **kw)
            plain = await ingest(ark, src, journal=tmp_path / "a.db", options=no_check, **kw)
        assert (first.failed, first.retryable, first.creates) == (2, 0, 2)
        # a new journal: the Failed assets are adopted (it cannot know the bytes changed)
        assert (fresh.failed, fresh.adopted, fresh.creates) == (2, 2, 0)
        # the first journal knows: each Failed asset is deleted, the new content created
        assert (plain.active, plain.failed, plain.deleted_failed, plain.creates) == (2, 0, 2, 2)
        audit = emu.audit()
        assert audit.count("DeleteAsset", 200) == 2
        assert {a.status for a in audit.assets} == {"Active"}
        assert len(audit.assets) == 2
        assert audit.duplicates() == {}


@virtual
async def test_replace_changed_retries_a_failing_delete_then_creates_once(tmp_path: Path) -> None:
    """``replace_changed`` deletes before it creates: while DeleteAsset fails the item stays
    Active with its old asset (``source_changed``), and the next run replaces it."""
    src = tmp_path / "src"
    paths = make_images(src, 3)
    replace = IngestOptions(replace_changed=True)
    async with emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            kw = {"group_id": group, "chenyu": chenyu, "journal": tmp_path / "j.db"}
            first = await ingest(ark, src, **kw)
            for path in paths:
                path.write_bytes(mediagen.png(700, 500))  # new content
            emu.set_faults([FaultRule(action="DeleteAsset", status=503)])
            blocked = await ingest(ark, src, options=replace, **kw)
            emu.set_faults([])
            again = await ingest(ark, src, options=replace, **kw)
            done = await ingest(ark, src, options=replace, **kw)
        assert (first.active, first.creates) == (3, 3)
        assert (blocked.skipped, blocked.creates, blocked.failures) == (3, 0, {"source_changed": 3})
        # each new content created (never the old, deleted asset adopted from the index)
        assert (again.active, again.creates, again.adopted) == (3, 3, 0)
        assert (done.active, done.resumed, done.creates) == (3, 3, 0)
        audit = emu.audit()
        assert len(audit.assets) == 3  # the old assets gone before the new ones were made
        assert {a.status for a in audit.assets} == {"Active"}
        assert audit.duplicates() == {}


@virtual
async def test_replace_changed_with_a_new_journal_adopts_the_old_asset(tmp_path: Path) -> None:
    """The documented limit: assets carry no content hash, so a new journal cannot tell
    that a file changed after its asset was made; it adopts that asset (nothing deleted)."""
    src = tmp_path / "src"
    [path] = make_images(src, 1)
    async with emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            kw = {"group_id": group, "chenyu": chenyu}
            first = await ingest(ark, src, journal=tmp_path / "a.db", **kw)
            path.write_bytes(mediagen.png(700, 500))
            opts = IngestOptions(replace_changed=True)
            other = await ingest(ark, src, journal=tmp_path / "b.db", options=opts, **kw)
        assert (other.active, other.adopted, other.creates) == (1, 1, 0)
        audit = emu.audit()
        assert audit.count("DeleteAsset", 200) == 0
        assert len(audit.assets) == 1  # the first run's asset, old content and all
        assert first.creates == 1


@virtual
async def test_two_runs_with_different_journals_started_together(tmp_path: Path) -> None:
    """What holds when two runs into one group start together: each lists the group before
    either created, so both may create an item (the limit the README states); every item
    of each run still ends Active, and the next run with any journal creates nothing and
    settles on one asset per item."""
    src = tmp_path / "src"
    make_images(src, 20)
    async with emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            reports = []

            async def run(name: str) -> None:
                journal = tmp_path / f"{name}.db"
                reports.append(
                    await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "one")
                tg.start_soon(run, "two")
            third = await ingest(ark, src, group_id=group, journal=tmp_path / "3.db", chenyu=chenyu)
        assert [r.active for r in reports] == [20, 20]
        total = sum(r.creates for r in reports)
        assert 20 <= total <= 40
        assert (third.active, third.creates, third.adopted) == (20, 0, 20)
        audit = emu.audit()
        assert len(audit.assets) == total  # duplicates are not cleaned up (see the README)
