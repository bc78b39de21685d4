"""A new user's mistakes and a hostile server, through the real ``chenyu-assets`` CLI in a
subprocess (issue 14): each ends in one ``error:`` line naming the flag, file or variable,
exit 2 for a usage mistake and 4 for a fatal stop, never a traceback (only with ``-vv``);
server text is shown as plain text with terminal escapes removed and no credential in it,
nor in ``--out`` or the journal.

The hostile server is ours (stdlib ``http.server`` on 127.0.0.1): it speaks just enough of
the Ark and Chenyu envelopes, and its error messages repeat every credential of the request
(as some gateways do), rich markup (``[/x]``) and terminal escapes (an OSC window title, an
OSC 52 clipboard write, a CSI screen clear).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests import serve_kit

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "media" / "sample-00.png"
CANARY_AK = "AKcanaryAccessKey0001"
CANARY_SK = "SKcanarySecretKey0002canarycanary"
CANARY_TOKEN = "STScanaryToken0003canary"
CANARY_BEARER = "cy_canaryBearerKey0004canary"
CANARIES = (CANARY_AK, CANARY_SK, CANARY_TOKEN, CANARY_BEARER)
NO_CREDENTIALS = ("VOLC_ACCESSKEY", "VOLC_SECRETKEY", "BYTEPLUS_ACCESSKEY", "CHENYU_API_KEY")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``chenyu-assets ARGS`` in a subprocess (a hang is a failure after 60 s)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in NO_CREDENTIALS}
    return subprocess.run(
        [sys.executable, "-m", "chenyu_assets.cli", *args],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str], code: int, *named: str) -> str:
    """Assert exit ``code`` and a stderr of exactly one ``error:`` line naming ``named``."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in named:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- usage mistakes: exit 2 before anything is sent (no server needed) -------------------------


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.png").write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "bad-header.csv").write_text("file,title\na.png,x\n")
    (tmp_path / "folder.csv").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    (tmp_path / "journal-folder").mkdir()
    (tmp_path / "not-sqlite.db").write_text("these are my notes\n")
    return tmp_path


USAGE = [
    # (case id, arguments ({t} is the work folder), words the line must hold)
    ("bad CSV header", ["ingest", "{t}/bad-header.csv"], ["bad-header.csv", "'path' or 'url'"]),
    ("--concurrency 0", ["ingest", "{t}/media", "--concurrency", "0"], ["--concurrency"]),
    ("--concurrency -3", ["ingest", "{t}/media", "--concurrency", "-3"], ["--concurrency", "-3"]),
    ("--concurrency x", ["ingest", "{t}/media", "--concurrency", "x"], ["--concurrency"]),
    ("--upload-concurrency 0", ["ingest", "{t}/media", "--upload-concurrency", "0"],
     ["--upload-concurrency"]),
    ("--max-processing 0", ["ingest", "{t}/media", "--max-processing", "0"], ["--max-processing"]),
    ("--rate-scale 0", ["ingest", "{t}/media", "--rate-scale", "0"], ["--rate-scale"]),
    ("--rate-scale nan", ["ingest", "{t}/media", "--rate-scale", "nan"], ["--rate-scale"]),
    ("--rate-scale -1", ["ingest", "{t}/media", "--rate-scale=-1"], ["--rate-scale"]),
    ("--slot-lease 0", ["ingest", "{t}/media", "--slot-lease", "0"], ["--slot-lease"]),
    ("--shard 2/2", ["ingest", "{t}/media", "--shard", "2/2"], ["--shard"]),
    ("--shard x", ["ingest", "{t}/media", "--shard", "x"], ["--shard"]),
    ("journal is a folder", ["ingest", "{t}/media", "--journal", "{t}/journal-folder"],
     ["--journal", "journal-folder", "folder"]),
    ("journal is not SQLite", ["ingest", "{t}/media", "--journal", "{t}/not-sqlite.db"],
     ["--journal", "not-sqlite.db", "not an SQLite database"]),
    ("--out in a missing folder", ["ingest", "{t}/media", "--out", "{t}/nope/results.jsonl"],
     ["--out", "does not exist"]),
    ("--out is a folder", ["ingest", "{t}/media", "--out", "{t}/media"], ["--out", "folder"]),
    ("--ca-bundle missing", ["ingest", "{t}/media", "--ca-bundle", "{t}/corp.pem"],
     ["--ca-bundle", "corp.pem"]),
    ("source missing", ["ingest", "{t}/nothing-here"], ["nothing-here", "no such file"]),
    ("manifest is a FIFO", ["ingest", "{t}/pipe.csv"], ["pipe.csv", "not a regular file"]),
    ("JSONL manifest is a FIFO", ["ingest", "{t}/pipe.jsonl"], ["pipe.jsonl", "regular file"]),
    ("/dev/zero as .jsonl", ["ingest", "{t}/zero.jsonl"], ["zero.jsonl", "regular file"]),
    ("/dev/zero as .csv", ["ingest", "{t}/zero.csv"], ["zero.csv", "regular file"]),
    ("folder named .csv", ["ingest", "{t}/folder.csv"], ["folder.csv", "a directory"]),
    ("upload --ttl-hours 0", ["upload", "{t}/media/a.png", "--ttl-hours", "0"], ["--ttl-hours"]),
    ("upload a missing file", ["upload", "{t}/media/gone.png"], ["gone.png"]),
    ("upload a FIFO", ["upload", "{t}/pipe.csv"], ["pipe.csv", "not a regular file"]),
    ("list --limit -1", ["list", "--group-id", "g", "--limit", "-1"], ["--limit"]),
    ("unknown flag", ["ingest", "{t}/media", "--concurency", "3"], ["--concurency"]),
    ("unknown --media-type", ["upload", "{t}/media/a.png", "--media-type", "picture"],
     ["--media-type", "picture"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "named"), [c[1:] for c in USAGE], ids=[c[0] for c in USAGE])
def test_usage_mistake_is_one_line_and_exit_2(
    work: Path, args: list[str], named: list[str]
) -> None:
    done = run(*(a.format(t=work) for a in args))
    one_line(done, 2, *named)


@pytest.mark.parametrize(
    ("args", "field"), [(["--port", "70000"], "port"), (["--time-scale", "0"], "time_scale")]
)
def test_serve_mistakes_are_one_line(args: list[str], field: str) -> None:
    done = run("serve", *args)  # the emulator's own settings check words these
    lines = done.stderr.strip().splitlines()
    assert (done.returncode, len(lines)) == (2, 1), done.stderr
    assert field in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_credentials_name_the_variable(work: Path) -> None:
    one_line(run("ingest", str(work / "media")), 4, "VOLC_ACCESSKEY")
    one_line(run("get", "asset_" + "0" * 32), 4, "CHENYU_API_KEY")
    one_line(run("groups"), 4, "VOLC_ACCESSKEY")


def test_a_single_file_is_a_one_item_source(work: Path) -> None:
    done = run("ingest", str(work / "media" / "a.png"), "--emulator", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["total"], summary["planned"], summary["fatal"]) == (1, 1, None)


def test_the_traceback_only_with_vv(work: Path) -> None:
    quiet = run("ingest", str(work / "bad-header.csv"))
    one_line(quiet, 2, "header")
    loud = run("-vv", "ingest", str(work / "bad-header.csv"))
    assert loud.returncode == 2
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.rstrip().splitlines()[-1].startswith("error: ")


# --- against the emulator --------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[dict[str, str]]:
    with serve_kit.serve() as served:
        yield served.env


def test_a_journal_of_another_group(emulator: dict[str, str], work: Path) -> None:
    journal = work / "one.db"
    first = run(
        "ingest", str(work / "media"), "--group-id", "group-a", "--journal", str(journal),
        "--dry-run", "--no-progress", env=emulator,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = run(
        "ingest", str(work / "media"), "--group-id", "group-b", "--journal", str(journal),
        "--dry-run", "--no-progress", env=emulator,
    )  # fmt: skip
    one_line(again, 2, "one.db", "group-a", "another journal path")


def test_unknown_status_is_a_usage_line_naming_the_choices(emulator: dict[str, str]) -> None:
    one_line(run("list", "--group-id", "g", "--status", "Bogus", env=emulator), 2, "Active")


def test_outside_paths_are_refused_unless_allowed(emulator: dict[str, str], work: Path) -> None:
    manifest = work / "m" / "list.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"key,path\nk-abs,{work}/media/a.png\nk-up,../media/a.png\n")
    out = work / "out.jsonl"
    args = ["ingest", str(manifest), "--group-id", "g", "--dry-run", "--no-progress"]
    refused = run(*args, "--journal", str(work / "j1.db"), "--out", str(out), env=emulator)
    assert refused.returncode == 3, refused.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["key"], r["error_code"]) for r in results} == {
        ("k-abs", "outside_manifest"),
        ("k-up", "outside_manifest"),
    }
    allowed = run(*args, "--journal", str(work / "j2.db"), "--allow-outside-paths", env=emulator)
    assert allowed.returncode == 0, allowed.stderr


# --- a hostile server --------------------------------------------------------------------------

ESCAPES = "\x1b]0;pwned-title\x07 \x1b]52;c;cHduZWQ=\x07 \x1b[2J\x1b[31m \x9b31m \u202e"


class Hostile(BaseHTTPRequestHandler):
    """Ark (``POST /?Action=...``) and Chenyu (``/api/open/v2/...``) answers whose error
    messages repeat the request's credentials, markup and terminal escapes."""

    group_id: ClassVar[str] = "../../escaped"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _echo(self) -> str:
        auth = self.headers.get("Authorization", "")
        token = self.headers.get("X-Security-Token", "")
        return (
            f"denied [/x] [bold red]markup[/] Authorization: {auth} token {token} "
            f"(keys {CANARY_AK} {CANARY_SK} {CANARY_BEARER}) {ESCAPES} end"
        )

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _ark(self, action: str, result: dict[str, Any] | None, error: tuple[int, str]) -> None:
        meta: dict[str, Any] = {"RequestId": "req-hostile", "Action": action, "Version": "x"}
        if result is not None:
            self._send(200, {"ResponseMetadata": meta, "Result": result})
            return
        status, code = error
        meta["Error"] = {"Code": code, "Message": self._echo()}
        self._send(status, {"ResponseMetadata": meta})

    def do_GET(self) -> None:
        self._send(403, {"code": 40300, "msg": self._echo(), "data": None})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        if url.path.startswith("/api/open/v2"):
            self._send(401, {"code": 40100, "msg": self._echo(), "data": None})
            return
        action = parse_qs(url.query).get("Action", [""])[0]
        empty = {"Items": [], "TotalCount": 0, "PageNumber": 1, "PageSize": 100}
        if action in ("ListAssetGroups", "ListAssets"):
            self._ark(action, empty, (0, ""))
        elif action == "CreateAssetGroup" and b"deny-me" in body:
            self._ark(action, None, (403, "AccessDenied"))
        elif action == "CreateAssetGroup":
            self._ark(action, {"Id": type(self).group_id}, (0, ""))
        elif action == "CreateAsset":
            self._ark(action, None, (400, "InvalidParameter.URL[/x]"))  # shown in the summary
        else:
            self._ark(action, None, (404, "NotFound.asset_id"))


@pytest.fixture
def hostile() -> Iterator[dict[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if k not in NO_CREDENTIALS}
    env |= {
        "VOLC_ACCESSKEY": CANARY_AK,
        "VOLC_SECRETKEY": CANARY_SK,
        "VOLC_SESSION_TOKEN": CANARY_TOKEN,
        "ARK_BASE_URL": url,
        "CHENYU_API_KEY": CANARY_BEARER,
        "CHENYU_BASE_URL": url + "/api/open/v2",
    }
    try:
        yield env
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def assert_clean(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text
    for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert ch not in text, repr(text)
    assert "pwned" not in text  # the OSC payloads are gone with their sequences


def test_server_text_is_plain_and_redacted_on_the_error_line(hostile: dict[str, str]) -> None:
    get, upload = ["get", "asset-20260101000000-zzzzz"], ["upload", str(EXAMPLE)]
    for args in (get, upload, ["groups", "--create", "deny-me"], ["get", "asset_" + "0" * 32]):
        done = run(*args, env=hostile)
        line = one_line(done, 4, "denied")
        assert "[/x]" in line  # markup shown as text, not interpreted (and no crash)
        assert "[bold red]markup[/]" in line
        assert_clean(done.stderr)
        assert_clean(done.stdout)


def test_server_text_is_redacted_with_vv_too(hostile: dict[str, str]) -> None:
    done = run("-vv", "get", "asset-20260101000000-zzzzz", env=hostile)
    assert done.returncode == 4
    assert "Traceback" in done.stderr
    assert_clean(done.stderr)


def test_echoed_credentials_never_reach_out_or_the_journal(
    hostile: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"key": "k1", "url": "https://cdn.example.com/a.png"}\n')
    out, journal = tmp_path / "out.jsonl", tmp_path / "j.db"
    done = run(
        "ingest", str(manifest), "--group-id", "group-x", "--journal", str(journal),
        "--out", str(out), "--no-progress", "--json", env=hostile,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (result["status"], result["error_code"]) == ("failed", "InvalidParameter.URL[/x]")
    assert "reason InvalidParameter.URL[/x]" in done.stderr  # the summary, markup as text
    assert "denied" in result["message"]
    assert_clean(done.stderr + done.stdout)
    for canary in CANARIES:
        assert canary not in out.read_text()
    with sqlite3.connect(journal) as conn:
        (message,) = conn.execute("SELECT error_message FROM items").fetchone()
    assert "denied" in message
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("j.db*"))
    for canary in CANARIES:
        assert canary not in message
        assert canary.encode() not in raw


@pytest.mark.parametrize("group_id", ["../../escaped", "/tmp/escaped-abs", "a/../../b", ".."])
def test_a_server_chosen_group_id_names_no_path(
    hostile: dict[str, str], tmp_path: Path, group_id: str
) -> None:
    Hostile.group_id = group_id
    cwd = tmp_path / "deep" / "cwd"
    cwd.mkdir(parents=True)
    (cwd / "list.jsonl").write_text('{"key": "k1", "url": "https://cdn.example.com/a.png"}\n')
    done = run("ingest", "list.jsonl", "--group", "new", "--no-progress", env=hostile, cwd=cwd)
    assert done.returncode == 3, done.stderr
    created = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    journals = [p for p in created if p.suffix == ".db"]
    assert len(journals) == 1, created
    assert journals[0].parent == Path("deep/cwd/.chenyu")
    assert journals[0].name.startswith("group-")
    assert not any("escaped" in str(p) for p in created)
    assert not list(Path("/tmp").glob("escaped-abs*"))
