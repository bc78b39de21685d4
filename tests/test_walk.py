"""Directory walks (issue 13 point 5): symlinked directories, loops, ``--include`` /
``--exclude`` globs and files that are not media (ignored, not skipped).

Real temp trees and symlinks; the ingest against the emulator on virtual time; the CLI as a
real subprocess with its embedded emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chenyu_assets.batch import IgnoredItem, IngestOptions, PathFilter, ingest
from chenyu_assets.batch.filters import glob_regex
from chenyu_assets.batch.sources import BadItem, SourceItem, iter_directory, open_source
from tests import mediagen
from tests.test_ingest import clients, make_images, virtual_emulator
from tests.vclock import virtual

Walked = list[SourceItem | BadItem | IgnoredItem]


def _taken(items: Walked) -> list[str]:
    return [i.key for i in items if isinstance(i, SourceItem)]


def _ignored(items: Walked) -> dict[str, str]:
    return {i.key: i.reason for i in items if isinstance(i, IgnoredItem)}


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- glob semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.jpg", "a.jpg", True),
        ("*.jpg", "x/y/a.jpg", True),  # unanchored: matches at the end, any depth
        ("*.jpg", "a.jpeg", False),
        ("b.jpg", "ab.jpg", False),  # whole path elements only
        ("b.jpg", "a/b.jpg", True),
        ("/b.jpg", "a/b.jpg", False),  # a leading / anchors at the root
        ("/b.jpg", "b.jpg", True),
        ("2024/*", "2024/a.jpg", True),
        ("2024/*", "2024/x/a.jpg", False),  # * does not cross /
        ("2024/**", "2024/x/a.jpg", True),  # ** does
        ("/raw/**", "raw/a/b.png", True),
        ("/raw/**", "x/raw/a.png", False),
        ("cache/", "cache/a/b.png", True),  # a trailing / is the whole directory
        ("img-?.png", "img-1.png", True),
        ("img-?.png", "img-10.png", False),
        ("img-[0-4].png", "img-3.png", True),
        ("img-[!0-4].png", "img-3.png", False),
        ("*.{jpg,png}", "d/a.png", True),
        ("*.{jpg,png}", "d/a.gif", False),
        (r"a\*.jpg", "a*.jpg", True),
        (r"a\*.jpg", "ab.jpg", False),
        ("**/tmp/*", "a/b/tmp/x.jpg", True),
    ],
)
def test_glob_semantics(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_rule_order_excludes_first_then_includes_first_match_wins() -> None:
    f = PathFilter(include=["*.jpg", "keep/**"], exclude=["tmp/**", "*-draft.*"])
    assert f.wants("a.jpg")
    assert not f.wants("a.png")  # includes given: no match means excluded
    assert f.wants("keep/a.png")
    assert not f.wants("tmp/a.jpg")  # the exclude is tried before the include
    assert not f.wants("keep/x-draft.png")
    assert f.prunes("tmp")
    assert f.prunes("a/tmp")
    assert not f.prunes("keep")
    only_ex = PathFilter(exclude=["*.mov"])
    assert only_ex.wants("a.jpg")  # no includes: what no rule matches is taken
    assert not only_ex.wants("d/a.mov")
    assert not PathFilter().active
    assert PathFilter(include=["*.JPG"], ignore_case=True).wants("x/a.jpg")
    assert not PathFilter(include=["*.JPG"]).wants("x/a.jpg")
    with pytest.raises(ValueError, match="unbalanced"):
        PathFilter(include=["*.{jpg,png"])


# --- walking --------------------------------------------------------------------------------


def test_filters_in_a_real_tree_and_pruned_directories_are_not_listed(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["a.jpg", "b.png", "tmp/c.jpg", "keep/d.png", "x/tmp/e.jpg", "x/f.JPG"]:
        _touch(root / rel)
    locked = root / "tmp"
    locked.chmod(0o000)  # never listed: listing it would be "unreadable"
    try:
        items = list(
            iter_directory(
                root,
                filters=PathFilter(include=["*.jpg", "keep/**"], exclude=["tmp/**"]),
            )
        )
    finally:
        locked.chmod(0o755)
    assert _taken(items) == ["a.jpg", "keep/d.png"]
    assert _ignored(items) == {
        "b.png": "excluded",
        "tmp/": "excluded",
        "x/tmp/": "excluded",
        "x/f.JPG": "excluded",
    }
    assert not [i for i in items if isinstance(i, BadItem)]
    case = list(open_source(root, filters=PathFilter(include=["*.jpg"], ignore_case=True)))
    assert "x/f.JPG" in _taken(case)


def test_files_that_are_not_media_are_ignored_by_suffix_and_sniff(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "README.md", b"# photos\n")
    _touch(root / "Thumbs.db", b"\xd0\xcf\x11\xe0 not media")
    _touch(root / "notes.txt", b"hello")
    _touch(root / "empty", b"")
    _touch(root / ".DS_Store", b"hidden: never even considered")
    _touch(root / "broken.jpg", b"not a jpeg")  # a media suffix: the pre-flight judges it
    _touch(root / "photo", mediagen.png(640, 480))  # no suffix, PNG bytes: taken
    _touch(root / "clip.bin", mediagen.mp4(640, 480, 3.0))  # other suffix, MP4 bytes
    items = list(iter_directory(root))
    assert _taken(items) == ["broken.jpg", "clip.bin", "photo"]
    assert _ignored(items) == {
        "README.md": "not_media",
        "Thumbs.db": "not_media",
        "empty": "not_media",
        "notes.txt": "not_media",
    }


def test_symlink_loops_and_diamonds_are_walked_once(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "real" / "a.jpg")
    (root / "real" / "back").symlink_to("..", target_is_directory=True)  # a loop
    (root / "via1").symlink_to("real", target_is_directory=True)  # a diamond: two paths
    (root / "via2").symlink_to("real", target_is_directory=True)
    followed = list(iter_directory(root, follow_symlinks=True))
    assert _taken(followed) == ["real/a.jpg"]  # once, under the first path reached
    assert {i.key: i.reason for i in followed if isinstance(i, BadItem)} == {
        "real/back": "symlink_loop"
    }
    assert _ignored(followed) == {"via1": "already_walked", "via2": "already_walked"}
    default = list(iter_directory(root))
    assert _taken(default) == ["real/a.jpg"]
    assert _ignored(default) == {
        "real/back": "symlinked_directory",
        "via1": "symlinked_directory",
        "via2": "symlinked_directory",
    }


# --- the ingest -----------------------------------------------------------------------------


def _photo_tree(root: Path) -> None:
    make_images(root / "2024", 3)
    (root / "dirlink").symlink_to("2024", target_is_directory=True)
    _touch(root / "README.md", b"# holiday\n")
    _touch(root / "2024" / "Thumbs.db", b"junk")
    make_images(root / "drafts", 2)


@virtual
async def test_ingest_ignores_not_media_and_symlinked_dirs_and_applies_filters(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    _photo_tree(src)
    async with virtual_emulator() as emu:
        ark, chenyu = clients(emu)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="walk")
            journal = tmp_path / "j.db"
            report = await ingest(ark, src, group_id=group, journal=journal, chenyu=chenyu)
            assert (report.active, report.skipped, report.failed) == (5, 0, 0)
            assert report.ignored == 3
            assert report.ignored_reasons == {"not_media": 2, "symlinked_directory": 1}
            assert report.failures == {}
            # following the link walks 2024 once: still no duplicate
            followed = await ingest(
                ark,
                src,
                group_id=group,
                journal=journal,
                chenyu=chenyu,
                options=IngestOptions(follow_symlinks=True, exclude=("drafts/",)),
            )
            assert (followed.active, followed.resumed, followed.creates) == (3, 3, 0)
            assert followed.ignored_reasons == {
                "not_media": 2,
                "already_walked": 1,
                "excluded": 1,
            }
        audit = emu.audit()
        assert len(audit.assets) == 5
        assert audit.duplicates() == {}


@pytest.mark.subprocess
def test_cli_walk_flags_and_exit_code(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _photo_tree(src)
    base = [sys.executable, "-m", "chenyu_assets.cli", "ingest", str(src), "--emulator"]
    base += ["--emulator-time-scale", "20", "--json", "--no-progress"]
    env = dict(os.environ)
    done = subprocess.run(
        [*base, "--exclude", "drafts/**", "--include", "*.png"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr  # README.md and Thumbs.db do not make it 3
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["active"], summary["skipped"], summary["ignored"]) == (3, 0, 4)
    assert summary["ignored_reasons"] == {"excluded": 3, "symlinked_directory": 1}
    followed = subprocess.run(
        [*base, "--follow-symlinks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert followed.returncode == 0, followed.stderr
    summary = json.loads(followed.stdout.strip().splitlines()[-1])
    assert (summary["active"], summary["ignored"]) == (5, 3)
    assert summary["ignored_reasons"] == {"already_walked": 1, "not_media": 2}
    bad = subprocess.run(
        [*base, "--include", "*.{png"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "unbalanced" in bad.stderr
