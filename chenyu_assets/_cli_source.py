"""The ``ingest`` flags that shape what a directory walk takes, and what a rerun does with
changed files: ``--follow-symlinks``, ``--include``/``--exclude``/``--ignore-case``
(:mod:`chenyu_assets.batch.filters`) and ``--replace-changed``
(:mod:`chenyu_assets.batch.fingerprints`)."""

from __future__ import annotations

import argparse
from typing import Any

from chenyu_assets.batch import IngestReport, PathFilter
from chenyu_assets.batch.filters import glob_regex

__all__ = ["add_source_flags", "ignored_rows", "option_values", "walk_arguments"]


def _pattern(text: str) -> str:
    try:
        glob_regex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_source_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("what a directory walk takes (README: Bulk ingest, Sources)")
    s.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symlinked directories that stay inside the source (each directory is "
        "walked once); without it they are ignored",
    )
    s.add_argument(
        "--include",
        action="append",
        default=[],
        type=_pattern,
        metavar="GLOB",
        help="take only files matching GLOB (repeatable; relative path, '/' separators, "
        "'*' stays within a folder, '**' crosses folders, a leading '/' anchors at the root)",
    )
    s.add_argument(
        "--exclude",
        action="append",
        default=[],
        type=_pattern,
        metavar="GLOB",
        help="leave out files matching GLOB (repeatable; tried before every --include, "
        "first match wins)",
    )
    s.add_argument(
        "--ignore-case", action="store_true", help="--include/--exclude ignore letter case"
    )
    s.add_argument(
        "--replace-changed",
        action="store_true",
        help="a file whose content changed after its asset became Active: delete that "
        "asset and create it anew under the same name (else: skipped, source_changed)",
    )


def walk_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``open_source`` keyword arguments of these flags."""
    return {
        "follow_symlinks": args.follow_symlinks,
        "filters": PathFilter(args.include, args.exclude, ignore_case=args.ignore_case),
    }


def option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``IngestOptions`` fields of these flags."""
    return {
        "follow_symlinks": args.follow_symlinks,
        "include": tuple(args.include),
        "exclude": tuple(args.exclude),
        "ignore_case": args.ignore_case,
        "replace_changed": args.replace_changed,
    }


def ignored_rows(report: IngestReport) -> list[tuple[str, str]]:
    """Summary rows: the ignored count, then one row per reason."""
    rows = [("ignored (not media, excluded, symlinks)", str(report.ignored))]
    rows += [
        (f"  ignored {reason}", str(n)) for reason, n in sorted(report.ignored_reasons.items())
    ]
    return rows
