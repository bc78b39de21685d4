"""The queued ingest on the command line (README: Scale-out):

* ``chenyu-assets enqueue SOURCE --queue URL --group-id ID``: stream a source into the
  job once (enqueueing it again adds nothing);
* ``chenyu-assets ingest [SOURCE] --queue URL``: enqueue SOURCE if given, then work as
  one of any number of workers until the job has nothing left anywhere (a worker without
  SOURCE joins, or resumes, a job);
* ``chenyu-assets status --queue URL``: the items per state, in flight per worker, and
  the failed / retryable / skipped ones, from any machine.

The module is :mod:`chenyu_assets.batch.queue`; the flags of ``ingest`` that shape the
run (concurrency, rates, ``--limits``, ``--stage``...) work for a worker as for an
ingest. ``--limits`` defaults to the queue's Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from chenyu_assets._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    at_least,
    plain,
    positive_float,
)
from chenyu_assets._cli_progress import log_item, report_json, summary
from chenyu_assets._cli_run import exit_code, interruptible, open_clients
from chenyu_assets._cli_source import add_source_flags, option_values, walk_arguments
from chenyu_assets._cli_stage import stage_of
from chenyu_assets.batch import IngestOptions
from chenyu_assets.batch.queue import EnqueueReport, WorkerQueue, enqueue, open_worker
from chenyu_assets.batch.queue_store import QueueStore
from chenyu_assets.batch.sources import open_source

__all__ = ["add_enqueue", "add_queue_flags", "cmd_queued", "queue_status"]

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def bandwidth(text: str) -> float:
    """Bytes per second: ``5000000``, ``5M``, ``200k`` (decimal units)."""
    t = text.strip().lower().removesuffix("b/s").removesuffix("/s")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    return positive_float(t[: len(t) - len(unit)] or "x") * _UNITS[unit]


def add_queue_flags(p: argparse.ArgumentParser) -> None:
    """The ``ingest`` flags of a queued job (README: Scale-out)."""
    q = p.add_argument_group("a queued job shared by workers on many machines (README: Scale-out)")
    q.add_argument(
        "--queue",
        metavar="URL",
        help="work on the job kept in this Redis (redis://host:6379/0): enqueue SOURCE if "
        "given, then take items until the job has nothing left anywhere",
    )
    q.add_argument(
        "--job", default="default", help="the job's name in that Redis (default: default)"
    )
    q.add_argument(
        "--worker-name", metavar="NAME", help="this worker's name (default: host:pid:random)"
    )
    q.add_argument(
        "--claim-idle",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="take over another worker's item once it was silent for S seconds (default 60: "
        "above the longest legitimate CreateAsset)",
    )
    q.add_argument(
        "--prefetch",
        type=at_least(1),
        default=32,
        help="items a worker holds at once (default 32; fewer balance the end of a job "
        "better, more keep a fast pipeline full)",
    )
    q.add_argument(
        "--upload-bandwidth",
        type=bandwidth,
        metavar="BYTES/S",
        help="cap this worker's uploads (e.g. 50M; default: no cap)",
    )


def add_enqueue(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "enqueue",
        help="put a directory or manifest into a queued job (workers: ingest --queue)",
        description="Stream a source into a job kept in Redis, once: items the job knows add "
        "nothing. Workers on any machine then take the items (chenyu-assets ingest --queue "
        "URL). Local paths must be the same on every worker (a shared mount).",
    )
    p.add_argument("source", help="a directory, a .csv or a .jsonl manifest")
    p.add_argument("--queue", required=True, metavar="URL", help="the job's Redis")
    p.add_argument("--group-id", metavar="ID", help="the group (needed for a new job)")
    p.add_argument("--job", default="default", help="the job's name (default: default)")
    p.add_argument("--allow-outside-paths", action="store_true", help="as for ingest")
    p.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    add_source_flags(p)
    p.set_defaults(handler=cmd_enqueue)


def _source(args: argparse.Namespace) -> Any:
    return open_source(
        Path(args.source), allow_outside=args.allow_outside_paths, **walk_arguments(args)
    )


def _enqueued(console: Console, report: EnqueueReport, as_json: bool) -> None:
    counts = {k: getattr(report, k) for k in ("added", "known", "skipped", "ignored")}
    console.print(Text(plain(", ".join(f"{k} {v}" for k, v in counts.items()))))
    if as_json:
        print(json.dumps(counts))


def cmd_enqueue(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    items = _source(args)

    async def run() -> EnqueueReport:
        store = QueueStore(args.queue, job=args.job)
        try:
            return await enqueue(store, items, group_id=args.group_id)
        finally:
            await store.aclose()

    _enqueued(console, asyncio.run(run()), args.json)
    return EXIT_OK


def cmd_queued(args: argparse.Namespace) -> int:
    """``ingest [SOURCE] --queue URL``."""
    for flag, given, why in (
        ("--shard", args.shard, "workers share the job instead"),
        ("--group", args.group, "give --group-id: every machine must name one group"),
        ("--journal", args.journal, "the job's state lives in Redis"),
        ("--dry-run", args.dry_run, "use ingest without --queue"),
        ("--emulator", args.emulator, "workers need one shared service: chenyu-assets serve"),
        ("--retry-failed", args.retry_failed, "not supported for a queued job yet"),
        ("--replace-changed", args.replace_changed, "not supported for a queued job yet"),
    ):
        if given:
            raise UsageError(f"{flag} does not go with --queue ({why})")
    console = Console(stderr=True)
    items = _source(args) if args.source else None
    try:
        return asyncio.run(interruptible(_queued(args, console, items)))
    except KeyboardInterrupt:
        console.print(
            Text(
                "interrupted: the items this worker held go to the other workers after "
                "--claim-idle seconds (or to the next worker started)",
                "yellow",
            )
        )
        return EXIT_INTERRUPTED


async def _queued(args: argparse.Namespace, console: Console, items: Any) -> int:
    store = QueueStore(args.queue, job=args.job)
    try:
        if items is not None:
            _enqueued(console, await enqueue(store, items, group_id=args.group_id), False)
        out: TextIO | None = (
            args.out.open("a", encoding="utf-8", errors="backslashreplace") if args.out else None
        )
        try:
            return await _work(args, console, store, out)
        finally:
            if out is not None:
                out.close()
    finally:
        await store.aclose()


async def _work(
    args: argparse.Namespace, console: Console, store: QueueStore, out: TextIO | None
) -> int:
    if args.limits is None:
        args.limits = args.queue  # the account's limits are shared where the job is
    stage = stage_of(args)
    options = IngestOptions(
        create_concurrency=args.concurrency,
        upload_concurrency=args.upload_concurrency,
        max_processing=args.max_processing,
        allow_outside_paths=args.allow_outside_paths,
        stage=stage,
        **option_values(args),
    )
    queue = WorkerQueue(
        store,
        name=args.worker_name,
        prefetch=args.prefetch,
        claim_idle=args.claim_idle,
        upload_bandwidth=args.upload_bandwidth,
    )
    async with open_clients(args, stage) as (ark, chenyu):
        slots = None
        if ark.shared_limits is not None:
            await ark.shared_limits.ping()  # unreachable: exit 4 before anything is sent
            slots = ark.shared_limits.slots(args.max_processing, lease=args.slot_lease)
        async with open_worker(ark, queue, chenyu=chenyu, options=options, slots=slots) as run:
            async for result in run:
                if out is not None:
                    out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                    out.flush()
                log_item(result.key, result.status, result.asset_id, result.error_code)
    report = run.report
    group_id = await store.open_job(None)
    summary(console, report, group_id, None)
    if args.json:
        figures = report_json(report, group_id, None)
        figures["worker"] = {
            "name": queue.name,
            "claimed": queue.claimed,
            "taken_over": queue.taken_over,
            "lost": queue.lost,
        }
        print(json.dumps(figures))
    return exit_code(report)


# -- status --queue ---------------------------------------------------------------------------


def queue_status(args: argparse.Namespace) -> int:
    """``status --queue URL [--job NAME]``."""

    async def read() -> dict[str, Any]:
        store = QueueStore(args.queue, job=args.job)
        try:
            return await store.snapshot(limit=args.limit)
        finally:
            await store.aclose()

    data = asyncio.run(read())
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return EXIT_OK
    states = data["states"]
    lines = [
        f"job {data['job']} at {data['queue']}, group {data['group_id']}",
        f"items: {data['total']}  "
        + "  ".join(f"{k} {v}" for k, v in states.items())
        + f"  (not yet taken: {data['undelivered']}; enqueuers running: {data['enqueuing']})",
        f"workers alive: {len(data['workers'])}"
        + (f" ({', '.join(data['workers'])})" if data["workers"] else ""),
        "in flight per worker:" if data["in_flight"] else "in flight: none",
    ]
    lines += [f"  {name}  {n}" for name, n in data["in_flight"].items()]
    if data["problems"]:
        lines.append("failed / retryable / skipped (first ones):")
        lines += [
            f"  {p['key']}  {p['state']}  {p['error_code'] or ''}  {p['message'] or ''}".rstrip()
            for p in data["problems"]
        ]
    print(plain("\n".join(lines), multiline=True))
    return EXIT_OK
