"""Content, not mtime (issue 13 point 4): a ``touch`` changes nothing, a real content change
is reported ``source_changed`` or, with ``replace_changed``, replaces the asset in place.

Against the emulator over 127.0.0.1 on virtual time, with real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chenyu_assets.batch import IngestOptions, ingest
from chenyu_assets.batch.journal import ItemState as S
from chenyu_assets.batch.journal import Journal, fingerprint_changed
from chenyu_assets.emulator import FaultRule
from tests import mediagen, serve_kit
from tests.test_ingest import clients, make_images, virtual_emulator
from tests.vclock import virtual


def _bump_mtime(path: Path, seconds: int = 3600) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_fingerprint_rule_is_staged() -> None:
    assert not fingerprint_changed((10, 2, "h"), (10, 1, "h"))  # touch: the hash decides
    assert fingerprint_changed((10, 2, "h2"), (10, 1, "h"))  # same size, other bytes
    assert fingerprint_changed((11, 1, None), (10, 1, "h"))  # other size: no hash needed
    assert fingerprint_changed((10, 2, None), (10, 1, "h"))  # no new hash: mtime decides
    assert fingerprint_changed((10, 2, "h"), (10, 1, None))  # no stored hash: mtime decides
    assert not fingerprint_changed((10, None, None), (10, 1, "h"))  # unknown is no change


def test_journal_touch_keeps_an_active_row_and_records_the_new_mtime(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        j.register("k", name="n", source=tmp_path / "a.png", size=10, mtime_ns=1)
        j.register("k", name="n", source=tmp_path / "a.png", content_hash="h1", size=10)
        j.mark_intent("k")
        j.mark_done("k", S.ACTIVE, asset_id="asset-1")
        same = j.register("k", name="n", source=tmp_path / "a.png", size=10, mtime_ns=2,
                          content_hash="h1")  # fmt: skip
        assert (same.state, same.changed, same.mtime_ns, same.asset_id) == (
            S.ACTIVE,
            False,
            2,
            "asset-1",
        )
        other = j.register("k", name="n", source=tmp_path / "a.png", size=10, mtime_ns=3,
                           content_hash="h2")  # fmt: skip
        assert (other.state, other.changed, other.content_hash) == (S.ACTIVE, True, "h1")
        # a FAILED row is not reset by a touch either (only other content retries it)
        j.register("f", name="f", source=tmp_path / "f.png", content_hash="h", size=5,
                   mtime_ns=1)  # fmt: skip
        j.mark_done("f", S.FAILED, error_code="FaceMismatch", message=None)
        touched = j.register("f", name="f", source=tmp_path / "f.png", content_hash="h",
                             size=5, mtime_ns=9)  # fmt: skip
        assert touched.state is S.FAILED
        j.mark_replaced("k", size=12, mtime_ns=4)
        reset = j.get("k")
        assert reset is not None
        assert (reset.state, reset.asset_id, reset.content_hash, reset.size) == (
            S.PENDING,
            None,
            None,
            12,
        )


@virtual
async def test_touch_is_no_change_and_a_real_change_is_replaced_in_place(tmp_path: Path) -> None:
    src = tmp_path / "src"
    paths = make_images(src, 4)
    journal = tmp_path / "j.db"
    async with virtual_emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            first = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert first.active == 4

            # touch: same bytes, new mtime -> still active, nothing sent but nothing skipped
            for p in paths:
                _bump_mtime(p)
            before = emu.audit().count("CreateAsset")
            touched = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert (touched.active, touched.resumed, touched.skipped) == (4, 4, 0)
            assert touched.failures == {}
            assert emu.audit().count("CreateAsset") == before
            with Journal.open(journal) as j:  # the new mtime is recorded: no hash next time
                row = j.get("img-0000.png")
                assert row is not None
                assert row.mtime_ns == paths[0].stat().st_mtime_ns

            # a real change (other bytes): reported, the old asset kept, nothing created
            mediagen.write(paths[1], mediagen.png(700, 500))
            changed = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert changed.skipped == 1
            assert changed.failures == {"source_changed": 1}
            assert emu.audit().count("CreateAsset") == before

            # replace_changed while DeleteAsset keeps failing: nothing created, row kept
            emu.set_faults([FaultRule(action="DeleteAsset", kind="http_error", status=403)])
            refused = await ingest(
                ark,
                src,
                group_id=group,
                journal=journal,
                chenyu=chenyu,
                options=IngestOptions(replace_changed=True),
            )
            assert refused.fatal is not None  # a refused delete (403) stops the run
            assert "DeleteAsset refused" in refused.fatal
            emu.set_faults([FaultRule(action="DeleteAsset", kind="http_error", status=500)])
            transient = await ingest(
                ark,
                src,
                group_id=group,
                journal=journal,
                chenyu=chenyu,
                options=IngestOptions(replace_changed=True),
            )
            assert (transient.fatal, transient.failures) == (None, {"source_changed": 1})
            emu.clear_faults()
            assert emu.audit().count("CreateAsset") == before

            # replace_changed: the old asset deleted, the new one under the same name
            with Journal.open(journal) as j:
                old = j.get("img-0001.png")
            assert old is not None
            assert old.asset_id
            replaced = await ingest(
                ark,
                src,
                group_id=group,
                journal=journal,
                chenyu=chenyu,
                options=IngestOptions(replace_changed=True),
            )
            assert (replaced.active, replaced.skipped, replaced.creates) == (4, 0, 1)
            with Journal.open(journal) as j:
                new = j.get("img-0001.png")
            assert new is not None
            assert new.asset_id
            assert new.asset_id != old.asset_id
            assert new.name == old.name
            audit = emu.audit()
            assert audit.duplicates() == {}
            ids = {a.id for a in audit.assets}
            assert old.asset_id not in ids
            assert new.asset_id in ids
            assert len(audit.assets) == 4
            assert audit.count("DeleteAsset", 200) == 1

            # and the next plain rerun is quiet again
            again = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert (again.active, again.resumed, again.skipped) == (4, 4, 0)


@pytest.mark.subprocess
def test_cli_touch_then_change_then_replace_changed(tmp_path: Path) -> None:
    """The CLI against a ``serve`` subprocess: exit 0 after a touch, 3 (source_changed)
    after a real change, 0 with ``--replace-changed``; the group ends with one asset per
    file (real time: only counts and exit codes are asserted)."""
    src = tmp_path / "src"
    paths = make_images(src, 3)
    with serve_kit.serve("--time-scale", "10") as served:
        args = ["ingest", str(src), "--group", "changes", "--journal", str(tmp_path / "j.db")]
        args += ["--rate-scale", "10", "--json", "--no-progress"]

        def run(*extra: str) -> tuple[int, dict[str, object]]:
            done = subprocess.run(
                [sys.executable, "-m", "chenyu_assets.cli", *args, *extra],
                env=served.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])

        code, first = run()
        assert (code, first["active"]) == (0, 3)
        _bump_mtime(paths[0])
        code, touched = run()
        assert (code, touched["active"], touched["resumed"], touched["creates"]) == (0, 3, 3, 0)
        mediagen.write(paths[2], mediagen.png(700, 500))
        code, changed = run()
        assert (code, changed["failures"]) == (3, {"source_changed": 1})
        code, replaced = run("--replace-changed")
        assert (code, replaced["active"], replaced["creates"]) == (0, 3, 1)
        with urllib.request.urlopen(served.url + "/_emulator/audit", timeout=10) as resp:
            audit = json.loads(resp.read())
        group = replaced["group_id"]
        names = [a["name"] for a in audit["assets"] if a["group_id"] == group]
        assert len(names) == len(set(names)) == 3
