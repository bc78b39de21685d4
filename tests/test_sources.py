"""Source readers (directory, CSV, JSONL) and deterministic naming."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chenyu_assets.batch.checks import url_problem
from chenyu_assets.batch.naming import (
    HASH_HEX,
    NAME_MAX,
    asset_name,
    item_key_for_path,
    path_bytes_for_key,
    shard_of,
)
from chenyu_assets.batch.sources import (
    MAX_LINE,
    BadItem,
    IgnoredItem,
    SourceError,
    SourceItem,
    iter_csv,
    iter_directory,
    iter_jsonl,
    open_source,
)

# --- naming ---------------------------------------------------------------------------------


def test_asset_name_is_deterministic_and_hash_suffixed() -> None:
    name = asset_name("photos/cat 1.JPG")
    assert name == asset_name("photos/cat 1.JPG")
    h = hashlib.sha256(b"photos/cat 1.JPG\0").hexdigest()[:16]
    assert name == f"cat-1-{h}"
    assert asset_name("photos/cat 1.JPG", content_hash="abc") != name
    with_hash = hashlib.sha256(b"photos/cat 1.JPG\0abc").hexdigest()[:16]
    assert asset_name("photos/cat 1.JPG", content_hash="abc").endswith(with_hash)


def test_asset_name_differs_for_different_keys_with_the_same_stem() -> None:
    names = {asset_name(f"dir{i}/photo.jpg") for i in range(1000)}
    assert len(names) == 1000
    assert all(n.startswith("photo-") for n in names)


@pytest.mark.parametrize(
    ("label", "key", "readable"),
    [
        ("My photo (final)!!.jpg", "k", "My-photo-final-.jpg"),
        ("猫 の 写真 🐱", "k", "猫-の-写真"),
        ("  --hero__", "k", "hero"),
        (None, "a/b/photo 1.JPG", "photo-1"),
        (None, "https://cdn.example.com/x/%E7%8C%AB%E5%92%AA.png?sig=1", "猫咪"),
        (None, "https://cdn.example.com/", "asset"),
        ("!!!", "???", "asset"),
        ("", "dir/clip.final.mp4", "clip.final"),
    ],
)
def test_asset_name_sanitises_the_readable_part(label: str | None, key: str, readable: str) -> None:
    name = asset_name(key, label=label)
    assert name.rsplit("-", 1)[0] == readable


@pytest.mark.parametrize(
    "label",
    ["x" * 500, "猫" * 500, "\U00020000" * 500, "a-" * 300, "é" * 300, None],
)
def test_asset_name_fits_64_characters(label: str | None) -> None:
    key = "very/long/" + "k" * 2000 + ".png"
    name = asset_name(key, label=label, content_hash="f" * 64)
    assert len(name) <= NAME_MAX
    room = NAME_MAX - 1 - HASH_HEX  # the readable part's share
    assert len(name.encode("utf-8")) <= room * 4 + 1 + HASH_HEX
    assert not name.startswith("-")
    assert "--" not in name
    if label and label[0] in "猫\U00020000":
        assert name[:room] == label[:room]  # CJK kept, cut to the room left by the hash


def test_item_key_for_path_plain_and_non_utf8() -> None:
    root = Path("/data/in")
    assert item_key_for_path(root, root / "a" / "b.jpg") == "a/b.jpg"
    raw = b"/data/in/caf\xe9/x\\y.jpg"
    key = item_key_for_path(b"/data/in", raw)
    assert key == "caf\\xe9/x\\\\y.jpg"
    key.encode("utf-8")  # valid text
    assert path_bytes_for_key(key) == b"caf\xe9/x\\y.jpg"
    # a real name that *looks* like an escape stays distinct from the byte it would spell
    literal = item_key_for_path(b"/r", b"/r/a\\xff")
    escaped = item_key_for_path(b"/r", b"/r/a\xff")
    assert literal != escaped
    assert path_bytes_for_key(literal) == b"a\\xff"
    assert path_bytes_for_key(escaped) == b"a\xff"
    assert path_bytes_for_key("猫/a.jpg") == "猫/a.jpg".encode()
    with pytest.raises(ValueError, match=r"not in the subpath|is not"):
        item_key_for_path(root, Path("/elsewhere/x.jpg"))


def test_shard_of_is_stable_and_roughly_uniform() -> None:
    expected = int(hashlib.sha256(b"photos/a.jpg").hexdigest()[:16], 16) % 7
    assert shard_of("photos/a.jpg", 7) == expected
    counts = [0] * 4
    for i in range(10_000):
        counts[shard_of(f"item-{i}.jpg", 4)] += 1
    assert all(2000 <= c <= 3000 for c in counts), counts
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("x", 0)


# --- directories ----------------------------------------------------------------------------


def _keys(items: list[SourceItem | BadItem | IgnoredItem]) -> list[str]:
    return [i.key for i in items]


def _bad(items: list[SourceItem | BadItem | IgnoredItem]) -> dict[str, str]:
    return {i.key: i.reason for i in items if isinstance(i, BadItem)}


def _ignored(items: list[SourceItem | BadItem | IgnoredItem]) -> dict[str, str]:
    return {i.key: i.reason for i in items if isinstance(i, IgnoredItem)}


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_directory_order_is_stable_depth_first_and_skips_hidden(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["b.jpg", "a.jpg", "A.jpg", "z.jpg", "sub/c.jpg", "sub/deeper/d.jpg"]:
        _touch(root / rel)
    for rel in [".hidden.jpg", ".git/config", "sub/.DS_Store"]:
        _touch(root / rel)
    first = list(iter_directory(root))
    assert _keys(first) == ["A.jpg", "a.jpg", "b.jpg", "sub/c.jpg", "sub/deeper/d.jpg", "z.jpg"]
    assert all(isinstance(i, SourceItem) and i.path and i.path.is_absolute() for i in first)
    assert first == list(iter_directory(root))
    assert first[3] == SourceItem("sub/c.jpg", root / "sub" / "c.jpg", None)


def test_directory_symlinks_inside_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "in"
    real = _touch(root / "a.jpg")
    _touch(root / "sub" / "c.jpg")
    (root / "link.jpg").symlink_to("a.jpg")
    (root / "linkdir").symlink_to("sub", target_is_directory=True)
    # file links inside are followed; directory links only with follow_symlinks=True
    default = list(iter_directory(root))
    assert _keys(default) == ["a.jpg", "link.jpg", "linkdir", "sub/c.jpg"]
    assert default[2] == IgnoredItem("linkdir", "symlinked_directory", default[2].message)
    items = list(iter_directory(root, follow_symlinks=True))
    assert _keys(items) == ["a.jpg", "link.jpg", "linkdir/c.jpg", "sub"]
    assert items[1] == SourceItem("link.jpg", real, None)  # the resolved target
    assert items[3] == IgnoredItem("sub", "already_walked", items[3].message)  # once only
    assert not _bad(items)
    refused = list(iter_directory(root, follow_symlinks_inside=False))
    assert _bad(refused) == {"link.jpg": "symlink_not_followed", "linkdir": "symlink_not_followed"}


def test_directory_bad_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "ok.jpg")
    outside = _touch(tmp_path / "secret.jpg")
    (root / "escape.jpg").symlink_to(outside)
    (root / "escape_dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "dotdot.jpg").symlink_to("../secret.jpg")
    (root / "dangling.jpg").symlink_to("nowhere.jpg")
    (root / "self.jpg").symlink_to("self.jpg")
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..", target_is_directory=True)
    files = {
        "dangling.jpg": "dangling_symlink",
        "dotdot.jpg": "symlink_escape",
        "escape.jpg": "symlink_escape",
        "ping": "symlink_loop",
        "pong": "symlink_loop",
        "self.jpg": "symlink_loop",
    }
    items = list(iter_directory(root))  # directory links are not followed at all
    assert _bad(items) == files
    assert _ignored(items) == {"escape_dir": "symlinked_directory", "sub/up": "symlinked_directory"}
    assert [i.key for i in items if isinstance(i, SourceItem)] == ["ok.jpg"]
    followed = list(iter_directory(root, follow_symlinks=True))
    assert _bad(followed) == files | {"escape_dir": "symlink_escape", "sub/up": "symlink_loop"}
    assert [i.key for i in followed if isinstance(i, SourceItem)] == ["ok.jpg"]


@pytest.mark.timeout(10)
def test_directory_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "a.jpg")
    os.mkfifo(root / "pipe.jpg")
    (root / "pipelink.jpg").symlink_to("pipe.jpg")
    items = list(iter_directory(root))  # never opens the FIFO (that would hang)
    assert _bad(items) == {"pipe.jpg": "not_regular_file", "pipelink.jpg": "not_regular_file"}


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """Act as ``nobody`` (effective uid only) when running as root: root reads mode-000
    files, so only a real unprivileged user shows what ``unreadable`` means."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(65534)
    except OSError:
        pytest.skip("running as root and cannot drop to an unprivileged uid")
    try:
        yield
    finally:
        os.seteuid(0)


def test_directory_unreadable_file_and_directory() -> None:
    # tmp_path lives under a root-only 0700 directory; nobody must be able to reach the tree
    base = Path(tempfile.mkdtemp(prefix="chenyu-unreadable-"))
    try:
        base.chmod(0o755)
        root = base / "in"
        _touch(root / "ok.jpg").chmod(0o644)
        _touch(root / "secret.jpg").chmod(0o000)
        _touch(root / "locked" / "x.jpg")
        (root / "locked").chmod(0o000)
        root.chmod(0o755)
        with _unprivileged():
            items = list(iter_directory(root))
        assert _bad(items) == {"secret.jpg": "unreadable", "locked": "unreadable"}
        assert _keys([i for i in items if isinstance(i, SourceItem)]) == ["ok.jpg"]
    finally:
        (base / "in" / "locked").chmod(0o755)
        shutil.rmtree(base)


def test_directory_non_utf8_file_name(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9.jpg"
    os.close(os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644))
    _touch(root / "猫.jpg")
    items = list(iter_directory(root))
    assert _keys(items) == ["caf\\xe9.jpg", "猫.jpg"]
    item = items[0]
    assert isinstance(item, SourceItem)
    assert item.path is not None
    assert os.fsencode(item.path) == raw
    assert path_bytes_for_key(item.key) == b"caf\xe9.jpg"


def test_directory_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        list(iter_directory(_touch(tmp_path / "f.jpg")))
    with pytest.raises(FileNotFoundError):
        list(iter_directory(tmp_path / "missing"))


# --- CSV ------------------------------------------------------------------------------------


def test_csv_bom_crlf_relative_paths_and_columns(tmp_path: Path) -> None:
    manifest = tmp_path / "m" / "list.csv"
    manifest.parent.mkdir()
    text = (
        "Path,URL,Name,Label,Asset_Type,Key,extra\r\n"
        "imgs/a.jpg,,hero-01,Hero,image,,ignored\r\n"
        ",https://cdn.example.com/v.mp4,,,VIDEO,clip-1,\r\n"
        "/abs/b.wav,,,,,,\r\n"
        '"with,comma.jpg",,,"multi\r\nline",,,\r\n'
    )
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode())
    items = list(iter_csv(manifest, allow_outside=True))  # /abs/b.wav is outside m/
    assert items == [
        SourceItem(
            "imgs/a.jpg", manifest.parent / "imgs/a.jpg", None, "hero-01", "Hero", "Image", 2
        ),
        SourceItem("clip-1", None, "https://cdn.example.com/v.mp4", None, None, "Video", 3),
        SourceItem("/abs/b.wav", Path("/abs/b.wav"), None, line=4),
        SourceItem(
            "with,comma.jpg",
            manifest.parent / "with,comma.jpg",
            None,
            label="multi\r\nline",
            line=5,
        ),
    ]


def test_csv_bad_lines_are_reported_and_reading_goes_on(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    rows = [
        "path,url,name,asset_type",
        "good1.jpg,,,",  # 2
        ",,,",  # 3 blank: skipped
        ",,n,Image",  # 4 neither path nor url
        "a.jpg,,,Picture",  # 5 bad asset_type
        f"b.jpg,,{'n' * 65},",  # 6 name too long
        f"c.jpg,,{'猫' * 64},",  # 7 64 CJK characters: fine
        "d.jpg,https://x.example/d.jpg,,",  # 8 both
        ",file:///etc/passwd,,",  # 9 file URL
        ",ftp://x.example/a.png,,",  # 10 other scheme
        "good1.jpg,,,",  # 11 duplicate key
        "e.jpg,,,,surplus",  # 12 more fields than the header
        "good2.jpg,,,audio",  # 13
    ]
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    items = list(iter_csv(manifest))
    bad = [(i.line, i.reason) for i in items if isinstance(i, BadItem)]
    assert bad == [
        (4, "missing_field"),
        (5, "bad_value"),
        (6, "name_too_long"),
        (8, "bad_value"),
        (9, "bad_url"),
        (10, "bad_url"),
        (11, "duplicate_key"),
        (12, "bad_value"),
    ]
    good = [(i.key, i.line, i.asset_type) for i in items if isinstance(i, SourceItem)]
    assert good == [("good1.jpg", 2, None), ("c.jpg", 7, None), ("good2.jpg", 13, "Audio")]
    by_line = {i.line: i for i in items}
    assert by_line[11].key == "good1.jpg"
    assert by_line[4].key == "<line 4>"
    assert isinstance(by_line[5], BadItem)
    assert "Picture" in by_line[5].message


def test_csv_undecodable_row_is_bad_and_the_rest_is_read(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_bytes(b"path\nok1.jpg\ncaf\xe9.jpg\nok2.jpg\n")
    items = list(iter_csv(manifest))
    assert [(type(i).__name__, i.line) for i in items] == [
        ("SourceItem", 2),
        ("BadItem", 3),
        ("SourceItem", 4),
    ]
    assert isinstance(items[1], BadItem)
    assert items[1].reason == "bad_value"


def test_csv_header_is_required(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="header row is required"):
        list(iter_csv(empty))
    headless = tmp_path / "headless.csv"
    headless.write_text("a.jpg,b\n")
    with pytest.raises(ValueError, match="'path' or 'url' column"):
        list(iter_csv(headless))


# --- JSONL ----------------------------------------------------------------------------------


def test_jsonl_items_and_bad_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    lines = [
        b'\xef\xbb\xbf{"path": "a.jpg", "name": "hero", "asset_type": "image"}',  # 1
        b"",  # 2 blank
        b'{"url": "https://x.example/v.mp4", "key": "v1", "label": null}',  # 3
        b'{"path": "b.jpg", "name": 5}',  # 4 wrong type
        b'{"path": "c.jpg",',  # 5 invalid JSON
        b'["path", "d.jpg"]',  # 6 not an object
        b'{"url": "file:///etc/passwd"}',  # 7
        b'{"path": "caf\xe9.jpg"}',  # 8 not UTF-8
        b'{"path": "a.jpg"}',  # 9 duplicate
        b"   ",  # 10 blank
        b'{"path": "e.jpg", "asset_type": "Audio", "other": [1, 2]}',  # 11
    ]
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    items = list(iter_jsonl(manifest))
    assert [(i.line, i.reason) for i in items if isinstance(i, BadItem)] == [
        (4, "bad_value"),
        (5, "bad_json"),
        (6, "bad_json"),
        (7, "bad_url"),
        (8, "bad_json"),
        (9, "duplicate_key"),
    ]
    good = [i for i in items if isinstance(i, SourceItem)]
    assert good == [
        SourceItem("a.jpg", tmp_path / "a.jpg", None, "hero", None, "Image", 1),
        SourceItem("v1", None, "https://x.example/v.mp4", line=3),
        SourceItem("e.jpg", tmp_path / "e.jpg", None, asset_type="Audio", line=11),
    ]
    assert next(i for i in items if i.line == 4).key == "b.jpg"


def test_jsonl_overlong_line_is_skipped(tmp_path: Path) -> None:
    manifest = tmp_path / "list.ndjson"
    huge = b'{"path": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    manifest.write_bytes(huge + b'\n{"path": "ok.jpg"}\n')
    items = list(iter_jsonl(manifest))
    assert [(type(i).__name__, i.line) for i in items] == [("BadItem", 1), ("SourceItem", 2)]


# --- dispatch and streaming -----------------------------------------------------------------


def test_open_source_dispatch(tmp_path: Path) -> None:
    _touch(tmp_path / "dir" / "a.jpg")
    (tmp_path / "m.CSV").write_text("url\nhttps://x.example/a.jpg\n")
    (tmp_path / "m.jsonl").write_text('{"url": "https://x.example/b.jpg"}\n')
    (tmp_path / "m.ndjson").write_text('{"url": "https://x.example/c.jpg"}\n')
    (tmp_path / "m.txt").write_text("a.jpg\n")
    assert _keys(list(open_source(tmp_path / "dir"))) == ["a.jpg"]
    assert _keys(list(open_source(str(tmp_path / "m.CSV")))) == ["https://x.example/a.jpg"]
    assert _keys(list(open_source(tmp_path / "m.jsonl"))) == ["https://x.example/b.jpg"]
    assert _keys(list(open_source(tmp_path / "m.ndjson"))) == ["https://x.example/c.jpg"]
    one = list(open_source(tmp_path / "m.txt"))  # any other regular file: a one-item source
    assert one == [SourceItem("m.txt", tmp_path / "m.txt", None)]
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope.csv")
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope")


def test_csv_of_200k_lines_streams_in_little_memory(tmp_path: Path) -> None:
    # Peak RSS of a fresh interpreter, not tracemalloc: tracing every allocation makes this
    # eight times slower. Holding the 200k items would cost well over 100 MiB.
    manifest = tmp_path / "big.csv"
    with manifest.open("w", encoding="utf-8") as f:
        f.write("path,label\n")
        for i in range(200_000):
            f.write(f"images/batch-{i // 1000:04d}/photo-{i:07d}.jpg,label {i}\n")
    script = textwrap.dedent(
        """
        import resource, sys
        from chenyu_assets.batch.sources import SourceItem, iter_csv
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        count = sum(1 for item in iter_csv(sys.argv[1]) if isinstance(item, SourceItem))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(count, (after - before) * 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(manifest)], capture_output=True, text=True, check=True
    )
    count, growth = map(int, out.stdout.split())
    assert count == 200_000
    assert growth < 30 * 1024 * 1024, f"peak grew by {growth / 2**20:.1f} MiB"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("suffix", "head", "rest"),
    [
        (".csv", "path\nfirst.jpg\n", "second.jpg\n"),
        (".jsonl", '{"path": "first.jpg"}\n', '{"path": "second.jpg"}\n'),
    ],
)
def test_first_item_arrives_before_the_rest_is_written(
    tmp_path: Path, suffix: str, head: str, rest: str
) -> None:
    # A reader that read ahead to the end would miss what is appended after its first item.
    manifest = tmp_path / f"live{suffix}"
    manifest.write_text(head, encoding="utf-8")
    items = open_source(manifest)
    first = next(items)
    assert isinstance(first, SourceItem)
    assert first.key == "first.jpg"
    with manifest.open("a", encoding="utf-8") as f:
        f.write(rest)
    assert [i.key for i in items] == ["second.jpg"]


# --- hostile inputs (issue 14) --------------------------------------------------------------

_REFUSE_SCRIPT = """
import sys
from chenyu_assets.batch.sources import SourceError, open_source
for spec in sys.argv[1:]:
    try:
        open_source(spec)
    except SourceError as exc:
        print(spec, "->", exc)
    else:
        print(spec, "-> ACCEPTED")
"""


def test_manifest_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    # FIFOs with no writer (opening one for reading blocks forever without O_NONBLOCK),
    # /dev/zero under manifest names (endless bytes), folders named like manifests. Run in
    # a subprocess so a regression is a timeout here, not a hung test session.
    specs = []
    for name in ("fifo.csv", "fifo.jsonl", "fifo.ndjson", "fifo"):
        os.mkfifo(tmp_path / name)
        specs.append(tmp_path / name)
    for name in ("zero.csv", "zero.jsonl"):
        (tmp_path / name).symlink_to("/dev/zero")
        specs.append(tmp_path / name)
    for name in ("folder.csv", "folder.jsonl"):
        (tmp_path / name).mkdir()
        specs.append(tmp_path / name)
    done = subprocess.run(
        [sys.executable, "-c", _REFUSE_SCRIPT, *map(str, specs)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    verdicts = dict(line.split(" -> ", 1) for line in done.stdout.splitlines())
    assert set(verdicts) == {str(s) for s in specs}
    for spec, verdict in verdicts.items():
        assert "ACCEPTED" not in verdict, spec
        expected = "a directory" if "folder" in spec else "not a regular file"
        assert expected in verdict, (spec, verdict)


def _peak(fn: object) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()  # type: ignore[operator]
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_overlong_csv_header_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    manifest = tmp_path / "one-line.csv"
    with manifest.open("wb") as f:  # path,x,x,x,... on one line: 20 MiB, millions of fields
        f.write(b"path")
        chunk = b",x" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            f.write(chunk)

    def refuse() -> str:
        with pytest.raises(SourceError, match="header row is longer than") as info:
            iter_csv(manifest)
        return str(info.value)

    message, peak = _peak(refuse)
    assert str(manifest) in str(message)
    assert peak < 4 * MAX_LINE * 4, peak  # a few caps of str, never the 20 MiB line


def test_overlong_manifest_lines_are_skipped_in_bounded_memory(tmp_path: Path) -> None:
    big = 20 * 1024 * 1024
    csv_path, jsonl_path = tmp_path / "m.csv", tmp_path / "m.jsonl"
    with csv_path.open("wb") as f:
        f.write(b"path,name\nfirst.jpg,\n")
        f.write(b"x.jpg," + b"n," * (big // 2) + b"\n")  # one row, ten million fields
        f.write(b'"quoted\n' + (b"x" * 1000 + b'""\n') * 200 + b'",\n')  # 200 KB, 202 lines
        f.write(b"last.jpg,\n")
    with jsonl_path.open("wb") as f:
        f.write(b'{"path": "first.jpg"}\n{"path": "' + b"x" * big + b'"}\n{"path": "last.jpg"}\n')

    csv_items, csv_peak = _peak(lambda: list(iter_csv(csv_path)))
    jsonl_items, jsonl_peak = _peak(lambda: list(iter_jsonl(jsonl_path)))
    assert [(i.key, i.line) for i in csv_items] == [  # type: ignore[attr-defined]
        ("first.jpg", 2),
        ("<line 3>", 3),
        ("<line 4>", 4),  # the quoted record is skipped to its real end...
        ("last.jpg", 206),  # ...so the next row is read, with its true line number
    ]
    assert [(i.key, i.line) for i in jsonl_items] == [  # type: ignore[attr-defined]
        ("first.jpg", 1),
        ("<line 2>", 2),
        ("last.jpg", 3),
    ]
    for bad in (csv_items[1], csv_items[2], jsonl_items[1]):  # type: ignore[index]
        assert isinstance(bad, BadItem)
        assert bad.reason in ("bad_csv", "bad_json")
        assert "longer than 65536" in bad.message
    assert csv_peak < 2 * 1024 * 1024, csv_peak  # the file holds 20 MiB on one line
    assert jsonl_peak < 2 * 1024 * 1024, jsonl_peak


def test_manifest_paths_outside_its_folder_are_refused_unless_allowed(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _touch(folder / "sub" / "a.png")
    _touch(tmp_path / "secret.png")
    (folder / "out-link.png").symlink_to(tmp_path / "secret.png")
    (folder / "in-link.png").symlink_to(folder / "sub" / "a.png")
    rows = [
        "sub/a.png",  # 2 inside
        "sub/../sub/a.png",  # 3 inside after ..
        "in-link.png",  # 4 a symlink that stays inside
        "../secret.png",  # 5
        "sub/../../secret.png",  # 6
        str(tmp_path / "secret.png"),  # 7 absolute, outside
        "/etc/hostname",  # 8
        "out-link.png",  # 9 a symlink out
        str(folder / "sub" / "a.png"),  # 10 absolute but inside
    ]
    manifest = folder / "list.csv"
    manifest.write_text("key,path\n" + "".join(f"k{i},{r}\n" for i, r in enumerate(rows)))
    refused = {i.line: i.reason for i in iter_csv(manifest) if isinstance(i, BadItem)}
    assert refused == dict.fromkeys((5, 6, 7, 8, 9), "outside_manifest")
    jsonl = folder / "list.jsonl"
    jsonl.write_text("".join(f'{{"key": "k{i}", "path": "{r}"}}\n' for i, r in enumerate(rows)))
    refused = {i.line: i.reason for i in open_source(jsonl) if isinstance(i, BadItem)}
    assert refused == {n - 1: "outside_manifest" for n in (5, 6, 7, 8, 9)}
    allowed = list(iter_csv(manifest, allow_outside=True))
    assert all(isinstance(i, SourceItem) for i in allowed)
    assert list(open_source(jsonl, allow_outside=True)) == list(
        iter_jsonl(jsonl, allow_outside=True)
    )


def test_urls_with_credentials_are_bad_url_and_the_credentials_never_shown(
    tmp_path: Path,
) -> None:
    secret = "pa55w0rd-canary"
    urls = [
        f"https://user:{secret}@cdn.example.com/a.png",
        f"http://{secret}@cdn.example.com/b.png",
        f"ftp://u:{secret}@cdn.example.com/c.png",
    ]
    manifest = tmp_path / "list.csv"
    manifest.write_text("url,key\n" + "".join(f"{u},\n" for u in urls) + f"{urls[0]},given\n")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(f'{{"url": "{u}"}}\n' for u in urls))
    for items in (list(iter_csv(manifest)), list(iter_jsonl(jsonl))):
        assert all(isinstance(i, BadItem) and i.reason == "bad_url" for i in items), items
        for item in items:
            assert secret not in repr(item)
    assert list(iter_csv(manifest))[-1].key == "given"
    assert url_problem(urls[0], allow_private=True) is not None  # an SDK-built item too
    assert url_problem("https://cdn.example.com/a.png", allow_private=False) is None
