"""``chenyu-assets status``: what a journal says, read-only.

The journal is opened read-only (SQLite ``mode=ro``; ``immutable`` when no ingest has it
open, so not even a ``-wal`` file appears), without the run lock: it works while an ingest
runs, and never changes the file. States are shown as stored (whatever states a newer
version writes), and every row that is neither done nor on its way (failed, skipped,
unknown, retryable...) is listed with its code.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from chenyu_assets._cli_common import EXIT_OK, UsageError, at_least, plain
from chenyu_assets._cli_ingest import default_journal, parse_shard
from chenyu_assets.batch.journal import ItemState as _S
from chenyu_assets.batch.journal_files import check as check_journal
from chenyu_assets.errors import JournalError

__all__ = ["add_status", "read_status"]

#: states of an item that is done or still on its way (everything else is a problem row:
#: failed, skipped, unknown, and any state a newer version writes)
_PROGRESS: Final = tuple(
    s.value for s in (_S.ACTIVE, _S.PENDING, _S.UPLOADED, _S.CREATING, _S.CREATED)
)


def add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "status",
        help="show what an ingest journal says: counts, problems, the last run",
        description="Read an ingest journal (read-only, without its lock: safe while an "
        "ingest runs) and show the items per state, the failed / retryable / skipped items "
        "with their codes, and the last run's times and figures.",
    )
    p.add_argument("journal", nargs="?", type=Path, help="the journal file")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--group-id", metavar="ID", help="read the default journal of this group (.chenyu/ID.db)"
    )
    which.add_argument(
        "--group",
        metavar="NAME",
        help="read the journal in .chenyu/ of the ingest that used --group NAME",
    )
    p.add_argument(
        "--shard",
        type=parse_shard,
        metavar="I/N",
        help="with --group-id/--group: the journal of this shard",
    )
    which.add_argument(
        "--queue", metavar="URL", help="the queued job kept in this Redis (README: Scale-out)"
    )
    p.add_argument("--job", default="default", help="with --queue: the job's name")
    p.add_argument("--limit", type=at_least(0), default=20, help="problem items to list (0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    if args.queue:
        if args.journal is not None:
            raise UsageError("give a journal or --queue, not both")
        from chenyu_assets._cli_queue import queue_status  # it imports the ingest command

        return queue_status(args)
    path = _journal_of(args)
    data = read_status(path, limit=args.limit)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print(_text(data))
    return EXIT_OK


def _journal_of(args: argparse.Namespace) -> Path:
    given = sum(x is not None for x in (args.journal, args.group_id, args.group))
    if given != 1:
        raise UsageError("give a journal path, --group-id ID or --group NAME (one of them)")
    if args.journal is not None:
        return Path(args.journal)
    shard = args.shard
    if args.group_id is not None:
        return default_journal(args.group_id, shard)
    found = []
    folder = Path(".chenyu")
    for candidate in sorted(folder.glob("*.db")) if folder.is_dir() else []:
        meta = _meta_only(candidate)
        if (
            meta.get("group_name") == args.group
            and default_journal(meta.get("group_id", ""), shard) == candidate
        ):
            found.append(candidate)
    if len(found) != 1:
        what = "no journal" if not found else f"{len(found)} journals"
        raise UsageError(
            f"{what} in .chenyu/ for --group {plain(args.group)!r}; pass the journal path "
            "(the ingest summary prints it) or --group-id"
        )
    return found[0]


def _connect(path: Path) -> sqlite3.Connection:
    check_journal(path)  # a folder, a FIFO, not SQLite: JournalError (exit 2)
    if not path.exists():
        raise UsageError(f"journal {path} does not exist")
    # no -wal file: no ingest has it open, read it as an immutable file (creates nothing)
    live = os.path.exists(f"{path}-wal")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if live else "&immutable=1")
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise UsageError(f"journal {path} cannot be read: {exc}") from None


def _meta_only(path: Path) -> dict[str, str]:
    try:
        conn = _connect(path)
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except (UsageError, JournalError, sqlite3.Error, OSError):
        return {}


def read_status(path: Path, *, limit: int = 20) -> dict[str, Any]:
    """The status of the journal at ``path`` as a JSON-ready dict (read-only)."""
    conn = _connect(path)
    try:
        return _read(conn, path, limit)
    except sqlite3.Error as exc:
        raise UsageError(f"journal {path} cannot be read: {exc}") from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path, limit: int) -> dict[str, Any]:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    states = dict(conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state"))
    marks = ", ".join("?" for _ in _PROGRESS)
    where = f"WHERE state NOT IN ({marks})"
    codes = [
        {"state": s, "error_code": c, "count": n}
        for s, c, n in conn.execute(
            f"SELECT state, error_code, COUNT(*) FROM items {where} "  # noqa: S608
            "GROUP BY state, error_code ORDER BY COUNT(*) DESC, state, error_code",
            _PROGRESS,
        )
    ]
    sql = (
        f"SELECT key, state, error_code, error_message, attempts, asset_id FROM items {where} "  # noqa: S608
        "ORDER BY id" + (" LIMIT ?" if limit else "")
    )
    rows = conn.execute(sql, (*_PROGRESS, limit) if limit else _PROGRESS).fetchall()
    problems = [
        {
            "key": k,
            "state": s,
            "error_code": c,
            "message": plain(m) if m else None,
            "attempts": a,
            "asset_id": i,
        }
        for k, s, c, m, a, i in rows
    ]
    try:
        last_run = json.loads(meta.get("last_run", "null"))
    except ValueError:
        last_run = None
    return {
        "journal": str(path),
        "group_id": meta.get("group_id"),
        "group_name": meta.get("group_name"),
        "source": meta.get("source"),
        "total": sum(states.values()),
        "states": states,
        "problem_codes": codes,
        "problems": problems,
        "problems_total": sum(c["count"] for c in codes),
        "last_run": last_run if isinstance(last_run, dict) else None,
    }


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return "?"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _text(data: dict[str, Any]) -> str:
    lines = [
        f"journal   {data['journal']}",
        f"group     {data['group_id'] or '?'}"
        + (f" ({data['group_name']})" if data["group_name"] else ""),
        f"source    {data['source'] or '?'}",
        f"items     {data['total']}",
    ]
    for state, n in data["states"].items():
        lines.append(f"  {state:<10} {n}")
    run = data["last_run"]
    if run:
        figures = ", ".join(
            f"{label} {run.get(field, 0)}"
            for label, field in (
                ("items", "total"),
                ("active", "active"),
                ("failed", "failed"),
                ("skipped", "skipped"),
                ("planned", "planned"),
                ("resumed", "resumed"),
                ("CreateAsset sent", "creates"),
                ("status calls", "status_calls"),
                ("429s", "rate_limited"),
                ("retries", "retries"),
            )
        )
        lines.append(
            f"last run  {_when(run.get('started'))} -> {_when(run.get('ended'))} "
            f"({run.get('elapsed', 0)} s), {run.get('status')}"
            + (" (dry run)" if run.get("dry_run") else "")
        )
        lines.append(f"  {figures}")
        if run.get("fatal"):
            lines.append(f"  stopped: {run['fatal']}")
    else:
        lines.append("last run  (no run record)")
    if data["problem_codes"]:
        lines.append(f"problems  {data['problems_total']}")
        for c in data["problem_codes"]:
            lines.append(f"  {c['state']:<10} {c['error_code'] or '-':<24} {c['count']}")
        for p in data["problems"]:
            message = f"  {p['message']}" if p["message"] else ""
            lines.append(f"  - {p['key']}  {p['state']}  {p['error_code'] or '-'}{message}")
        if data["problems_total"] > len(data["problems"]):
            lines.append(f"  ... {data['problems_total'] - len(data['problems'])} more (--limit 0)")
    return plain("\n".join(lines), multiline=True)
