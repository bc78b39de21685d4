"""What a running ``chenyu-assets`` command tells its operator: logs (text or JSON lines,
redacted), the labelled progress bar of a terminal and the periodic ``--stats`` line for
machines (CI, cron, services: stderr not a terminal).

A log record names its action (the ``CreateAsset`` of the request under way, also for the
transport's ``POST / -> 200`` line), its request id, item key and asset id when known.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

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

from chenyu_assets._cli_common import plain
from chenyu_assets._cli_source import ignored_rows
from chenyu_assets._core.logs import RedactingFilter, get_logger, redact_text
from chenyu_assets._logctx import CURRENT_ACTION
from chenyu_assets.batch import IngestReport, Outcome

__all__ = ["Stats", "configure_logging", "ingest_bar", "log_item", "report_json", "summary"]

#: the record attributes a JSON line carries (besides time, level, logger, message)
_FIELDS: Final = ("action", "request_id", "item_key", "asset_id", "status", "error_code")


class _Context(logging.Filter):
    """Adds the task's current action to a record that names none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action", None) is None:
            record.action = CURRENT_ACTION.get()
        return True


class _TextFormatter(logging.Formatter):
    """``time LEVEL logger: [Action] message``, as plain text (no terminal escapes)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        action = getattr(record, "action", None)
        if action and action not in record.getMessage():
            head, sep, tail = line.partition(": ")
            line = f"{head}{sep}{action}: {tail}" if sep else f"{action}: {line}"
        return plain(line, multiline=True)


class _JsonFormatter(logging.Formatter):
    """One JSON object per record; every string redacted (the filter did the message)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                data[field] = redact_text(str(value))
        if record.exc_text or record.exc_info:
            text = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            data["exception"] = redact_text(text)
        return json.dumps(data, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The CLI's handler (its own class, so a second ``main()`` does not add another)."""


def configure_logging(verbosity: int, log_format: str = "text") -> None:
    """``-v``: INFO (each action, each item's outcome), ``-vv``: DEBUG, on stderr; JSON
    lines with ``--log-format json`` (then at least INFO). Redacted by the handler too."""
    if verbosity <= 0 and log_format != "json":
        return
    logger = logging.getLogger("chenyu_assets")
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)  # main() called again in this process
    handler = _StderrHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(_Context())
    logger.addHandler(handler)


item_log = get_logger("chenyu_assets.ingest")


def log_item(key: str, status: str, asset_id: str | None, code: str | None) -> None:
    """One INFO line per item's outcome (``-v``)."""
    if item_log.isEnabledFor(logging.INFO):
        extra = {"item_key": key, "asset_id": asset_id, "status": status, "error_code": code}
        why = f" ({code})" if code else ""
        item_log.info("item %s: %s%s", key, status, why, extra=extra)


# --- progress ----------------------------------------------------------------------------------


def ingest_bar(console: Console, disable: bool) -> Progress:
    """The terminal's bar: every column labelled (``429s 0`` no longer reads as seconds)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>6.1f} items/s"),
        TextColumn("processing {task.fields[slots]}"),
        TextColumn("failed {task.fields[failed]} skipped {task.fields[skipped]}"),
        TextColumn("429s {task.fields[throttled]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


class Stats:
    """The ``--stats`` line: counts, rates and ETA, every ``interval`` seconds."""

    def __init__(
        self,
        total: int | None,
        interval: float,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.interval = interval
        self.stream = stream
        self.throttled = 0
        self._clock = clock
        self._started = clock()

    def line(self, report: IngestReport, processing: int) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        done = report.finished
        rate = done / elapsed
        if self.total is not None and rate > 0:
            eta = f"{max(self.total - done, 0) / rate:.0f}s"
        else:
            eta = "?"
        of = f"/{self.total}" if self.total is not None else ""
        return (
            f"stats: done {done}{of} active {report.active} failed {report.failed} "
            f"skipped {report.skipped} planned {report.planned} processing {processing} "
            f"rate {rate:.2f} items/s 429s {self.throttled} elapsed {elapsed:.1f}s eta {eta}"
        )

    def write(self, report: IngestReport, processing: int, console: Console | None) -> None:
        text = self.line(report, processing)
        if console is not None:  # the bar is live: print above it
            console.print(Text(text), soft_wrap=True)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    async def loop(
        self,
        report: Callable[[], IngestReport],
        processing: Callable[[], int],
        console: Console | None,
    ) -> None:
        """Write a line every ``interval`` s until cancelled (above the bar when
        ``console`` is the live bar's)."""
        while True:
            await anyio.sleep(self.interval)
            self.write(report(), processing(), console)


# --- the summary --------------------------------------------------------------------------------


def report_json(report: IngestReport, group_id: str, journal: Path | None) -> dict[str, Any]:
    """The ``--json`` summary of an ingest."""
    would_create = group_id.startswith("(would create group ")
    return {
        "group_id": None if would_create else group_id,
        "would_create_group": group_id[20:-1] if would_create else None,
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
        "ignored": report.ignored,
        "ignored_reasons": report.ignored_reasons,
        "staging": dataclasses.asdict(report.staging) if report.staging else None,
    }


def summary(console: Console, report: IngestReport, group_id: str, journal: Path | None) -> None:
    """The summary table on stderr."""
    table = Table(title=Text(plain(f"ingest into {group_id}")), show_header=False)
    rows = [
        ("items", report.total),
        (Outcome.ACTIVE.value, report.active),
        (Outcome.FAILED.value, report.failed),
        (f"  of which {Outcome.RETRYABLE} (rerun)", report.retryable),
        (Outcome.SKIPPED.value, report.skipped),
        *ignored_rows(report),
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
