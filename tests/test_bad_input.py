"""Bad input (issue 8): every bad item is a typed error or a per-item result with a stable
reason code, the batch goes on, and nothing is lost.

The core is three real ``chenyu-assets ingest`` runs (subprocesses, against a
``chenyu-assets serve`` subprocess) over one directory tree and two manifests in which
every kind of bad item sits between good ones. Each case below is its own test (so a
regression names the case); two more tests per run check that every input item has
exactly one result and that the exit code is 3 (some items failed or were skipped). A
fourth run through the SDK covers what only a programmatic source or a server-side check
can produce. Cases that are not ingest items (``asset://`` references, labels, answers
that are not the API's envelope, revoked credentials) have focused tests at the end.

``pytest -s`` prints the table of (case, expected, got) at the end of the module.

Not repeated here (see those files): media edge cases per format (test_media.py),
reference and label syntax (test_refs.py), source readers in isolation (test_sources.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import mediagen
import pytest
from aiohttp import web

from chenyu_assets import refs
from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestOptions, IngestResult, SourceItem, ingest, open_ingest
from chenyu_assets.batch.sources import BadItem
from chenyu_assets.chenyu import CHENYU_RATES, ChenyuClient
from chenyu_assets.emulator import (
    Emulator,
    EmulatorConfig,
    FaultRule,
)
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    APIError,
    BadRequestError,
    ConnectionLostError,
    InvalidReferenceError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    WaitTimeoutError,
)
from chenyu_assets.limits import ACTION_RATES
from chenyu_assets.media import MiB
from tests import serve_kit
from tests.vclock import emulator_clock, run_virtual, virtual

SCALE = 10.0  # the served emulator runs 10x faster; the CLIs pace at RATE_SCALE x the limits
RATE_SCALE = "3"  # three CLIs at once stay under the account's 30/s x SCALE
GOOD = "active"
SKIPPED = "skipped"
FAILED = "failed"

#: (case, expected, got) rows, printed at the end of the module (``pytest -s``).
TABLE: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Iterator[None]:
    yield
    if not TABLE:
        return
    width = max(len(case) for case in TABLE)
    lines = [f"\n{'case':<{width}}  {'expected':<38}  got", "-" * (width + 80)]
    lines += [f"{case:<{width}}  {exp:<38}  {got}" for case, (exp, got) in sorted(TABLE.items())]
    lines.append(f"{len(TABLE)} bad-input cases")
    print("\n".join(lines))


def record(case: str, expected: str, got: str) -> None:
    TABLE[case] = (expected, got)


# -- the inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input item and the result it must get."""

    source: str  # "dir" | "csv" | "jsonl" | "sdk"
    name: str
    key: str
    status: str
    reason: str | None = None

    @property
    def id(self) -> str:
        return f"{self.source}:{self.name}"

    @property
    def expected(self) -> str:
        return self.status if self.reason is None else f"{self.status} {self.reason}"


ROOT_USER = os.geteuid() == 0

DIR_CASES = [
    Case("dir", "good png", "good/photo-800x600.png", GOOD),
    Case("dir", "good jpeg", "good/photo.jpg", GOOD),
    Case("dir", "good webp", "good/photo.webp", GOOD),
    Case("dir", "ratio 401x1000 (just above 0.4)", "good/ratio-0.401.png", GOOD),
    Case("dir", "ratio 2499x1000 (just below 2.5)", "good/ratio-2.499.png", GOOD),
    Case("dir", "side 301 (just above 300)", "good/side-301.png", GOOD),
    Case("dir", "side 5999 (just below 6000)", "good/side-5999.png", GOOD),
    Case("dir", "good mp4 video", "good/clip.mp4", GOOD),
    Case("dir", "good wav audio", "good/voice.wav", GOOD),
    Case("dir", "non-UTF-8 file name, good image", "good/caf\\xe9.png", GOOD),
    Case("dir", "CJK file name", "good/名字.png", GOOD),
    Case("dir", "truncated jpeg", "bad/truncated.jpg", SKIPPED, "corrupt"),
    Case("dir", "truncated png", "bad/truncated.png", SKIPPED, "corrupt"),
    Case("dir", "HTML named .png", "bad/page.png", SKIPPED, "unrecognized"),
    Case("dir", "text named .jpg", "bad/notes.jpg", SKIPPED, "unrecognized"),
    Case("dir", "ratio exactly 0.4 (400x1000)", "bad/ratio-0.4.png", SKIPPED, "image_ratio"),
    Case("dir", "ratio exactly 2.5 (2500x1000)", "bad/ratio-2.5.png", SKIPPED, "image_ratio"),
    Case("dir", "side exactly 300", "bad/side-300.png", SKIPPED, "image_side"),
    Case("dir", "side exactly 6000", "bad/side-6000.png", SKIPPED, "image_side"),
    Case("dir", "decompression bomb header", "bad/bomb.png", SKIPPED, "decompression_bomb"),
    Case("dir", "image of exactly 30 MiB", "bad/over-30mib.png", SKIPPED, "too_large"),
    Case("dir", "video over 100 MB", "bad/over-100mb.mp4", SKIPPED, "too_large"),
    Case("dir", "zero-byte file", "bad/empty.png", SKIPPED, "empty"),
    Case("dir", "audio of 1 s", "bad/short.wav", SKIPPED, "duration"),
    Case("dir", "video at 23.976 fps", "bad/slow.mp4", SKIPPED, "fps"),
    Case("dir", "non-UTF-8 name, HTML inside", "bad/\\xff\\xfe.png", SKIPPED, "unrecognized"),
    Case("dir", "FIFO", "bad/pipe.png", SKIPPED, "not_regular_file"),
    Case("dir", "dangling symlink", "bad/dangling.png", SKIPPED, "dangling_symlink"),
    Case("dir", "symlink to itself", "bad/loop.png", SKIPPED, "symlink_loop"),
    Case("dir", "symlink escaping the root", "bad/escape.png", SKIPPED, "symlink_escape"),
    # the dir run passes --follow-symlinks (without it a directory link is only *ignored*:
    # tests/test_walk.py); followed, a link back up is a loop
    Case("dir", "directory symlink to ..", "bad/back", SKIPPED, "symlink_loop"),
]
if not ROOT_USER:  # root reads a mode-000 file; the manifests cover unreadable for root
    DIR_CASES.append(Case("dir", "mode-000 file", "bad/unreadable.png", SKIPPED, "unreadable"))

LONG = "n" * 65
CSV_HEADER = "key,path,url,name,label,asset_type"
LINE = None  # the row's key is "<line N>": it has none of its own (or it is unreadable)
#: (case, the row after the header, status, reason, key: the key column, else the url,
#: else the path as written). A row of bytes is written as is.
CSV_ROWS: list[tuple[str, str | bytes, str, str | None, str | None]] = [
    ("good, explicit name and label", ",media/good/photo-800x600.png,,hero-01,Hero,", GOOD, None,
     "media/good/photo-800x600.png"),
    ("name of exactly 64 characters", f"k-name64,media/good/photo.jpg,,{'n' * 64},,", GOOD, None,
     "k-name64"),
    ("second row with the same label", "k-label,media/good/photo.webp,,,Hero,", GOOD, None,
     "k-label"),
    ("asset_type in lower case", "k-lower,media/good/side-301.png,,,,image", GOOD, None, "k-lower"),
    ("CJK name", "k-cjk,media/good/名字.png,,主角,,", GOOD, None, "k-cjk"),
    ("neither path nor url", "k-missing,,,somename,,", SKIPPED, "missing_field", "k-missing"),
    ("both path and url", "k-both,media/good/photo.jpg,https://e.com/a.png,,,", SKIPPED,
     "bad_value", "k-both"),
    ("unknown asset_type", "k-type,media/good/photo.jpg,,,,Picture", SKIPPED, "bad_value",
     "k-type"),
    ("asset_type Video for a png", "k-mismatch,media/good/photo.jpg,,,,Video", SKIPPED,
     "type_mismatch", "k-mismatch"),
    ("name over 64 characters", f"k-long,media/good/photo.jpg,,{LONG},,", SKIPPED,
     "name_too_long", "k-long"),
    ("name with a control character", 'k-ctrl,media/good/photo.jpg,,"a\tb",,', SKIPPED,
     "bad_value", "k-ctrl"),
    ("duplicate key", ",media/good/photo-800x600.png,,,,", SKIPPED, "duplicate_key",
     "media/good/photo-800x600.png"),
    ("duplicate explicit name", "k-dupname,media/good/side-5999.png,,hero-01,,", SKIPPED,
     "duplicate_name", "k-dupname"),
    ("more fields than the header", "k-extra,media/good/photo.jpg,,,,,surplus", SKIPPED,
     "bad_value", "k-extra"),
    ("file: URL", "k-file,,file:///etc/passwd,,,", SKIPPED, "bad_url", "k-file"),
    ("ftp: URL", "k-ftp,,ftp://example.com/a.png,,,", SKIPPED, "bad_url", "k-ftp"),
    ("javascript: URL", "k-js,,javascript:alert(1),,,", SKIPPED, "bad_url", "k-js"),
    ("private IP 10/8", "k-private,,http://10.1.2.3/a.png,,,", SKIPPED, "bad_url", "k-private"),
    ("private IP 192.168/16", "k-private2,,https://192.168.0.10/a.png,,,", SKIPPED, "bad_url",
     "k-private2"),
    ("link-local metadata IP", "k-meta,,http://169.254.169.254/latest/a.png,,,", SKIPPED,
     "bad_url", "k-meta"),
    ("loopback IP", "k-loopback,,http://127.0.0.1:9/a.png,,,", SKIPPED, "bad_url", "k-loopback"),
    ("localhost", "k-localhost,,http://localhost/a.png,,,", SKIPPED, "bad_url", "k-localhost"),
    ("IPv6 loopback", "k-v6,,http://[::1]/a.png,,,", SKIPPED, "bad_url", "k-v6"),
    ("unspecified 0.0.0.0", "k-zero,,http://0.0.0.0/a.png,,,", SKIPPED, "bad_url", "k-zero"),
    ("loopback as 127.1 (used to pass)", "k-short,,http://127.1/a.png,,,", SKIPPED, "bad_url",
     "k-short"),
    ("loopback as 2130706433 (used to pass)", "k-decimal,,http://2130706433/a.png,,,", SKIPPED,
     "bad_url", "k-decimal"),
    ("private as 0x0a.1 (used to pass)", "k-hex,,http://0x0a.1/a.png,,,", SKIPPED, "bad_url",
     "k-hex"),
    ("IPv4-mapped IPv6 private", "k-mapped,,http://[::ffff:10.0.0.1]/a.png,,,", SKIPPED,
     "bad_url", "k-mapped"),
    ("localhost. (used to pass)", "k-dot,,http://localhost./a.png,,,", SKIPPED, "bad_url", "k-dot"),
    ("shared 100.64/10 (used to pass)", "k-cgnat,,http://100.64.0.1/a.png,,,", SKIPPED, "bad_url",
     "k-cgnat"),
    ("path is a directory", "k-dir,media/bad/empty-dir,,,,", SKIPPED, "not_regular_file", "k-dir"),
    ("path is a FIFO (used to hang)", "k-fifo,media/bad/pipe.png,,,,", SKIPPED,
     "not_regular_file", "k-fifo"),
    ("path does not exist", "k-gone,media/nope.png,,,,", SKIPPED, "unreadable", "k-gone"),
    ("row with a non-UTF-8 byte", b"k-bytes,caf\xe9.png,,,,", SKIPPED, "bad_value", "k-bytes"),
    ("field over 128 KiB (bad CSV line)", "k-huge," + "x" * 140_000 + ",,,,", SKIPPED, "bad_csv",
     LINE),
    ("public URL the service cannot fetch", "k-remote,,https://example.com/a.png,,,", FAILED,
     "InvalidParameter.DownloadFailed", "k-remote"),
]  # fmt: skip

JSONL_ROWS: list[tuple[str, str, str, str | None, str | None]] = [
    ("good, explicit name", '{"path": "media/good/photo-800x600.png", "name": "hero-01"}', GOOD,
     None, "media/good/photo-800x600.png"),
    ("good video, explicit type",
     '{"key": "j-video", "path": "media/good/clip.mp4", "asset_type": "Video"}', GOOD, None,
     "j-video"),
    ("null fields", '{"key": "j-null", "path": "media/good/photo.jpg", "name": null}', GOOD, None,
     "j-null"),
    ("path is a number", '{"key": "j-int", "path": 5}', SKIPPED, "bad_value", "j-int"),
    ("name is a list", '{"key": "j-list", "path": "media/good/photo.jpg", "name": ["a"]}',
     SKIPPED, "bad_value", "j-list"),
    ("url is a boolean", '{"key": "j-bool", "url": true}', SKIPPED, "bad_value", "j-bool"),
    ("path is an object", '{"key": "j-obj", "path": {"x": 1}}', SKIPPED, "bad_value", "j-obj"),
    ("not JSON", "{not json", SKIPPED, "bad_json", LINE),
    ("a JSON array", "[1, 2]", SKIPPED, "bad_json", LINE),
    ("a JSON string", '"media/good/photo.jpg"', SKIPPED, "bad_json", LINE),
    ("JSON null", "null", SKIPPED, "bad_json", LINE),
    ("empty object", "{}", SKIPPED, "missing_field", LINE),
    ("blank path", '{"key": "j-blank", "path": "   "}', SKIPPED, "missing_field", "j-blank"),
    ("duplicate explicit name",
     '{"key": "j-dupname", "path": "media/good/photo.webp", "name": "hero-01"}', SKIPPED,
     "duplicate_name", "j-dupname"),
    ("duplicate key", '{"path": "media/good/photo-800x600.png"}', SKIPPED, "duplicate_key",
     "media/good/photo-800x600.png"),
    ("javascript: URL", '{"key": "j-js", "url": "javascript:alert(1)"}', SKIPPED, "bad_url",
     "j-js"),
    ("data: URL", '{"key": "j-data", "url": "data:image/png;base64,AAAA"}', SKIPPED, "bad_url",
     "j-data"),
    ("URL with credentials to a private IP", '{"key": "j-creds", "url": "http://u:p@10.0.0.1/a"}',
     SKIPPED, "bad_url", "j-creds"),
    ("audio given as Image",
     '{"key": "j-mismatch", "path": "media/good/voice.wav", "asset_type": "Image"}', SKIPPED,
     "type_mismatch", "j-mismatch"),
    ("HTML named .png", '{"key": "j-html", "path": "media/bad/page.png"}', SKIPPED,
     "unrecognized", "j-html"),
    ("line over 1 MiB", '{"key": "j-huge", "path": "' + "x" * (1024 * 1024) + '"}', SKIPPED,
     "bad_json", LINE),
    ("line over the 64 KiB cap", '{"key": "j-long", "path": "' + "x" * 70_000 + '"}', SKIPPED,
     "bad_json", LINE),
    ("absolute path outside the manifest's folder", '{"key": "j-abs", "path": "/etc/hostname"}',
     SKIPPED, "outside_manifest", "j-abs"),
    ("../ out of the manifest's folder", '{"key": "j-up", "path": "../outside.png"}', SKIPPED,
     "outside_manifest", "j-up"),
    ("URL with credentials to a public host",
     '{"url": "https://user:hunter2@cdn.example.com/a.png"}', SKIPPED, "bad_url",
     "https://***@cdn.example.com/a.png"),
    ("last line cut off", '{"key": "j-cut", "path": "media/go', SKIPPED, "bad_json", LINE),
]  # fmt: skip

CSV_FIRST_ROW_LINE = 3  # the header is line 1, a blank line 2 (not an item)
CSV_CASES = [
    Case("csv", name, key or f"<line {i + CSV_FIRST_ROW_LINE}>", status, reason)
    for i, (name, _text, status, reason, key) in enumerate(CSV_ROWS)
] + [Case("csv", "unreadable file", "k-unreadable", SKIPPED, "unreadable")]
JSONL_CASES = [
    Case("jsonl", name, key or f"<line {i + 1}>", status, reason)
    for i, (name, _text, status, reason, key) in enumerate(JSONL_ROWS)
]


def _unreadable_file(tmp: Path) -> Path | None:
    """A regular file this process cannot open: mode 000 when not root; for root (who
    reads anything), a write-only procfs file, if the kernel has one."""
    if not ROOT_USER:
        path = mediagen.write(tmp / "media" / "bad" / "unreadable.png", mediagen.png(800, 800))
        path.chmod(0)
        return path
    for candidate in ("/proc/sys/vm/drop_caches", "/proc/sys/vm/compact_memory"):
        try:
            os.close(os.open(candidate, os.O_RDONLY | os.O_NONBLOCK))
        except PermissionError:
            return Path(candidate)
        except OSError:
            continue
    return None


def build_inputs(tmp: Path) -> dict[str, Path]:
    """The directory tree and both manifests; returns source name -> path."""
    media = tmp / "media"
    good, bad = media / "good", media / "bad"
    w = mediagen.write
    w(good / "photo-800x600.png", mediagen.png(800, 600))
    w(good / "photo.jpg", mediagen.jpeg(1024, 768))
    w(good / "photo.webp", mediagen.image("WEBP", 640, 640))
    w(good / "ratio-0.401.png", mediagen.png(401, 1000, mode="L"))
    w(good / "ratio-2.499.png", mediagen.png(2499, 1000, mode="L"))
    w(good / "side-301.png", mediagen.png(301, 301))
    w(good / "side-5999.png", mediagen.png(5999, 2400, mode="L"))
    w(good / "clip.mp4", mediagen.mp4(1280, 720, 3.0))
    w(good / "voice.wav", mediagen.wav(3.0))
    w(good / "名字.png", mediagen.png(700, 700))
    with open(os.fsencode(good) + b"/caf\xe9.png", "wb") as f:
        f.write(mediagen.png(900, 600))
    w(bad / "truncated.jpg", mediagen.truncated(mediagen.jpeg(800, 800, quality=95)))
    w(bad / "truncated.png", mediagen.truncated(mediagen.png(800, 800)))
    w(bad / "page.png", mediagen.html())
    w(bad / "notes.jpg", b"just some notes, not a picture\n" * 20)
    w(bad / "ratio-0.4.png", mediagen.png(400, 1000, mode="L"))
    w(bad / "ratio-2.5.png", mediagen.png(2500, 1000, mode="L"))
    w(bad / "side-300.png", mediagen.png(300, 500, mode="L"))
    w(bad / "side-6000.png", mediagen.png(6000, 3000, mode="L"))
    w(bad / "bomb.png", mediagen.png_declared(20_000, 20_000))
    mediagen.big_png(bad / "over-30mib.png", 30 * MiB)
    mediagen.big_mp4(bad / "over-100mb.mp4", 101 * MiB)
    w(bad / "empty.png", b"")
    w(bad / "short.wav", mediagen.wav(1.0))
    w(bad / "slow.mp4", mediagen.mp4(1280, 720, 3.0, fps=23.976))
    with open(os.fsencode(bad) + b"/\xff\xfe.png", "wb") as f:
        f.write(mediagen.html())
    os.mkfifo(bad / "pipe.png")
    (bad / "dangling.png").symlink_to("missing.png")
    (bad / "loop.png").symlink_to("loop.png")
    w(tmp / "outside.png", mediagen.png(800, 800))
    (bad / "escape.png").symlink_to(tmp / "outside.png")
    (bad / "back").symlink_to("..")
    (bad / "empty-dir").mkdir()  # walked, holds nothing: not an item
    w(media / ".hidden.png", mediagen.png(800, 800))  # hidden: silently not an item
    unreadable = _unreadable_file(tmp)

    csv_lines: list[bytes] = [CSV_HEADER.encode(), b""]  # a blank line is not an item
    for _name, text, _status, _reason, _key in CSV_ROWS:
        csv_lines.append(text if isinstance(text, bytes) else text.encode())
    if unreadable is not None:
        csv_lines.append(f"k-unreadable,{unreadable},,,,".encode())
    csv_path = tmp / "manifest.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(csv_lines) + b"\r\n")  # BOM, CRLF

    jsonl_path = tmp / "manifest.jsonl"
    body = "\r\n".join(text for _name, text, _s, _r, _k in JSONL_ROWS)  # CRLF, no final newline
    jsonl_path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    return {"dir": media, "csv": csv_path, "jsonl": jsonl_path}


# -- the served emulator and the CLI runs ----------------------------------------------------


@dataclass
class Run:
    code: int
    results: list[dict[str, Any]]
    summary: dict[str, Any]
    stderr: str


@contextlib.contextmanager
def serve(tmp: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``chenyu-assets serve`` in its own process, and the environment a CLI needs."""
    with serve_kit.serve("--time-scale", str(SCALE), "--data-dir", str(tmp / "emu")) as s:
        yield s.url, s.env


cli = serve_kit.cli


def ingest_args(source: Path, tmp: Path, name: str, *extra: str) -> list[str]:
    return [
        "ingest",
        str(source),
        "--group",
        f"bad-input-{name}",
        "--journal",
        str(tmp / f"{name}.db"),
        "--out",
        str(tmp / f"{name}.jsonl"),
        "--rate-scale",
        RATE_SCALE,
        "--max-processing",
        "10",
        "--no-progress",
        "--json",
        *extra,
    ]


def finish(proc: subprocess.Popen[str], out: Path, timeout: float = 120) -> Run:
    stdout, stderr = proc.communicate(timeout=timeout)
    results = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    summary = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
    return Run(proc.returncode, results, summary, stderr)


def get_json(url: str, data: Any = None) -> Any:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with serve(tmp_path_factory.mktemp("served")) as running:
        yield running


@pytest.fixture(scope="module")
def runs(
    served: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """The three CLI runs (directory, CSV, JSONL), started together."""
    url, env = served
    tmp = tmp_path_factory.mktemp("bad")
    sources = build_inputs(tmp)
    # as root the unreadable file is a procfs one, outside the manifest's folder
    extra = {"csv": ["--allow-outside-paths"] if ROOT_USER else [], "dir": ["--follow-symlinks"]}
    procs = {
        name: cli(ingest_args(path, tmp, name, *extra.get(name, [])), env)
        for name, path in sources.items()
    }
    runs = {name: finish(proc, tmp / f"{name}.jsonl") for name, proc in procs.items()}
    audit = get_json(url + "/_emulator/audit")
    for name, run in runs.items():
        group = run.summary.get("group_id")
        run.summary["server_assets"] = [a for a in audit["assets"] if a["group_id"] == group]
        assert run.summary, f"{name}: no summary; stderr:\n{run.stderr}"
    return runs


ALL_CLI_CASES = DIR_CASES + CSV_CASES + JSONL_CASES


def _check(case: Case, results: list[dict[str, Any]]) -> None:
    mine = [r for r in results if r["key"] == case.key]
    match = [r for r in mine if (r["status"], r["error_code"]) == (case.status, case.reason)]
    got = " | ".join(f"{r['status']} {r['error_code'] or ''}".strip() for r in mine) or "no result"
    if match:
        got = case.expected
    record(case.id, case.expected, got)
    assert match, f"{case.id}: expected {case.expected}, got {got}"
    if case.status == GOOD:
        assert match[0]["asset_id"]
        assert match[0]["reference"].startswith("asset://")


@pytest.mark.subprocess
@pytest.mark.parametrize("case", ALL_CLI_CASES, ids=lambda c: c.id)
def test_cli_case(runs: dict[str, Run], case: Case) -> None:
    if case.name == "unreadable file" and not any(
        r["key"] == "k-unreadable" for r in runs["csv"].results
    ):
        pytest.skip("no file this user cannot read (root, and no write-only procfs file)")
    _check(case, runs[case.source].results)


@pytest.mark.subprocess
@pytest.mark.parametrize("source", ["dir", "csv", "jsonl"])
def test_cli_nothing_lost_and_exit_code_3(runs: dict[str, Run], source: str) -> None:
    run = runs[source]
    cases = [c for c in ALL_CLI_CASES if c.source == source]
    expected = Counter((c.key, c.status, c.reason) for c in cases)
    got = Counter((r["key"], r["status"], r["error_code"]) for r in run.results)
    if source == "csv" and ("k-unreadable", SKIPPED, "unreadable") not in got:
        expected.pop(("k-unreadable", SKIPPED, "unreadable"), None)
    assert got == expected, (got - expected, expected - got)  # exactly one result each
    assert run.code == 3, run.stderr  # some items failed or were skipped
    summary = run.summary
    assert summary["fatal"] is None
    assert summary["total"] == len(run.results) == sum(expected.values())
    good = sum(1 for c in cases if c.status == GOOD)
    assert summary["active"] == good
    # the server holds exactly the good items (plus the one it could not fetch), no twins
    server = summary["server_assets"]
    names = Counter(a["name"] for a in server)
    assert all(n == 1 for n in names.values()), names
    assert sum(1 for a in server if a["status"] == "Active") == good
    assert {r["asset_id"] for r in run.results if r["status"] == GOOD} == {
        a["id"] for a in server if a["status"] == "Active"
    }
    record(f"{source}: every item has one result", f"{sum(expected.values())} results, exit 3",
           f"{len(run.results)} results, exit {run.code}")  # fmt: skip


@pytest.mark.subprocess
def test_cli_output_names_the_reasons(runs: dict[str, Run]) -> None:
    """The summary table counts each reason; the JSON summary has them too."""
    failures = runs["dir"].summary["failures"]
    assert failures["corrupt"] == 2
    assert failures["symlink_loop"] == 2
    assert "reason image_ratio" in runs["dir"].stderr


# -- an SDK run: programmatic sources, upload-stage refusals, server-side failures -----------


def clients(emu: Emulator, scale: float = SCALE) -> tuple[ArkClient, ChenyuClient]:
    acct = emu.account
    ark = ArkClient(
        access_key=acct.access_key,
        secret_key=acct.secret_key,
        base_url=emu.url,
        rate_limits={k: v * scale for k, v in ACTION_RATES.items()},
    )
    chenyu = ChenyuClient(
        api_key=acct.api_key,
        base_url=emu.chenyu_url,
        rate_limits={k: v * scale for k, v in CHENYU_RATES.items()},
    )
    return ark, chenyu


SDK_CASES = [
    Case("sdk", "good URL", "u-good", GOOD),
    Case("sdk", "server: ratio 6:1", "u-ratio", FAILED, "InvalidParameter.ImageRatio"),
    Case("sdk", "server: HTML at a media URL", "u-html", FAILED,
         "InvalidParameter.UnsupportedMediaFormat"),
    Case("sdk", "server: URL naming nothing", "u-404", FAILED, "InvalidParameter.DownloadFailed"),
    Case("sdk", "same key twice (used to crash the run)", "u-good", SKIPPED, "duplicate_key"),
    Case("sdk", "same explicit name twice", "u-name-2", SKIPPED, "duplicate_name"),
    Case("sdk", "first of the two names", "u-name-1", GOOD),
    Case("sdk", "BadItem from the caller", "caller-bad", SKIPPED, "my_reason"),
    Case("sdk", "upload: over 100 MB, no pre-flight", "f-big", SKIPPED, "too_large"),
    Case("sdk", "upload: zero bytes, no pre-flight", "f-empty", SKIPPED, "empty"),
    Case("sdk", "upload: FIFO, no pre-flight", "f-fifo", SKIPPED, "not_regular_file"),
    Case("sdk", "upload: directory, no pre-flight", "f-dir", SKIPPED, "not_regular_file"),
    Case("sdk", "upload: missing file, no pre-flight", "f-gone", SKIPPED, "not_found"),
    Case("sdk", "upload: good file, no pre-flight", "f-good", GOOD),
]  # fmt: skip


@pytest.fixture(scope="module")
def sdk_results(tmp_path_factory: pytest.TempPathFactory) -> list[IngestResult]:
    tmp = tmp_path_factory.mktemp("sdk")
    mediagen.big_png(tmp / "big.png", 101 * MiB)
    (tmp / "empty.png").write_bytes(b"")
    os.mkfifo(tmp / "pipe.png")
    (tmp / "dir.png").mkdir()
    mediagen.write(tmp / "good.png", mediagen.png(800, 800))
    results: list[IngestResult] = []

    async def main() -> None:
        # on virtual time, the emulator on the same clock (at the real limits)
        config = EmulatorConfig(processing_delay=1.0)
        async with Emulator(config, clock=emulator_clock()) as emu:
            items: list[SourceItem | BadItem] = [
                SourceItem("u-good", None, emu.media_url("png", 800, 800)),
                SourceItem("u-ratio", None, emu.media_url("png", 3000, 500)),
                SourceItem("u-html", None, emu.media_url("html")),
                SourceItem("u-404", None, emu.url + "/_emulator/media/png/none.png"),
                SourceItem("u-good", None, emu.media_url("png", 900, 900)),
                SourceItem("u-name-1", None, emu.media_url("png", 700, 700), name="same"),
                SourceItem("u-name-2", None, emu.media_url("png", 600, 600), name="same"),
                BadItem("caller-bad", "my_reason", "the caller's own refusal"),
                SourceItem("f-big", tmp / "big.png", None),
                SourceItem("f-empty", tmp / "empty.png", None),
                SourceItem("f-fifo", tmp / "pipe.png", None),
                SourceItem("f-dir", tmp / "dir.png", None),
                SourceItem("f-gone", tmp / "gone.png", None),
                SourceItem("f-good", tmp / "good.png", None),
            ]
            ark, chenyu = clients(emu, scale=1.0)
            async with ark, chenyu:
                group = await ark.create_asset_group(name="sdk")
                opts = IngestOptions(allow_private_urls=True, preflight=False)
                async with asyncio.timeout(30):  # virtual seconds
                    report = await ingest(
                        ark, items, group_id=group, chenyu=chenyu, options=opts,
                        on_result=results.append,
                    )  # fmt: skip
            assert report.fatal is None
            assert report.total == len(items)
            assert emu.audit().duplicates() == {}

    run_virtual(main)
    return results


@pytest.mark.parametrize("case", SDK_CASES, ids=lambda c: c.id)
def test_sdk_case(sdk_results: list[IngestResult], case: Case) -> None:
    _check(case, [r.to_json() for r in sdk_results])


def test_sdk_nothing_lost(sdk_results: list[IngestResult]) -> None:
    expected = Counter((c.key, c.status, c.reason) for c in SDK_CASES)
    got = Counter((r.key, r.status, r.error_code) for r in sdk_results)
    assert got == expected


# -- focused cases: what is not an ingest item -----------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "asset://",
        "asset://../../etc/passwd",
        "asset:/asset-20260101000000-abcde",
        "https://example.com/asset-20260101000000-abcde",
        "asset://asset-20260101000000-abcde?x=1",
        "asset://asset-20260101000000-abcde\n",
    ],
)
def test_invalid_asset_reference(ref: str) -> None:
    case = f"ref: {ref!r}"[:60]
    with pytest.raises(InvalidReferenceError) as caught:
        refs.parse_asset_reference(ref)
    record(case, "InvalidReferenceError", type(caught.value).__name__)


@pytest.mark.parametrize(
    "ref", ["asset://asset-2026-abc", "asset://asset-20260101000000-ABCDE", "asset://asset_XYZ"]
)
def test_ids_of_any_shape_are_references(ref: str) -> None:
    # ids are the server's business (api-reference §6: never validate an id by its shape)
    assert refs.parse_asset_reference(ref) == ref[len("asset://") :]


def test_duplicate_labels_are_refused() -> None:
    a = refs.media_input("asset://asset-20260101000000-abcde", label="hero")
    b = refs.media_input("asset://asset-20260101000000-fghij", label="hero")
    with pytest.raises(InvalidReferenceError) as caught:
        refs.check_labels([a, b])
    assert "hero" in str(caught.value)
    with pytest.raises(InvalidReferenceError):
        refs.check_prompt("@hero waves", [a, b])
    record("labels: the same label twice", "InvalidReferenceError", type(caught.value).__name__)


FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, max_elapsed=5.0)


async def outcome(call: Awaitable[Any]) -> BaseException | Any:
    try:
        return await call
    except Exception as exc:
        return exc


def virtual_emulator() -> Emulator:
    """A fast emulator for a ``@virtual`` test, on the loop's (virtual) clock."""
    config = EmulatorConfig(processing_delay=0.05, processing_jitter=0.0)
    return Emulator(config, clock=emulator_clock())


@virtual
async def test_emulator_answers_html_or_truncated_json() -> None:
    async with virtual_emulator() as emu:
        await _html_or_truncated(emu)


async def _html_or_truncated(emu: Emulator) -> None:
    acct = emu.account
    async with ArkClient(
        access_key=acct.access_key, secret_key=acct.secret_key, base_url=emu.url, retry=FAST
    ) as ark:
        group = await ark.create_asset_group(name="g")
        asset = await ark.create_asset(group_id=group, url=emu.media_url("png"), name="a")
        cases: list[tuple[str, FaultRule, Awaitable[Any], type[BaseException]]] = []
        html200 = FaultRule(action="GetAsset", kind="http_error", status=200, body="html")
        html502 = FaultRule(action="GetAsset", kind="http_error", status=502, body="html")
        cut = FaultRule(action="GetAsset", kind="truncate")
        cut_create = FaultRule(action="CreateAsset", kind="truncate", phase="after")
        html_create = FaultRule(action="CreateAsset", kind="http_error", status=200, body="html")
        cases = [
            ("server: HTML page with HTTP 200", html200, ark.get_asset(asset), ResponseFormatError),
            ("server: HTML 502 page", html502, ark.get_asset(asset), ResponseFormatError),
            ("server: truncated JSON (read)", cut, ark.get_asset(asset), ConnectionLostError),
            ("server: truncated JSON (create)", cut_create,
             ark.create_asset(group_id=group, url=emu.media_url("png"), name="b"),
             AmbiguousOutcomeError),
            ("server: HTML 200 to a create", html_create,
             ark.create_asset(group_id=group, url=emu.media_url("png"), name="c"),
             AmbiguousOutcomeError),
        ]  # fmt: skip
        for name, rule, call, expected in cases:
            emu.set_faults([rule])
            got = await outcome(call)
            record(name, expected.__name__, type(got).__name__)
            assert isinstance(got, expected), (name, got)
        emu.clear_faults()
        assert (await ark.get_asset(asset)).id == asset  # the client is still usable
    creates = emu.audit().count("CreateAsset")
    assert creates == 3  # the two ambiguous creates were each sent exactly once


@contextlib.asynccontextmanager
async def canned(*answers: tuple[int, str]) -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny HTTP server on 127.0.0.1 answering request N with ``answers[N]`` (status,
    JSON text; the last one repeats). Yields its URL and the actions it was asked for."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.query.get("Action", request.path))
        status, text = answers[min(len(seen), len(answers)) - 1]
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def _meta(**extra: Any) -> dict[str, Any]:
    return {"RequestId": "req-canned-1", "Action": "GetAsset", "Version": "2024-01-01", **extra}


ASSET_ID = "asset-20260101000000-abcde"
#: (case, HTTP status, body, the error, its vendor code, attempts: a format error of the
#: envelope is retried like a proxy's blip; a definite error or a malformed model is not)
CANNED: list[tuple[str, int, dict[str, Any] | str, type[BaseException], str, int]] = [
    ("server: Error NotFound inside HTTP 200", 200,
     {"ResponseMetadata": _meta(Error={"Code": "NotFound.asset_id", "Message": "no such asset"})},
     NotFoundError, "NotFound.asset_id", 1),
    ("server: Error InvalidParameter inside HTTP 200", 200,
     {"ResponseMetadata": _meta(Error={"Code": "InvalidParameter.Id", "Message": "bad id"})},
     BadRequestError, "InvalidParameter.Id", 1),
    ("server: FlowLimitExceeded inside HTTP 200", 200,
     {"ResponseMetadata": _meta(Error={"Code": "FlowLimitExceeded", "Message": "slow down"})},
     RateLimitError, "FlowLimitExceeded", 2),
    ("server: unknown error code inside HTTP 200", 200,
     {"ResponseMetadata": _meta(Error={"Code": "Brand.New", "Message": "?"})},
     APIError, "Brand.New", 1),
    ("server: missing ResponseMetadata", 200, {"Result": {"Id": ASSET_ID, "Status": "Active"}},
     ResponseFormatError, "", 2),
    ("server: ResponseMetadata not an object", 200, {"ResponseMetadata": "ok", "Result": {}},
     ResponseFormatError, "", 2),
    ("server: Result not an object", 200, {"ResponseMetadata": _meta(), "Result": [1, 2]},
     ResponseFormatError, "", 2),
    ("server: asset without an Id", 200,
     {"ResponseMetadata": _meta(), "Result": {"Status": "Active"}}, ResponseFormatError, "", 1),
    ("server: truncated JSON, full length", 200,
     json.dumps({"ResponseMetadata": _meta(), "Result": {"Id": ASSET_ID}})[:40],
     ResponseFormatError, "", 2),
    ("server: empty body", 200, "", ResponseFormatError, "", 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "status", "body", "expected", "code", "attempts"), CANNED, ids=[c[0] for c in CANNED]
)
@virtual  # a 429-like answer pauses the endpoint for rate_limit_wait: free on virtual time
async def test_server_answers_that_are_not_the_envelope(
    case: str,
    status: int,
    body: dict[str, Any] | str,
    expected: type[BaseException],
    code: str,
    attempts: int,
) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    async with (
        canned((status, text)) as (url, seen),
        ArkClient(
            access_key="AKLTCANNED0000", secret_key="s" * 40, base_url=url, retry=FAST
        ) as ark,
    ):
        got = await outcome(ark.get_asset(ASSET_ID))
    record(case, expected.__name__, type(got).__name__)
    assert type(got) is expected, got
    if code:
        assert isinstance(got, APIError)
        assert (got.status, got.code, got.request_id) == (200, code, "req-canned-1")
    assert len(seen) == attempts  # FAST allows two attempts


@virtual
async def test_unknown_status_strings_are_kept_and_never_terminal() -> None:
    asset = {"Id": ASSET_ID, "Name": "a", "Status": "Quarantined", "NewField": {"x": 1}}
    listing = {"Items": [asset, {**asset, "Status": "Archived"}], "TotalCount": 2}
    answers = [
        (200, json.dumps({"ResponseMetadata": _meta(), "Result": asset})),
        (200, json.dumps({"ResponseMetadata": _meta(), "Result": listing})),
        (200, json.dumps({"ResponseMetadata": _meta(), "Result": asset})),
    ]
    async with (
        canned(*answers) as (url, _seen),
        ArkClient(
            access_key="AKLTCANNED0000", secret_key="s" * 40, base_url=url, retry=FAST
        ) as ark,
    ):
        got = await ark.get_asset(ASSET_ID)
        page = await ark.list_assets(group_ids=["g"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = await outcome(ark.wait_for_asset(ASSET_ID, timeout=0.3, interval=0.05))
        waited_s = loop.time() - started
    assert (got.status, got.is_terminal, got.request_id) == ("Quarantined", False, "req-canned-1")
    assert got.model_extra == {"NewField": {"x": 1}}  # unknown fields are kept too
    assert [a.status for a in page.items] == ["Quarantined", "Archived"]
    assert isinstance(waited, WaitTimeoutError)
    assert waited_s == pytest.approx(0.3, abs=1e-6)  # virtual time: the timeout, exactly
    record("server: unknown status string", "kept, not terminal; WaitTimeoutError",
           f"{got.status!r} terminal={got.is_terminal}; {type(waited).__name__}")  # fmt: skip


# -- revoked credentials mid-batch -------------------------------------------------------------


def assert_resumable(journal: Path, server_names: set[str]) -> dict[str, int]:
    """The journal is intact and no row would make a rerun create its asset twice: a row
    whose asset exists is past ``uploaded`` (a ``creating``/``unknown`` one is reconciled
    by Name before any re-send). Returns the count of rows per state."""
    con = sqlite3.connect(journal)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT key, name, state, asset_id FROM items").fetchall()
    finally:
        con.close()
    for key, name, state, asset_id in rows:
        if state in ("pending", "uploaded", "skipped"):
            assert name not in server_names, f"{key}: {state} but its asset exists"
        if state in ("created", "active"):
            assert asset_id, key
    return dict(Counter(state for _k, _n, state, _a in rows))


@pytest.mark.parametrize("moment", ["creating", "polling"])
@virtual
async def test_revoked_secret_mid_batch_is_fatal_and_resumes_without_duplicates(
    tmp_path: Path, moment: str
) -> None:
    """The account's secret key changes on the server mid-run (a real revocation: every
    signature stops matching). ``creating``: after 5 results, creates still under way;
    ``polling``: after every create, while the poller waits (this one used to escape
    as an unhandled exception group instead of ``report.fatal``)."""
    src = tmp_path / "src"
    n = 40 if moment == "creating" else 8
    for i in range(n):
        mediagen.write(src / f"img-{i:03d}.png", mediagen.png(640 + i, 480))
    # virtual time, the emulator on the same clock: where the revocation lands in the run
    # does not depend on the machine's speed
    cfg = EmulatorConfig(processing_delay=0.1 if moment == "creating" else 2.0)
    async with Emulator(cfg, clock=emulator_clock()) as emu:
        good = emu.account
        revoked = good.model_copy(update={"secret_key": "REVOKED-" + good.secret_key})
        created = 0

        def on_event(event: Any) -> None:
            nonlocal created
            created += event.kind == "created"
            if moment == "polling" and created == n:
                emu.config.accounts = [revoked]

        ark, chenyu = clients(emu, scale=1.0)  # 30 creates/s: most are still to come at #5
        seen: list[IngestResult] = []
        async with ark, chenyu:
            group = await ark.create_asset_group(name="revoke")
            async with asyncio.timeout(30):  # virtual seconds
                async with open_ingest(
                    ark, src, group_id=group, journal=tmp_path / "j.db", chenyu=chenyu,
                    on_event=on_event,
                ) as run:  # fmt: skip
                    async for result in run:
                        seen.append(result)
                        if moment == "creating" and len(seen) == 5:
                            emu.config.accounts = [revoked]
            first = run.report
            server = {a.name for a in emu.audit().assets}
            states = assert_resumable(tmp_path / "j.db", server)
            emu.config.accounts = [good]  # credentials restored: rerun the same command
            second = await ingest(
                ark, src, group_id=group, journal=tmp_path / "j.db", chenyu=chenyu
            )
        audit = emu.audit()
    record(f"revoked secret while {moment}", "report.fatal, journal intact, rerun 0 dups",
           f"fatal={'SignatureDoesNotMatch' in (first.fatal or '')} states={states} "
           f"rerun active={second.active}/{n} dups={len(audit.duplicates())}")  # fmt: skip
    assert first.fatal is not None
    assert "SignatureDoesNotMatch" in first.fatal
    assert first.total < n
    assert second.fatal is None
    assert second.active == n
    assert audit.duplicates() == {}
    assert len(audit.assets) == n


@pytest.mark.subprocess
def test_cli_revoked_credentials_exit_4_then_rerun_completes(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """The served account starts answering 401 after 10 creates (an injected fault: the
    serve process's accounts cannot change live): the CLI stops with exit 4 and an intact
    journal; with the fault gone the same command finishes with no duplicate."""
    url, env = served
    n = 60
    for i in range(n):
        mediagen.write(tmp_path / "src" / f"img-{i:03d}.png", mediagen.png(640, 480 + i))
    args = ingest_args(tmp_path / "src", tmp_path, "revoke")
    args[args.index("--rate-scale") + 1] = "1"  # 30 creates/s: a window to revoke in
    deny = [{"action": "*", "family": "ark", "kind": "http_error", "status": 401}]
    before = len(get_json(url + "/_emulator/audit")["assets"])
    try:
        proc = cli(args, env)
        deadline = time.monotonic() + 30
        while len(get_json(url + "/_emulator/audit")["assets"]) < before + 10:
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.02)
        get_json(url + "/_emulator/faults", deny)
        first = finish(proc, tmp_path / "revoke.jsonl")
    finally:
        get_json(url + "/_emulator/faults", [])
    group = first.summary["group_id"]
    server = {a["name"] for a in get_json(url + "/_emulator/audit")["assets"]
              if a["group_id"] == group}  # fmt: skip
    states = assert_resumable(tmp_path / "revoke.db", server)
    (tmp_path / "revoke.jsonl").unlink()
    second = finish(cli(args, env), tmp_path / "revoke.jsonl")
    assets = [a for a in get_json(url + "/_emulator/audit")["assets"] if a["group_id"] == group]
    names = Counter(a["name"] for a in assets)
    record("CLI: credentials revoked mid-batch", "exit 4, then rerun exit 0, 0 dups",
           f"exit {first.code} states={states}, rerun exit {second.code}, "
           f"{len(assets)} assets, {sum(v - 1 for v in names.values())} dups")  # fmt: skip
    assert first.code == 4, first.stderr
    assert "401" in first.summary["fatal"]
    assert "journal is intact" in first.stderr
    assert second.code == 0, second.stderr
    assert len(second.results) == n
    assert {r["status"] for r in second.results} == {GOOD}
    assert len(assets) == n
    assert set(names.values()) == {1}


@virtual
async def test_client_survives_a_flood_of_bad_answers() -> None:
    """Many bad answers in a row leave no connection or task behind (a smoke check)."""
    async with virtual_emulator() as emu:
        await _flood(emu)


async def _flood(emu: Emulator) -> None:
    acct = emu.account
    emu.set_faults([FaultRule(action="ListAssets", kind="truncate")])
    async with (
        aiohttp.ClientSession() as session,
        ArkClient(
            access_key=acct.access_key,
            secret_key=acct.secret_key,
            base_url=emu.url,
            retry=FAST,
            session=session,
        ) as ark,
    ):
        for _ in range(20):
            assert isinstance(await outcome(ark.list_assets()), ConnectionLostError)
        emu.clear_faults()
        page = await ark.list_assets()
        assert page.items == []
