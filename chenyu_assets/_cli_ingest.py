"""``chenyu-assets ingest``: the bulk-ingest command (progress, summary, JSONL results).

Exit codes: 0 every item active; 3 some items failed or were skipped; 4 a fatal stop
(credentials, permissions, missing group, service unreachable); 130 interrupted (the
in-flight creates are journaled first, so a rerun resumes exactly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, TextIO

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

from chenyu_assets._core.ratelimit import DEFAULT_MARGIN
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import Event, IngestOptions, IngestReport, open_ingest
from chenyu_assets.batch.naming import shard_of
from chenyu_assets.batch.sources import BadItem, SourceItem, open_source
from chenyu_assets.chenyu import CHENYU_RATES, ChenyuClient
from chenyu_assets.errors import ChenyuAssetsError, ConfigurationError
from chenyu_assets.limits import PROFILES, Rate, load_rates, profile_rates

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_FATAL, EXIT_INTERRUPTED = 0, 3, 4, 130


def add_ingest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "ingest",
        help="push a directory or manifest into an Ark asset group",
        description="Upload local files (through Chenyu) and create one Ark asset per item, "
        "at the account's full rate, resumable from a journal, never duplicating an asset.",
    )
    p.add_argument("source", help="a directory, a .csv or a .jsonl manifest")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--group", metavar="NAME", help="the group's name (created if missing)")
    group.add_argument("--group-id", metavar="ID", help="an existing group's id")
    p.add_argument("--journal", type=Path, help="the resume journal (default: .chenyu/<group>.db)")
    p.add_argument("--out", type=Path, help="write one JSON line per item here")
    p.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="PEM",
        help="also trust the CA certificates in this PEM file (TLS is always verified; "
        "SSL_CERT_FILE works too)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="CreateAsset tasks (default 8)")
    p.add_argument("--upload-concurrency", type=int, default=4, help="uploads at once")
    p.add_argument("--max-processing", type=int, default=30, help="assets Processing at once")
    p.add_argument(
        "--rate-scale",
        type=float,
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
        type=float,
        default=15.0,
        metavar="S",
        help="with --limits: a dead worker's Processing slots come back after S seconds "
        "(default 15)",
    )
    p.add_argument("--dry-run", action="store_true", help="journal and plan, send nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--emulator",
        action="store_true",
        help="run against an embedded local emulator (no account needed)",
    )
    p.add_argument("--emulator-time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_ingest)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/", 1))
    except ValueError:
        raise ConfigurationError(f"--shard must look like I/N, not {text!r}") from None
    if not 0 <= i < n:
        raise ConfigurationError(f"--shard {text}: need 0 <= I < N")
    return i, n


def _count(source: str, shard: tuple[int, int] | None) -> int | None:
    """Items in the source, by a streaming pass (None when it can't be counted cheaply)."""
    try:
        n = 0
        for item in open_source(Path(source)):
            if shard is None or shard_of(item.key, shard[1]) == shard[0]:
                n += 1
        return n
    except (OSError, ValueError):
        return None


def cmd_ingest(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        shard = _parse_shard(args.shard)
        if not Path(args.source).exists():
            raise ConfigurationError(f"source {args.source} does not exist")
        return asyncio.run(_ingest(args, console, shard))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: in-flight items were journaled; rerun to resume")
        return EXIT_INTERRUPTED
    except ChenyuAssetsError as exc:
        console.print(f"[red]error[/]: {exc}")
        return EXIT_FATAL


@contextlib.asynccontextmanager
async def _clients(args: argparse.Namespace) -> AsyncIterator[tuple[ArkClient, ChenyuClient]]:
    if args.rate_scale <= 0:
        raise ConfigurationError("--rate-scale must be positive")
    if args.rate_margin < 0:
        raise ConfigurationError("--rate-margin must not be negative")
    if args.rates is not None:
        ark_rates = load_rates(args.rates, profile=args.limits_profile)
    else:
        ark_rates = profile_rates(args.limits_profile or "volcengine")
    if not args.emulator:
        scale = args.rate_scale
        ca = str(args.ca_bundle) if args.ca_bundle else None
        async with (
            ArkClient.from_env(
                rates=_scaled(ark_rates, scale),
                rate_margin=args.rate_margin,
                limits=args.limits,
                ca_bundle=ca,
            ) as ark,
            ChenyuClient.from_env(
                rate_limits=_scaled_floats(CHENYU_RATES, scale), ca_bundle=ca
            ) as chenyu,
        ):
            yield ark, chenyu
        return
    from chenyu_assets.emulator import Emulator, EmulatorConfig

    scale = args.emulator_time_scale
    async with Emulator(EmulatorConfig(time_scale=scale)) as emu:
        acct = emu.account
        async with (
            ArkClient(
                access_key=acct.access_key,
                secret_key=acct.secret_key,
                base_url=emu.url,
                rates=_scaled(ark_rates, scale),
                rate_margin=args.rate_margin,
                limits=args.limits,
            ) as ark,
            ChenyuClient(
                api_key=acct.api_key,
                base_url=emu.chenyu_url,
                rate_limits=_scaled_floats(CHENYU_RATES, scale),
            ) as chenyu,
        ):
            yield ark, chenyu


def _scaled(rates: Mapping[str, Rate], scale: float) -> dict[str, Rate]:
    return {k: v.scaled(scale) for k, v in rates.items()}


def _scaled_floats(rates: Mapping[str, float], scale: float) -> dict[str, float]:
    return {k: v * scale for k, v in rates.items()}


async def _resolve_group(ark: ArkClient, args: argparse.Namespace) -> str:
    if args.group_id:
        return str(args.group_id)
    name = args.group or "chenyu-assets-ingest"
    async for group in ark.list_asset_groups(name=name):
        if group.name == name:
            return group.id
    return await ark.create_asset_group(name=name, description="created by chenyu-assets ingest")


async def _ingest(args: argparse.Namespace, console: Console, shard: tuple[int, int] | None) -> int:
    total = _count(args.source, shard)
    source_path = str(await anyio.Path(args.source).resolve())
    items: Any = open_source(Path(args.source))
    if shard is not None:
        i, n = shard
        items = (it for it in items if shard_of(_key(it), n) == i)
    options = IngestOptions(
        create_concurrency=args.concurrency,
        upload_concurrency=args.upload_concurrency,
        max_processing=args.max_processing,
        dry_run=args.dry_run,
        allow_private_urls=args.emulator,
    )
    async with _clients(args) as (ark, chenyu):
        slots = None
        if ark.shared_limits is not None:
            if args.slot_lease <= 0:
                raise ConfigurationError("--slot-lease must be positive")
            await ark.shared_limits.ping()  # unreachable: exit 4 before anything is sent
            slots = ark.shared_limits.slots(args.max_processing, lease=args.slot_lease)
        group_id = await _resolve_group(ark, args)
        journal: Path | None = args.journal
        if journal is None and not args.emulator:  # the emulator's state is ephemeral anyway
            journal = Path(".chenyu") / f"{group_id}{_shard_suffix(shard)}.db"
        # backslashreplace: a non-UTF-8 file name in a path or message is written as a JSON
        # \udcXX escape (it reads back as the same string) instead of stopping the run
        out: TextIO | None = (
            args.out.open("a", encoding="utf-8", errors="backslashreplace") if args.out else None
        )
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

        try:
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
        finally:
            if out is not None:
                out.close()
    report = run.report
    _summary(console, report, group_id, journal)
    if args.json:
        print(json.dumps(_report_json(report, group_id, journal)))
    if report.fatal:
        return EXIT_FATAL
    return EXIT_ITEMS_FAILED if report.failed or report.skipped else EXIT_OK


def _key(item: SourceItem | BadItem) -> str:
    return item.key


def _shard_suffix(shard: tuple[int, int] | None) -> str:
    return "" if shard is None else f".shard{shard[0]}of{shard[1]}"


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
        "creates": report.creates,
        "status_calls_per_asset": round(report.status_calls_per_asset, 3),
        "rate_limited": report.rate_limited,
        "retries": report.retries,
        "elapsed": round(report.elapsed, 3),
        "fatal": report.fatal,
        "failures": report.failures,
    }


def _summary(console: Console, report: IngestReport, group_id: str, journal: Path | None) -> None:
    table = Table(title=f"ingest into {group_id}", show_header=False)
    rows = [
        ("items", report.total),
        ("active", report.active),
        ("failed", report.failed),
        ("skipped", report.skipped),
        ("planned (dry run)", report.planned),
        ("already done (resumed)", report.resumed),
        ("recovered by reconciliation", report.recovered),
        ("CreateAsset sent", report.creates),
        ("status calls per asset", f"{report.status_calls_per_asset:.2f}"),
        ("429s / retries", f"{report.rate_limited} / {report.retries}"),
        ("elapsed", f"{report.elapsed:.1f} s"),
        ("journal", str(journal or "(temporary)")),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    for code, n in sorted(report.failures.items()):
        table.add_row(f"  reason {code}", str(n))
    console.print(table)
    if report.fatal:
        console.print(
            f"[red]stopped[/]: {report.fatal}\nThe journal is intact: fix the cause "
            "and rerun the same command to resume."
        )
