"""``chenyu-assets ingest``: the bulk-ingest command (progress, summary, JSONL results).

Exit codes: 0 every item active; 2 a usage mistake (a flag out of range, a source that
cannot be read, an --out folder that does not exist, a journal that is a folder, not SQLite
or another group's); 3 some items failed for their content or were skipped (a rerun does
not change that; ``--retry-failed`` tries them again); 5 the only failures are retryable
(transport, upload host, transient service codes: rerun the same command); 4 a fatal stop
(credentials, permissions, missing or ambiguous group, service unreachable); 130
interrupted (the in-flight creates are journaled first, so a rerun resumes exactly).

``--group NAME`` matches group names exactly (the service's filter is a substring match):
two groups with that name stop the run (exit 4, their ids listed); a group this run had
to create is checked again after creating, and if an older group of that name appeared
meanwhile (another process racing us) that one is used and ours deleted while empty.

The default journal is ``.chenyu/<group id>.db`` only for a group id of plain characters;
any other id (the server chooses it) becomes ``.chenyu/group-<hash>.db``, so no server
string can name a path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Iterator
from hashlib import blake2b
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
from rich.console import Console
from rich.text import Text

from chenyu_assets._cli_common import (
    EXIT_INTERRUPTED,
    UsageError,
    at_least,
    out_file,
    plain,
    positive_float,
    readable_file,
)
from chenyu_assets._cli_groups import resolve_group
from chenyu_assets._cli_progress import Stats, ingest_bar, log_item, report_json, summary
from chenyu_assets._cli_queue import add_queue_flags, cmd_queued
from chenyu_assets._cli_run import exit_code, interruptible, open_clients
from chenyu_assets._cli_source import add_source_flags, option_values, walk_arguments
from chenyu_assets._cli_stage import add_stage_flags, stage_of
from chenyu_assets._core.ratelimit import DEFAULT_MARGIN
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import Event, IngestOptions, open_ingest
from chenyu_assets.batch.checks import hash_and_check, url_problem
from chenyu_assets.batch.journal_files import check as check_journal
from chenyu_assets.batch.naming import shard_of
from chenyu_assets.batch.sources import BadItem, IgnoredItem, SourceItem, open_source
from chenyu_assets.errors import JournalError, MediaCheckError
from chenyu_assets.limits import PROFILES

_SAFE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def add_ingest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "ingest",
        help="push a directory or manifest into an Ark asset group",
        description="Stage local files (through Chenyu, or your own S3 bucket) and create "
        "one Ark asset per item, at the account's full rate, resumable from a journal, "
        "never duplicating an asset.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help="a directory, a .csv or a .jsonl manifest (optional with --queue: join the job)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--group",
        metavar="NAME",
        help="the group's name (created if missing; default: chenyu-assets-ingest)",
    )
    group.add_argument("--group-id", metavar="ID", help="an existing group's id")
    p.add_argument(
        "--journal", type=_journal_path, help="the resume journal (default: .chenyu/<group>.db)"
    )
    p.add_argument(
        "--out", type=out_file, help="write one JSON line per item here (appended; default: none)"
    )
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let manifest paths leave the manifest's folder (absolute, .., symlinks out); "
        "refused as outside_manifest otherwise",
    )
    p.add_argument(
        "--ca-bundle",
        type=readable_file,
        metavar="PEM",
        help="also trust the CA certificates in this PEM file (TLS is always verified; "
        "SSL_CERT_FILE works too; default: the system's)",
    )
    p.add_argument("--concurrency", type=at_least(1), default=8, help="CreateAsset tasks")
    p.add_argument("--upload-concurrency", type=at_least(1), default=4, help="uploads at once")
    p.add_argument(
        "--max-processing", type=at_least(1), default=30, help="assets Processing at once"
    )
    p.add_argument(
        "--rate-scale",
        type=positive_float,
        default=1.0,
        metavar="F",
        help="multiply every published rate limit by F (a raised quota, or a time-scaled emulator)",
    )
    p.add_argument(
        "--limits-profile",
        metavar="NAME",
        choices=sorted(PROFILES),
        help="the account's published rate table: " + ", ".join(PROFILES) + " (default volcengine)",
    )
    p.add_argument(
        "--rates",
        type=Path,
        metavar="FILE",
        help='JSON rate overrides, e.g. {"profile": "byteplus-entry", '
        '"rates": {"CreateAsset": "3/min", "GetAsset": 50}} (see README)',
    )
    p.add_argument(
        "--rate-margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="S",
        help="seconds added to every rate window for arrival jitter (default "
        f"{DEFAULT_MARGIN:g}; raise it for a loaded host or a long network path)",
    )
    p.add_argument(
        "--shard",
        type=parse_shard,
        metavar="I/N",
        help="take only shard I of N (0-based; a stable hash of each item's key; default: all)",
    )
    p.add_argument(
        "--limits",
        metavar="URL",
        help="share the account's rate limits and Processing slots with other processes "
        "through Redis (redis://host:6379/0); if Redis fails, the run stops (exit 4; "
        "default: this process only)",
    )
    p.add_argument(
        "--slot-lease",
        type=positive_float,
        default=15.0,
        metavar="S",
        help="with --limits: a dead worker's Processing slots come back after S seconds "
        "(default 15)",
    )
    add_stage_flags(p)
    add_source_flags(p)

    add_queue_flags(p)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry items that failed for their content or were skipped (their Failed "
        "assets are deleted first); retryable failures are retried by every run",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the media and plan, change nothing on the server (an existing group is "
        "looked up; a missing one is reported as 'would create')",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--stats",
        type=non_negative_float,
        metavar="SECONDS",
        help="print a line of counts, rates and ETA on stderr every SECONDS (0: never; "
        "default: 10 when stderr is not a terminal, else never: the bar shows it)",
    )
    p.add_argument(
        "--emulator",
        action="store_true",
        help="run against an embedded local emulator (no account needed)",
    )
    p.add_argument(
        "--emulator-time-scale", type=positive_float, default=1.0, help=argparse.SUPPRESS
    )
    p.set_defaults(handler=cmd_ingest)


def non_negative_float(text: str) -> float:
    """A number >= 0 (``--stats 0`` turns the lines off)."""
    return 0.0 if text.strip() in ("0", "0.0") else positive_float(text)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like I/N, not {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text}: need 0 <= I < N")
    return i, n


def _journal_path(text: str) -> Path:
    try:
        check_journal(Path(text))
    except JournalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(text)


def default_journal(group_id: str, shard: tuple[int, int] | None) -> Path:
    """``.chenyu/<group id>.db``, or ``.chenyu/group-<hash>.db`` for an id that is not
    plain characters (a hostile server's ``../../x`` or ``/etc/x`` names no path)."""
    if _SAFE_ID.fullmatch(group_id) and ".." not in group_id:
        stem = group_id
    else:
        digest = blake2b(group_id.encode("utf-8", "surrogatepass"), digest_size=8)
        stem = "group-" + digest.hexdigest()
    suffix = "" if shard is None else f".shard{shard[0]}of{shard[1]}"
    return Path(".chenyu") / f"{stem}{suffix}.db"


def _count(
    source: Iterator[SourceItem | BadItem | IgnoredItem], shard: tuple[int, int] | None
) -> int | None:
    """Items in the source, by a streaming pass (None when it can't be counted cheaply)."""
    try:
        n = 0
        for item in source:
            if isinstance(item, IgnoredItem):
                continue
            if shard is None or shard_of(item.key, shard[1]) == shard[0]:
                n += 1
        return n
    except (OSError, ValueError):
        return None


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.queue:
        return cmd_queued(args)
    if args.source is None:
        raise UsageError("give a SOURCE (or --queue URL to work on a queued job)")
    console = Console(stderr=True)
    # the source is checked now (exit 2 for a missing file, a FIFO, a bad CSV header...)
    items = open_source(
        Path(args.source), allow_outside=args.allow_outside_paths, **walk_arguments(args)
    )
    try:
        return asyncio.run(interruptible(_ingest(args, console, items)))
    except KeyboardInterrupt:
        console.print(
            Text("interrupted: in-flight items were journaled; rerun to resume", "yellow")
        )
        return EXIT_INTERRUPTED


async def _resolve_group(ark: ArkClient, args: argparse.Namespace) -> str | None:
    """The group's id; None in a dry run whose group does not exist yet (nothing is
    created: the summary says "would create group NAME")."""
    return await resolve_group(ark, args.group_id, args.group, create=not args.dry_run)


def _checked(items: Iterator[SourceItem | BadItem], allow_private: bool) -> Iterator[Any]:
    """A dry run's items after the pre-flight a real run does (media limits, URL safety):
    a refused one becomes a BadItem (reported as skipped, never journaled). Runs on the
    ingest's reader thread."""
    for item in items:
        if isinstance(item, BadItem):
            yield item
        elif item.url is not None and (problem := url_problem(item.url, allow_private)):
            yield BadItem(item.key, "bad_url", problem, item.line)
        elif item.path is not None:
            try:
                hash_and_check(item.path, item.asset_type)
            except MediaCheckError as exc:
                yield BadItem(item.key, exc.reason, str(exc), item.line)
            except OSError as exc:
                yield BadItem(item.key, "unreadable", f"{item.path}: {exc.strerror}", item.line)
            else:
                yield item
        else:
            yield item


async def _ingest(
    args: argparse.Namespace,
    console: Console,
    source: Iterator[SourceItem | BadItem | IgnoredItem],
) -> int:
    shard: tuple[int, int] | None = args.shard
    stage = stage_of(args)
    opened = open_source(
        Path(args.source), allow_outside=args.allow_outside_paths, **walk_arguments(args)
    )
    total = await anyio.to_thread.run_sync(_count, opened, shard)
    source_path = str(await anyio.Path(args.source).resolve())
    items: Any = source
    if shard is not None:
        i, n = shard
        items = (it for it in items if shard_of(_key(it), n) == i)
    if args.dry_run:
        items = _checked(items, args.emulator)
    options = IngestOptions(
        create_concurrency=args.concurrency,
        upload_concurrency=args.upload_concurrency,
        max_processing=args.max_processing,
        dry_run=args.dry_run,
        retry_failed=args.retry_failed,
        allow_private_urls=args.emulator,
        allow_outside_paths=args.allow_outside_paths,
        stage=stage,
        **option_values(args),
    )
    # backslashreplace: a non-UTF-8 file name in a path or message is written as a JSON
    # \udcXX escape (it reads back as the same string) instead of stopping the run. Opened
    # before anything is sent, so a file that cannot be written stops nothing half-way.
    out: TextIO | None = (
        args.out.open("a", encoding="utf-8", errors="backslashreplace") if args.out else None
    )
    try:
        return await _run(args, console, items, options, out, source_path, total)
    finally:
        if out is not None:
            out.close()


async def _run(
    args: argparse.Namespace,
    console: Console,
    items: Any,
    options: IngestOptions,
    out: TextIO | None,
    source_path: str,
    total: int | None,
) -> int:
    shard: tuple[int, int] | None = args.shard
    async with open_clients(args, options.stage) as (ark, chenyu):
        slots = None
        if ark.shared_limits is not None:
            await ark.shared_limits.ping()  # unreachable: exit 4 before anything is sent
            slots = ark.shared_limits.slots(args.max_processing, lease=args.slot_lease)
        found = await _resolve_group(ark, args)
        name = args.group or "chenyu-assets-ingest"
        group_id = found if found is not None else f"(would create group {name})"
        journal: Path | None = args.journal
        if found is None:  # a dry run of a new group: nothing to resume, a temporary journal
            console.print(Text(plain(f"dry run: would create group {name}")))
            journal = None
        elif journal is None and not args.emulator:  # the emulator's state is ephemeral
            journal = default_journal(found, shard)
        bar = not args.no_progress and console.is_terminal
        progress = ingest_bar(console, disable=not bar)
        interval = args.stats if args.stats is not None else (0.0 if console.is_terminal else 10.0)
        stats = Stats(total, interval, sys.stderr)

        def on_event(event: Event) -> None:
            if event.kind == "rate_limited":
                stats.throttled += 1

        info = {"source": source_path, **({"group_name": args.group} if args.group else {})}
        with progress:
            task = progress.add_task(
                "ingest", total=total, rate=0.0, slots=0, throttled=0, failed=0, skipped=0
            )
            async with (
                open_ingest(
                    ark,
                    items,
                    group_id=group_id,
                    journal=journal,
                    chenyu=chenyu,
                    options=options,
                    slots=slots,
                    on_event=on_event,
                    run_info=info,
                    unique_keys=True,
                ) as run,
                anyio.create_task_group() as tg,
            ):
                if interval > 0:
                    live = progress.console if bar else None
                    tg.start_soon(stats.loop, lambda: run.report, run.processing, live)
                async for result in run:
                    if out is not None:
                        out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                    log_item(result.key, result.status, result.asset_id, result.error_code)
                    elapsed = progress.tasks[task].elapsed or 1e-9
                    report = run.report
                    progress.update(
                        task,
                        advance=1,
                        rate=report.finished / elapsed,
                        slots=run.processing(),
                        throttled=stats.throttled,
                        failed=report.failed,
                        skipped=report.skipped,
                    )
                tg.cancel_scope.cancel()
        if interval > 0:
            stats.write(run.report, 0, None)
    report = run.report
    summary(console, report, group_id, journal)
    if args.json:
        print(json.dumps(report_json(report, group_id, journal)))
    return exit_code(report)


def _key(item: SourceItem | BadItem) -> str:
    return item.key
