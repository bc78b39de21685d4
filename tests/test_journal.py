"""The ingest journal: states, crash safety, the run lock, fingerprints, scale."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from chenyu_assets.batch.journal import TERMINAL, Entry, ItemState, Journal, Registration
from chenyu_assets.errors import JournalError, JournalLockedError

S = ItemState


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _register(j: Journal, key: str, **kw: object) -> Entry:
    params: dict[str, object] = {"name": f"{key}-name", "source": Path(f"/in/{key}")}
    return j.register(key, **(params | kw))  # type: ignore[arg-type]


def test_states_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "journal.db"
    clock = iter(range(100, 1000))
    with Journal.open(path, clock=lambda: float(next(clock))) as j:
        entry = j.register(
            "a.jpg",
            name="a-123",
            source=Path("/in/a.jpg"),
            content_hash="h1",
            size=10,
            mtime_ns=5,
            asset_type="Image",
            label="A",
        )
        assert (entry.state, entry.attempts, entry.changed, entry.updated_at) == (
            S.PENDING,
            0,
            False,
            100.0,
        )
        assert entry.path == Path("/in/a.jpg")
        assert entry.source == "/in/a.jpg"
        j.mark_uploaded("a.jpg", url="https://signed.example/a?sig=1", expires_at=1e10)
        j.mark_intent("a.jpg")
        creating = j.get("a.jpg")
        assert creating is not None
        assert (creating.state, creating.attempts) == (S.CREATING, 1)
        assert creating.upload_url == "https://signed.example/a?sig=1"
        j.mark_created("a.jpg", "asset-1")
        j.mark_created("a.jpg", "asset-1")  # repeating the same outcome is harmless
        j.mark_done("a.jpg", S.ACTIVE)
    with Journal.open(path) as j:
        done = j.get("a.jpg")
        assert done is not None
        assert (done.state, done.asset_id, done.name, done.label, done.asset_type) == (
            S.ACTIVE,
            "asset-1",
            "a-123",
            "A",
            "Image",
        )
        assert (done.content_hash, done.size, done.mtime_ns) == ("h1", 10, 5)
        assert done.state in TERMINAL
        assert isinstance(done.state, ItemState)
        assert j.get("missing") is None
        assert j.integrity_ok()


def test_ambiguous_create_must_be_reconciled_before_resending(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        _register(j, "u")
        j.mark_uploaded("u", url="https://signed.example/u", expires_at=2e9)
        j.mark_intent("u")
        j.mark_unknown("u", error_code="RequestTimeout", message="read timed out after send")
        with pytest.raises(ValueError, match="cannot go from unknown to creating"):
            j.mark_intent("u")
        j.reset_to_pending("u")  # reconciliation: the name is not in the group
        entry = j.get("u")
        assert entry is not None
        assert (entry.state, entry.attempts, entry.error_code) == (S.PENDING, 1, None)
        assert entry.upload_url == "https://signed.example/u"  # still reusable
        j.mark_intent("u")
        j.mark_unknown("u", error_code="ConnectionLost", message=None)
        j.mark_done("u", S.ACTIVE, asset_id="asset-9")  # reconciliation found it, Active
        assert (j.get("u") or entry).attempts == 2


def test_illegal_moves(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        _register(j, "k")
        with pytest.raises(KeyError):
            j.mark_intent("nope")
        with pytest.raises(ValueError, match="cannot go from pending to created"):
            j.mark_created("k", "asset-1")
        with pytest.raises(ValueError, match="mark_done takes"):
            j.mark_done("k", S.CREATED)
        j.mark_intent("k")
        with pytest.raises(ValueError, match="needs an asset id"):
            j.mark_done("k", S.ACTIVE)
        j.mark_created("k", "asset-1")
        with pytest.raises(ValueError, match="has asset asset-1, not asset-2"):
            j.mark_created("k", "asset-2")
        with pytest.raises(ValueError, match="cannot go from created to pending"):
            j.reset_to_pending("k")
        with pytest.raises(ValueError, match="cannot go from created to skipped"):
            j.mark_done("k", S.SKIPPED)
        j.mark_done("k", S.FAILED, error_code="InvalidParameter.ImageRatio", message="too wide")
        failed = j.get("k")
        assert failed is not None
        assert (failed.state, failed.asset_id, failed.error_code) == (
            S.FAILED,
            "asset-1",
            "InvalidParameter.ImageRatio",
        )
        _register(j, "s")
        j.mark_done("s", S.SKIPPED, error_code="image_ratio", message="3000x300")
        assert j.counts() == {s.value: {"failed": 1, "skipped": 1}.get(s.value, 0) for s in S}


def test_intent_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    child = _python(
        """
        import os, signal, sys
        from pathlib import Path
        from chenyu_assets.batch.journal import Journal
        j = Journal.open(Path(sys.argv[1]), run_info={"group_id": "group-1"})
        for i in range(50):
            j.register(f"k{i}", name=f"n{i}", source=Path(f"/in/{i}"))
        j.mark_intent("k7")
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(path),
    )
    assert child.wait(timeout=30) == -signal.SIGKILL, child.stderr and child.stderr.read()
    with Journal.open(path, run_info={"group_id": "group-1"}) as j:  # the lock died with it
        assert j.integrity_ok()
        entry = j.get("k7")
        assert entry is not None
        assert (entry.state, entry.attempts) == (S.CREATING, 1)
        assert j.counts()["pending"] == 49
        assert [e.key for e in j.iter_state(S.CREATING, S.UNKNOWN)] == ["k7"]


def test_register_many_killed_midway_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    child = _python(
        """
        import os, signal, sys
        from pathlib import Path
        from chenyu_assets.batch.journal import Journal, Registration
        def items():
            for i in range(30_000):
                if i == 20_000:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield Registration(f"k{i}", f"n{i}", Path(f"/in/{i}"))
        with Journal.open(Path(sys.argv[1])) as j:
            j.register("before", name="b", source="https://x.example/b.jpg")
            j.register_many(items())
        """,
        str(path),
    )
    assert child.wait(timeout=30) == -signal.SIGKILL
    with Journal.open(path) as j:
        assert j.integrity_ok()
        assert [e.key for e in j.iter_all()] == ["before"]


def test_lock_held_in_this_process_refuses_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal.open(path):
        child = _python(
            """
            import sys
            from pathlib import Path
            from chenyu_assets.batch.journal import Journal
            from chenyu_assets.errors import JournalLockedError
            try:
                Journal.open(Path(sys.argv[1]))
            except JournalLockedError as exc:
                print(exc)
            """,
            str(path),
        )
        out, err = child.communicate(timeout=30)
        assert out.strip() == (
            f"journal {path} is locked by another running ingest (pid {os.getpid()})"
        ), err
        with pytest.raises(JournalLockedError, match="locked by another running ingest"):
            Journal.open(path)  # a second open in the same process is refused too
    Journal.open(path).close()  # released on close


def test_lock_of_a_sigkilled_holder_is_free(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    child = _python(
        """
        import sys, time
        from pathlib import Path
        from chenyu_assets.batch.journal import Journal
        j = Journal.open(Path(sys.argv[1]))
        print("ready", flush=True)
        time.sleep(60)
        """,
        str(path),
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(JournalLockedError, match=rf"\(pid {child.pid}\)$"):
            Journal.open(path)
    finally:
        child.kill()
        child.wait(timeout=30)
    with Journal.open(path) as j:
        assert j.integrity_ok()


def test_changed_fingerprint(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        for key in ("pending", "failed", "skipped", "active", "unknown"):
            _register(j, key, size=10, mtime_ns=1, content_hash="h1")
        j.mark_uploaded("pending", url="https://u", expires_at=None)
        j.mark_done("failed", S.FAILED, error_code="X", message="boom")
        j.mark_done("skipped", S.SKIPPED, error_code="image_ratio", message="wide")
        j.mark_intent("active")
        j.mark_done("active", S.ACTIVE, asset_id="asset-a")
        j.mark_intent("unknown")
        j.mark_unknown("unknown", error_code="Timeout", message=None)
        before = j.get("active")

        # unchanged (a missing value does not count as a change): nothing moves
        same = _register(j, "active", size=10, mtime_ns=None, content_hash="h1")
        assert same == before
        assert not same.changed
        assert _register(j, "failed", size=10).state is S.FAILED

        # changed before any asset could exist: back to PENDING with the new fingerprint
        for key in ("pending", "failed", "skipped"):
            entry = _register(j, key, size=11, mtime_ns=2, content_hash="h2", name=f"{key}-v2")
            assert (entry.state, entry.size, entry.content_hash, entry.name) == (
                S.PENDING,
                11,
                "h2",
                f"{key}-v2",
            )
            assert (entry.upload_url, entry.error_code, entry.attempts, entry.changed) == (
                None,
                None,
                0,
                False,
            )

        # changed after an asset may exist: flagged, the row untouched
        for key, state in (("active", S.ACTIVE), ("unknown", S.UNKNOWN)):
            entry = _register(j, key, size=10, mtime_ns=1, content_hash="h-other")
            assert (entry.state, entry.content_hash, entry.changed) == (state, "h1", True)
        assert j.get("active") == before


def test_pending_row_takes_the_new_registration(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        _register(j, "k", size=1)
        entry = _register(j, "k", name="renamed", label="L", asset_type="Video")
        assert (entry.state, entry.name, entry.label, entry.asset_type, entry.size) == (
            S.PENDING,
            "renamed",
            "L",
            "Video",
            1,
        )


def test_register_many_100k_is_fast_and_idempotent(tmp_path: Path) -> None:
    regs = [
        Registration(f"dir/{i:06d}.jpg", f"n{i}", Path(f"/in/dir/{i:06d}.jpg"), size=i)
        for i in range(100_000)
    ]
    with Journal.open(tmp_path / "j.db") as j:
        # "fast" is what it does, not how long a loaded machine takes: one transaction
        # (one BEGIN, one COMMIT: a single fsync), one prepared upsert run per item
        statements: list[str] = []
        j._conn.set_trace_callback(statements.append)
        j.register_many(iter(regs))
        j._conn.set_trace_callback(None)
        verbs = Counter(sql.split(None, 1)[0].upper() for sql in statements)
        assert verbs == {"BEGIN": 1, "INSERT": 100_000, "COMMIT": 1}, verbs
        j.mark_intent("dir/000005.jpg")
        j.register_many(regs)  # a resume: nothing new, nothing reset
        counts = j.counts()
        assert (counts["pending"], counts["creating"], sum(counts.values())) == (99_999, 1, 100_000)
        keys = [e.key for e in j.iter_state(S.PENDING)]
        assert len(keys) == 99_999
        assert keys == sorted(keys)


def test_iter_state_while_updating(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as j:
        j.register_many(Registration(f"k{i:04d}", f"n{i}", f"https://x/{i}") for i in range(1200))
        seen = []
        for entry in j.iter_state(S.PENDING, S.UPLOADED):
            seen.append(entry.key)
            if entry.state is S.PENDING:
                j.mark_uploaded(entry.key, url="https://signed", expires_at=None)
        assert seen == [f"k{i:04d}" for i in range(1200)]  # each once, in rowid order
        assert j.counts()["uploaded"] == 1200
        assert list(j.iter_state()) == []
        assert len(list(j.iter_all())) == 1200


def test_run_info_pins_the_group(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    info = {"group_id": "group-1", "endpoint": "https://ark.example", "account": "ak-sha:1a2b"}
    with Journal.open(path, run_info=info) as j:
        assert j.meta() == info
    with pytest.raises(ValueError, match="belongs to group_id='group-1', not 'group-2'"):
        Journal.open(path, run_info={"group_id": "group-2"})
    with Journal.open(path, run_info={"group_id": "group-1", "endpoint": "https://other"}) as j:
        assert j.meta()["endpoint"] == "https://other"  # not pinned: updated
    with pytest.raises(ValueError, match="credentials"):
        Journal.open(path, run_info={"secret_key": "x"})
    with Journal.open(path) as j:  # every failed open above released the lock
        assert j.meta()["group_id"] == "group-1"


def test_non_utf8_path_bytes_round_trip(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.jpg"
    path = Path(os.fsdecode(raw))
    with Journal.open(tmp_path / "j.db") as j:
        j.register("caf\\xe9 \\xff.jpg", name="caf-1", source=path, size=3)
        j.register_many([Registration("url", "u", "https://x.example/é.jpg")])
    with Journal.open(tmp_path / "j.db") as j:
        entry = j.get("caf\\xe9 \\xff.jpg")
        assert entry is not None
        assert entry.path is not None
        assert entry.source_bytes == raw
        assert os.fsencode(entry.path) == raw
        assert entry.source.endswith("caf\\xe9 \\xff.jpg")  # displayable text
        url = j.get("url")
        assert url is not None
        assert (url.source, url.source_bytes, url.path) == ("https://x.example/é.jpg", None, None)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ValueError, match="schema version 99"):
        Journal.open(path)
    Journal.open(path.with_name("other.db")).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()


# --- issue 14: private files, unusable paths, no bearer URL or echoed secret kept -------------


def test_journal_and_lock_are_created_0600_and_tightened(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: without care the files would be 0644
    try:
        path = tmp_path / "new" / "j.db"
        with Journal.open(path) as j:
            _register(j, "a")
            modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
        assert modes == {"j.db": 0o600, "j.db.lock": 0o600, "j.db-wal": 0o600, "j.db-shm": 0o600}
        assert path.parent.stat().st_mode & 0o077 == 0  # the folder it created: 0700
        loose = tmp_path / "loose.db"
        sqlite3.connect(loose).close()  # an older journal, 0644
        loose.chmod(0o644)
        Journal.open(loose).close()
        assert loose.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_unusable_journal_paths_are_a_journal_error(tmp_path: Path) -> None:
    folder = tmp_path / "folder.db"
    folder.mkdir()
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n")
    under_a_file = tmp_path / "notes.db" / "j.db"
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    cases = {
        folder: "is a folder",
        notes: "not an SQLite database",
        under_a_file: "Not a directory",
        fifo: "not a regular file",
    }
    for path, why in cases.items():
        with pytest.raises(JournalError, match=why) as info:
            Journal.open(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)  # as before this type existed
    assert notes.read_text() == "my notes, not a database\n"  # left as it was
    assert not (tmp_path / "folder.db.lock").exists()  # nothing created beside a folder
    with Journal.open(tmp_path / "g.db", run_info={"group_id": "g1"}):
        pass
    with pytest.raises(JournalError, match="belongs to group_id='g1'"):
        Journal.open(tmp_path / "g.db", run_info={"group_id": "g2"})


def test_signed_upload_url_is_dropped_once_the_asset_exists(tmp_path: Path) -> None:
    signed = "https://chenyu.example/assets/a/content?expires=9&signature=SECRETSIG"
    path = tmp_path / "j.db"
    with Journal.open(path) as j:
        for key in ("created", "unknown", "failed"):
            _register(j, key)
            j.mark_uploaded(key, url=signed, expires_at=1e10)
            j.mark_intent(key)
        j.mark_unknown("unknown", error_code="ConnectionLostError", message="reset")
        unknown = j.get("unknown")
        assert unknown is not None
        assert unknown.upload_url == signed  # a re-create may still need it
        j.reset_to_pending("unknown")
        again = j.get("unknown")
        assert again is not None
        assert again.upload_url == signed  # reusable until it expires
        j.mark_created("created", "asset-1")
        j.mark_done("failed", S.FAILED, error_code="InvalidParameter", message="bad")
        failed = j.get("failed")
        assert failed is not None
        assert failed.upload_url == signed  # no asset exists: nothing to drop it for
        j.mark_done("created", S.ACTIVE)
        created = j.get("created")
        assert created is not None
        assert (created.upload_url, created.upload_expires_at) == (None, None)
    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT key FROM items WHERE upload_url IS NOT NULL").fetchall()
    conn.close()
    assert sorted(k for (k,) in kept) == ["failed", "unknown"]


def test_echoed_secrets_are_masked_in_error_messages(tmp_path: Path) -> None:
    from chenyu_assets._core.logs import register_secret

    secret = "journalCanarySecret0123456789"
    register_secret(secret)
    path = tmp_path / "j.db"
    with Journal.open(path) as j:
        _register(j, "a")
        j.mark_intent("a")
        j.mark_unknown("a", error_code="X", message=f"gateway said: key {secret} refused")
        j.reset_to_pending("a")
        j.mark_intent("a")
        echo = f"Authorization: Bearer {secret} / HMAC-SHA256 Signature=abcdef0123"
        j.mark_done("a", S.FAILED, error_code="InvalidParameter", message=echo)
        entry = j.get("a")
        assert entry is not None
        assert entry.error_message is not None
        assert "refused" not in entry.error_message  # the later message replaced it
        assert secret not in entry.error_message
        assert "abcdef0123" not in entry.error_message
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in raw
