"""The operator's view of the CLI (issue 16, points 3-5), through real subprocesses against
``chenyu-assets serve``: ``status`` of a journal (read-only), ``--stats`` lines and logs
when stderr is a pipe, the labelled bar on a pseudo-terminal, help texts, ``get asset://``,
``list --status``, ``delete``, ``serve``'s export lines and a dry run that changes nothing.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chenyu_assets.batch.journal import Journal
from chenyu_assets.cli import _build_parser
from chenyu_assets.emulator import DEMO_API_KEY, DEMO_SECRET_KEY
from tests import mediagen, serve_kit

pytestmark = pytest.mark.subprocess
ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """``chenyu-assets ARGS`` in a subprocess, stdout and stderr piped (hang guard 60 s)."""
    return subprocess.run(
        [sys.executable, "-m", "chenyu_assets.cli", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def on_pty(*args: str, env: dict[str, str], cwd: Path, answer: bytes = b"") -> tuple[int, str]:
    """``chenyu-assets ARGS`` with stdin and stderr on a pseudo-terminal (stdout piped):
    the exit code and everything the terminal showed. ``answer`` is typed once."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chenyu_assets.cli", *args],
        env={**env, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "220"},
        cwd=cwd,
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    if answer:
        os.write(master, answer)
    shown = b""
    deadline = time.monotonic() + 60  # hang guard only
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, shown.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def served() -> Iterator[serve_kit.Served]:
    with serve_kit.serve("--processing-delay", "0.5") as s:
        yield s


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    mediagen.write(folder / "a.png", mediagen.png(800, 800))
    mediagen.write(folder / "b.png", mediagen.png(800, 600))
    mediagen.write(folder / "bad.png", mediagen.html())  # refused by the media check
    return folder


def results(path: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}


def ingest_once(served: serve_kit.Served, media: Path, tmp: Path, *extra: str) -> Path:
    out = tmp / "out.jsonl"
    done = run(
        "ingest", str(media), "--no-progress", "--out", str(out), *extra, env=served.env, cwd=tmp
    )
    assert done.returncode == 3, done.stderr  # bad.png skipped
    return out


# --- status ----------------------------------------------------------------------------------


def test_status_shows_counts_problems_and_the_last_run(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    ingest_once(
        served, media, tmp_path, "--group-id", make_group(served, "st"), "--journal", str(journal)
    )
    files = sorted(p.name for p in tmp_path.iterdir())
    before = journal.read_bytes()
    with Journal.open(journal):  # an ingest holding the lock: status still reads
        done = run("status", str(journal), "--json", env=served.env)
        text = run("status", str(journal), env=served.env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["states"] == {"active": 2, "skipped": 1}
    assert data["problems"][0]["key"] == "bad.png"
    assert data["problem_codes"] == [{"state": "skipped", "error_code": "unrecognized", "count": 1}]
    run_ = data["last_run"]
    assert run_["status"] == "completed"
    assert run_["ended"] >= run_["started"]
    assert (run_["active"], run_["skipped"], run_["creates"]) == (2, 1, 2)
    assert run_["status_calls"] >= 1
    assert run_["rate_limited"] == 0
    assert text.returncode == 0, text.stderr
    for label in ("items     3", "active", "last run", "429s 0", "bad.png", "unrecognized"):
        assert label in text.stdout
    # read-only: the same bytes; without an ingest open, not even a -wal file appears
    assert journal.read_bytes() == before
    again = run("status", str(journal), env=served.env)
    assert again.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def make_group(served: serve_kit.Served, name: str) -> str:
    done = run("groups", "--create", name, env=served.env)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def test_status_finds_the_default_journal_by_group(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    ingest_once(served, media, tmp_path, "--group", "by-name")
    by_name = run("status", "--group", "by-name", "--json", env=served.env, cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    data = json.loads(by_name.stdout)
    assert data["group_name"] == "by-name"
    assert data["states"]["active"] == 2
    by_id = run("status", "--group-id", data["group_id"], "--json", env=served.env, cwd=tmp_path)
    assert json.loads(by_id.stdout)["journal"] == data["journal"]
    missing = run("status", "--group", "nope", env=served.env, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no journal")
    folder = run("status", str(tmp_path), env=served.env)
    assert folder.returncode == 2
    assert "is a folder" in folder.stderr


# --- progress and logs without a terminal ----------------------------------------------------


def test_stats_lines_appear_while_the_run_is_under_way(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    done = run(
        "ingest", str(media), "--group", "stats", "--stats", "0.2", env=served.env, cwd=tmp_path
    )
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("stats: ")]
    # assets stay Processing 0.5 s: a line written before the end shows fewer than 3 done
    early = [line for line in lines if not line.startswith("stats: done 3/3")]
    assert early, done.stderr
    assert re.search(r"rate \d+\.\d+ items/s 429s \d+ elapsed \d+\.\ds eta \S+", lines[0])
    assert lines[-1].startswith("stats: done 3/3 active 2 failed 0 skipped 1")


def test_stats_are_on_by_default_when_stderr_is_a_pipe(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    done = run("ingest", str(media), "--group", "default-stats", env=served.env, cwd=tmp_path)
    assert "stats: done 3/3" in done.stderr
    off = run(
        "ingest",
        str(media),
        "--group",
        "default-stats",
        "--stats",
        "0",
        env=served.env,
        cwd=tmp_path,
    )
    assert "stats:" not in off.stderr


def test_json_logs_name_action_request_id_and_item(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    # a file named after the account's key: its item key is masked in every log line
    mediagen.write(media / f"{DEMO_API_KEY}.png", mediagen.png(800, 800))
    done = run(
        "ingest", str(media), "--group", "logs", "--no-progress", "--stats", "0",
        "--log-format", "json", "-vv", env=served.env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    creates = [r for r in records if r.get("action") == "CreateAsset" and r["level"] == "INFO"]
    assert len(creates) == 3
    assert all(r["request_id"] for r in creates)
    http = [r for r in records if r["logger"] == "chenyu_assets.http"]
    assert any(r.get("action") == "CreateAsset" for r in http)  # the transport's line too
    items = {r["item_key"]: r for r in records if "item_key" in r}
    assert items["bad.png"]["status"] == "skipped"
    assert items["a.png"]["status"] == "active"
    assert items["a.png"]["asset_id"]
    assert items["***.png"]["status"] == "active"
    assert DEMO_SECRET_KEY not in done.stderr
    assert DEMO_API_KEY not in done.stderr


def test_v_after_the_subcommand_names_actions_and_outcomes(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    info = run(
        "ingest", str(media), "--group", "v", "--no-progress", "-v", env=served.env, cwd=tmp_path
    )
    assert "CreateAsset ok (request id " in info.stderr
    assert re.search(r"item a\.png: active", info.stderr)
    assert "item bad.png: skipped (unrecognized)" in info.stderr
    assert " DEBUG " not in info.stderr
    debug = run("-vv", "list", "--group-id", "nope", env=served.env)
    assert re.search(r"DEBUG chenyu_assets\.http: ListAssets: POST \S+ -> 200", debug.stderr)


# --- a terminal ------------------------------------------------------------------------------


def test_the_bar_labels_its_columns(served: serve_kit.Served, media: Path, tmp_path: Path) -> None:
    code, shown = on_pty("ingest", str(media), "--group", "bar", env=served.env, cwd=tmp_path)
    assert code == 3, shown
    for label in ("items/s", "processing", "failed 0", "skipped 1", "429s 0", "elapsed", "ETA"):
        assert label in shown, label
    assert "stats:" not in shown  # the bar shows it
    code, shown = on_pty(
        "ingest", str(media), "--group", "bar", "--stats", "0.2", env=served.env, cwd=tmp_path
    )
    assert code == 3, shown
    assert "stats: done 3/3" in shown  # asked for: printed above the bar


# --- help ------------------------------------------------------------------------------------


def test_every_argument_has_help_and_every_command_examples() -> None:
    parser = _build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():  # type: ignore[union-attr]
        assert "examples:" in (sub.epilog or ""), name
        assert "environment:" in sub.epilog, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
    shown = run("ingest", "--help", env=dict(os.environ))
    assert "CreateAsset tasks (default: 8)" in " ".join(shown.stdout.split())
    assert "VOLC_ACCESSKEY" in shown.stdout.split("environment:")[1]


# --- get, list, delete -----------------------------------------------------------------------


def test_get_list_and_delete(served: serve_kit.Served, media: Path, tmp_path: Path) -> None:
    group = make_group(served, "del")
    out = ingest_once(served, media, tmp_path, "--group-id", group)
    a, b = (results(out)[k] for k in ("a.png", "b.png"))
    got = run("get", a["reference"], env=served.env)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["id"] == a["asset_id"]
    assert run("get", "asset://", env=served.env).returncode == 2
    active = run("list", "--group-id", group, "--status", "aCtIvE", env=served.env)
    assert active.returncode == 0
    assert len(active.stdout.splitlines()) == 2
    bogus = run("list", "--group-id", group, "--status", "bogus", env=served.env)
    assert bogus.returncode == 2
    assert "Processing, Active, Failed" in bogus.stderr

    refused = run("delete", a["asset_id"], env=served.env)  # stdin is not a terminal
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    dry = run("delete", a["reference"], "--dry-run", env=served.env)
    assert json.loads(dry.stdout) == {
        "would_delete": "asset",
        "id": a["asset_id"],
        "name": a["name"],
    }
    code, _ = on_pty("delete", a["asset_id"], env=served.env, cwd=tmp_path, answer=b"n\n")
    assert code == 2
    assert run("get", a["asset_id"], env=served.env).returncode == 0  # still there
    code, shown = on_pty("delete", a["asset_id"], env=served.env, cwd=tmp_path, answer=b"y\n")
    assert code == 0
    assert "[y/N]" in shown
    assert run("get", a["asset_id"], env=served.env).returncode == 4
    gone = run("delete", "--group-id", group, "--yes", env=served.env)
    assert json.loads(gone.stdout) == {"deleted": "group", "id": group}
    assert run("get", b["asset_id"], env=served.env).returncode == 4  # with its group


# --- serve and the dry run -------------------------------------------------------------------


def test_serve_prints_the_exports_another_shell_needs(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chenyu_assets.cli", "serve", "--port", "0"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not (line := proc.stdout.readline()).startswith("Press Ctrl+C"):
            assert line, lines
            lines.append(line)
        exports = dict(  # as a shell reads them (the values are shell-quoted)
            shlex.split(ln)[1].split("=", 1) for ln in lines if ln.startswith("export ")
        )
        needed = {"ARK_BASE_URL", "VOLC_ACCESSKEY", "VOLC_SECRETKEY", "CHENYU_BASE_URL"}
        assert needed | {"CHENYU_API_KEY", "AVATAR_BASE_URL", "AVATAR_API_KEY"} <= exports.keys()
        bare = {"PATH": os.environ.get("PATH", ""), **exports}
        assert run("groups", "--create", "from-exports", env=bare).returncode == 0
        assert "from-exports" in run("groups", env=bare).stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_dry_run_checks_media_and_creates_nothing(
    served: serve_kit.Served, media: Path, tmp_path: Path
) -> None:
    done = run(
        "ingest", str(media), "--group", "never-made", "--dry-run", "--json", "--no-progress",
        env=served.env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["planned"], summary["skipped"]) == (2, 1)
    assert summary["failures"] == {"unrecognized": 1}
    assert summary["would_create_group"] == "never-made"
    assert summary["group_id"] is None
    assert "would create group never-made" in done.stderr
    assert "never-made" not in run("groups", env=served.env).stdout
    assert not (tmp_path / ".chenyu").exists()


def test_an_interrupted_run_leaves_its_record(media: Path, tmp_path: Path) -> None:
    """Assets stay Processing 60 s, so the run is surely under way when the first periodic
    ``--stats`` line arrives; SIGINT then, and ``status`` names the run interrupted."""
    journal = tmp_path / "j.db"
    with serve_kit.serve("--processing-delay", "60") as slow:
        group = make_group(slow, "slow")
        args = ["ingest", str(media), "--group-id", group, "--journal", str(journal)]
        proc = serve_kit.cli(
            [*args, "--stats", "0.2", "--no-progress"], {**slow.env, "PYTHONPATH": str(ROOT)}
        )
        try:
            assert proc.stderr is not None
            for _ in range(1000):  # bounded: the first periodic line comes within 0.2 s
                line = proc.stderr.readline()
                assert line, "no stats line"
                if line.startswith("stats: "):
                    break
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err
    data = json.loads(run("status", str(journal), "--json", env=dict(os.environ)).stdout)
    assert data["last_run"]["status"] == "interrupted"
    assert data["last_run"]["active"] == 0
    assert data["states"].get("created", 0) + data["states"].get("creating", 0) >= 1
