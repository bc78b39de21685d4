"""Shared plumbing of the benchmark scripts: arguments, a table, the JSONL record.

Every script measures the product against a peer in the same run and prints ratios
(absolute times on a shared 2-core machine are noise), then one verdict line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    p.add_argument("--no-record", action="store_true", help="don't append to results/")
    return p


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident set size, in MiB (from /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return rss_mb()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def record(name: str, args: argparse.Namespace, data: dict[str, Any], verdict: str) -> None:
    """Print the verdict line and append the run to ``results/<name>.jsonl``."""
    print(verdict)
    if getattr(args, "no_record", False):
        return
    RESULTS.mkdir(exist_ok=True)
    line = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": name,
        "quick": bool(getattr(args, "quick", False)),
        "machine": machine(),
        **data,
        "verdict": verdict,
    }
    with (RESULTS / f"{name}.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
        self.cpu_used = time.process_time() - self.cpu


def die(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)
