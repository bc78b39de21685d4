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
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from hashlib import blake2b
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from chenyu_assets._cli_common import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_RETRYABLE,
    at_least,
    out_file,
    plain,
    positive_float,
    readable_file,
)
from chenyu_assets._cli_groups import resolve_group
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import Event, IngestOptions, IngestReport, S3Stage, open_ingest
from chenyu_assets.batch.journal_files import check as check_journal
from chenyu_assets.batch.naming import shard_of
from chenyu_assets.batch.sources import BadItem, SourceItem, open_source
from chenyu_assets.chenyu import CHENYU_RATES, ChenyuClient
from chenyu_assets.errors import ConfigurationError, JournalError
from chenyu_assets.limits import ACTION_RATES
from chenyu_assets.s3 import env_endpoint, env_region

_SAFE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def add_ingest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "ingest",
        help="push a directory or manifest into an Ark asset group",
        description="Stage local files (through Chenyu, or your own S3 bucket) and create "
        "one Ark asset per item, at the account's full rate, resumable from a journal, "
        "never duplicating an asset.",
    )
    p.add_argument("source", help="a directory, a .csv or a .jsonl manifest")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--group", metavar="NAME", help="the group's name (created if missing)")
    group.add_argument("--group-id", metavar="ID", help="an existing group's id")
    p.add_argument(
        "--journal", type=_journal_path, help="the resume journal (default: .chenyu/<group>.db)"
    )
    p.add_argument("--out", type=out_file, help="write one JSON line per item here (appended)")
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
        "SSL_CERT_FILE works too)",
    )
    p.add_argument(
        "--concurrency", type=at_least(1), default=8, help="CreateAsset tasks (default 8)"
    )
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
        "--shard",
        type=_parse_shard,
        metavar="I/N",
        help="take only shard I of N (0-based; a stable hash of each item's key)",
    )
    p.add_argument(
        "--limits",
        metavar="URL",
        help="share the account's rate limits and Processing slots with other processes "
        "through Redis (redis://host:6379/0); if Redis fails, the run stops (exit 4)",
    )
    p.add_argument(
        "--slot-lease",
        type=positive_float,
        default=15.0,
        metavar="S",
        help="with --limits: a dead worker's Processing slots come back after S seconds "
        "(default 15)",
    )
    _add_stage_flags(p)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry items that failed for their content or were skipped (their Failed "
        "assets are deleted first); retryable failures are retried by every run",
    )
    p.add_argument("--dry-run", action="store_true", help="journal and plan, send nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--emulator",
        action="store_true",
        help="run against an embedded local emulator (no account needed)",
    )
    p.add_argument(
        "--emulator-time-scale", type=positive_float, default=1.0, help=argparse.SUPPRESS
    )
    p.set_defaults(handler=cmd_ingest)


def _add_stage_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("staging of local files (README: Staging)")
    s.add_argument(
        "--stage",
        metavar="chenyu|s3://BUCKET/PREFIX",
        default="chenyu",
        help="where local files are put for CreateAsset to fetch: Chenyu (default) or your "
        "own S3-compatible bucket (presigned GET URLs; credentials from the AWS chain)",
    )
    s.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS's)",
    )
    s.add_argument(
        "--s3-region", metavar="REGION", help="S3 region (default: AWS_REGION, AWS_DEFAULT_REGION)"
    )
    s.add_argument(
        "--s3-addressing-style",
        choices=("auto", "virtual", "path"),
        default="auto",
        help="bucket in the host name (virtual; Volcengine TOS) or in the path",
    )
    s.add_argument(
        "--s3-url-hours",
        type=float,
        default=12.0,
        metavar="H",
        help="lifetime of the presigned URLs (default 12, at most 168)",
    )
    s.add_argument(
        "--stage-cleanup",
        action="store_true",
        help="delete the staged objects of items that became Active (a re-ingest uploads again)",
    )


def _stage(args: argparse.Namespace) -> S3Stage | None:
    if args.stage == "chenyu":
        if args.stage_cleanup:
            raise ConfigurationError("--stage-cleanup needs --stage s3://bucket/prefix")
        return None
    return S3Stage.from_uri(
        args.stage,
        endpoint_url=args.s3_endpoint or env_endpoint(),
        region=args.s3_region or env_region(),
        addressing_style=args.s3_addressing_style,
        url_ttl=args.s3_url_hours * 3600.0,
        cleanup=args.stage_cleanup,
    )


def _parse_shard(text: str) -> tuple[int, int]:
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


def _count(source: Iterator[SourceItem | BadItem], shard: tuple[int, int] | None) -> int | None:
    """Items in the source, by a streaming pass (None when it can't be counted cheaply)."""
    try:
        n = 0
        for item in source:
            if shard is None or shard_of(item.key, shard[1]) == shard[0]:
                n += 1
        return n
    except (OSError, ValueError):
        return None


def cmd_ingest(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    # the source is checked now (exit 2 for a missing file, a FIFO, a bad CSV header...)
    items = open_source(Path(args.source), allow_outside=args.allow_outside_paths)
    try:
        return asyncio.run(_ingest(args, console, items))
    except KeyboardInterrupt:
        console.print(
            Text("interrupted: in-flight items were journaled; rerun to resume", "yellow")
        )
        return EXIT_INTERRUPTED


@contextlib.asynccontextmanager
async def _clients(
    args: argparse.Namespace, stage: S3Stage | None
) -> AsyncIterator[tuple[ArkClient, ChenyuClient | None]]:
    if not args.emulator and stage is not None:  # no Chenyu account needed
        ca = str(args.ca_bundle) if args.ca_bundle else None
        async with ArkClient.from_env(
            rate_limits=_scaled(ACTION_RATES, args.rate_scale), limits=args.limits, ca_bundle=ca
        ) as ark:
            yield ark, None
        return
    if not args.emulator:
        scale = args.rate_scale
        ca = str(args.ca_bundle) if args.ca_bundle else None
        # Ark first: every ingest needs it, Chenyu only for local files
        ark_client = ArkClient.from_env(
            rate_limits=_scaled(ACTION_RATES, scale), limits=args.limits, ca_bundle=ca
        )
        try:
            chenyu_client = ChenyuClient.from_env(
                rate_limits=_scaled(CHENYU_RATES, scale), ca_bundle=ca
            )
        except ConfigurationError as exc:  # the message names the setting, never a value
            raise ConfigurationError(
                f"{exc} (no Chenyu account? stage local files in your own S3-compatible "
                "bucket: --stage s3://bucket/prefix)"
            ) from None
        async with ark_client as ark, chenyu_client as chenyu:
            yield ark, chenyu
        return
    from chenyu_assets.emulator import Emulator, EmulatorConfig

    scale = args.emulator_time_scale
    # the embedded emulator may fetch the staging bucket's presigned URLs (and nothing else)
    allow = (_authority(stage.endpoint_url),) if stage and stage.endpoint_url else ()
    async with Emulator(EmulatorConfig(time_scale=scale, fetch_allowlist=allow)) as emu:
        acct = emu.account
        async with (
            ArkClient(
                access_key=acct.access_key,
                secret_key=acct.secret_key,
                base_url=emu.url,
                rate_limits=_scaled(ACTION_RATES, scale),
                limits=args.limits,
            ) as ark,
            ChenyuClient(
                api_key=acct.api_key,
                base_url=emu.chenyu_url,
                rate_limits=_scaled(CHENYU_RATES, scale),
            ) as chenyu,
        ):
            yield ark, chenyu


def _authority(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _scaled(rates: Mapping[str, float], scale: float) -> dict[str, float]:
    return {k: v * scale for k, v in rates.items()}


async def _ingest(
    args: argparse.Namespace, console: Console, source: Iterator[SourceItem | BadItem]
) -> int:
    shard: tuple[int, int] | None = args.shard
    stage = _stage(args)
    opened = open_source(Path(args.source), allow_outside=args.allow_outside_paths)
    total = await anyio.to_thread.run_sync(_count, opened, shard)
    source_path = str(await anyio.Path(args.source).resolve())
    items: Any = source
    if shard is not None:
        i, n = shard
        items = (it for it in items if shard_of(_key(it), n) == i)
    options = IngestOptions(
        create_concurrency=args.concurrency,
        upload_concurrency=args.upload_concurrency,
        max_processing=args.max_processing,
        dry_run=args.dry_run,
        retry_failed=args.retry_failed,
        allow_private_urls=args.emulator,
        allow_outside_paths=args.allow_outside_paths,
        stage=stage,
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
    async with _clients(args, options.stage) as (ark, chenyu):
        slots = None
        if ark.shared_limits is not None:
            await ark.shared_limits.ping()  # unreachable: exit 4 before anything is sent
            slots = ark.shared_limits.slots(args.max_processing, lease=args.slot_lease)
        group_id = await resolve_group(ark, args.group_id, args.group)
        journal: Path | None = args.journal
        if journal is None and not args.emulator:  # the emulator's state is ephemeral anyway
            journal = default_journal(group_id, shard)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>6.1f}/s"),
            TextColumn("processing {task.fields[slots]}"),
            TextColumn("429s {task.fields[throttled]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=args.no_progress or not console.is_terminal,
        )
        counts = {"throttled": 0}

        def on_event(event: Event) -> None:
            if event.kind == "rate_limited":
                counts["throttled"] += 1

        with progress:
            task = progress.add_task("ingest", total=total, rate=0.0, slots=0, throttled=0)
            async with open_ingest(
                ark,
                items,
                group_id=group_id,
                journal=journal,
                chenyu=chenyu,
                options=options,
                slots=slots,
                on_event=on_event,
                run_info={"source": source_path},
                unique_keys=True,
            ) as run:
                async for result in run:
                    if out is not None:
                        out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                    elapsed = progress.tasks[task].elapsed or 1e-9
                    progress.update(
                        task,
                        advance=1,
                        rate=run.report.finished / elapsed,
                        slots=run.processing(),
                        throttled=counts["throttled"],
                    )
    report = run.report
    _summary(console, report, group_id, journal)
    if args.json:
        print(json.dumps(_report_json(report, group_id, journal)))
    return exit_code(report)


def exit_code(report: IngestReport) -> int:
    """4 fatal; 3 a content failure or a skip; 5 only retryable failures; 0 all active."""
    if report.fatal:
        return EXIT_FATAL
    if report.failed > report.retryable or report.skipped:
        return EXIT_ITEMS_FAILED
    return EXIT_RETRYABLE if report.retryable else EXIT_OK


def _key(item: SourceItem | BadItem) -> str:
    return item.key


def _report_json(report: IngestReport, group_id: str, journal: Path | None) -> dict[str, Any]:
    return {
        "group_id": group_id,
        "journal": str(journal) if journal else None,
        "total": report.total,
        "active": report.active,
        "failed": report.failed,
        "skipped": report.skipped,
        "planned": report.planned,
        "resumed": report.resumed,
        "recovered": report.recovered,
        "adopted": report.adopted,
        "retryable": report.retryable,
        "deleted_failed": report.deleted_failed,
        "creates": report.creates,
        "status_calls_per_asset": round(report.status_calls_per_asset, 3),
        "rate_limited": report.rate_limited,
        "retries": report.retries,
        "elapsed": round(report.elapsed, 3),
        "fatal": report.fatal,
        "failures": report.failures,
        "staging": dataclasses.asdict(report.staging) if report.staging else None,
    }


def _summary(console: Console, report: IngestReport, group_id: str, journal: Path | None) -> None:
    table = Table(title=Text(plain(f"ingest into {group_id}")), show_header=False)
    rows = [
        ("items", report.total),
        ("active", report.active),
        ("failed", report.failed),
        ("  of which retryable (rerun)", report.retryable),
        ("skipped", report.skipped),
        ("planned (dry run)", report.planned),
        ("already done (resumed)", report.resumed),
        ("recovered by reconciliation", report.recovered),
        ("adopted from the group (by Name)", report.adopted),
        ("Failed assets deleted to retry", report.deleted_failed),
        ("CreateAsset sent", report.creates),
        ("status calls per asset", f"{report.status_calls_per_asset:.2f}"),
        ("429s / retries", f"{report.rate_limited} / {report.retries}"),
        ("elapsed", f"{report.elapsed:.1f} s"),
        ("journal", str(journal or "(temporary)")),
    ]
    if report.staging is not None:
        st = report.staging
        rows.append(("S3 objects uploaded / reused", f"{st.uploads} / {st.reused}"))
        rows.append(("S3 URLs refreshed / deleted", f"{st.refreshed} / {st.deleted}"))
    for label, value in rows:  # Text, never markup: a code or path may hold "[/x]"
        table.add_row(label, Text(plain(str(value))))
    for code, n in sorted(report.failures.items()):
        table.add_row(Text(plain(f"  reason {code}")), str(n))
    console.print(table)
    if report.fatal:
        console.print(
            Text.assemble(
                ("stopped", "red"),
                f": {plain(report.fatal)}\nThe journal is intact: fix the cause "
                "and rerun the same command to resume.",
            )
        )
