"""Scale of input: journal and orchestrate a huge manifest in dry-run mode, in flat memory.

A JSONL manifest of URL items (1,000,000 rows and 100,000 rows; ``--quick``: 100,000 and
10,000) is written to a temporary directory line by line, then each size is ingested with
``IngestOptions(dry_run=True)`` in its own subprocess, so each has its own peak RSS: every
row is read, validated, registered in the SQLite journal and reported ``planned``; nothing
is sent. The ArkClient has dummy credentials and a base URL on a local listener that counts
connections: the run must open none.

Peer (a reference for memory, not a like-for-like: it journals nothing): what a script
without this library does first, ``items = [json.loads(line) for line in manifest]``, then a
loop over the list.

Targets: peak RSS ≤ 300 MB at the largest size, and peak RSS at 1 M ≤ 1.5 × at 100 k
(``--quick`` checks the same ratio between 100 k and 10 k, and cannot check 1 M).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Timer, current_rss_mb, parser, record, rss_mb, table

PEAK_TARGET_MB = 300.0
GROWTH_TARGET = 1.5
CHILD_TIMEOUT = 1800.0


def write_manifest(path: Path, n: int) -> float:
    """Write ``n`` URL rows, one buffered line at a time; returns the seconds it took."""
    start = time.perf_counter()
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(
                f'{{"key": "clip-{i:07d}", "url": "https://media.example.com/bench/{i:07d}.png"}}\n'
            )
    return time.perf_counter() - start


# -- the children -------------------------------------------------------------------------


async def child_ours(manifest: Path) -> dict[str, Any]:
    from chenyu_assets.ark import ArkClient
    from chenyu_assets.batch import IngestOptions, IngestResult, ingest

    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    baseline = current_rss_mb()
    samples: list[tuple[int, float]] = []
    done = 0

    def on_result(result: IngestResult) -> None:
        nonlocal done
        done += 1
        if done % 50_000 == 0 or done in (10_000, 25_000):
            samples.append((done, current_rss_mb()))

    ark = ArkClient(
        access_key="AKLTZHJ5LXJ1bi1kdW1teQ",
        secret_key="ZHJ5LXJ1bi1kdW1teS1zZWNyZXQ=",  # a dummy, never sent
        base_url=f"http://127.0.0.1:{port}",
    )
    with tempfile.TemporaryDirectory(prefix="chenyu-scale-") as tmp:
        journal = Path(tmp) / "journal.db"
        async with ark:
            with Timer() as timer:
                report = await ingest(
                    ark,
                    manifest,
                    group_id="group-dry-run",
                    journal=journal,
                    options=IngestOptions(dry_run=True),
                    on_result=on_result,
                )
        journal_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
    await asyncio.sleep(0.1)  # let a late connection, if any, be counted
    server.close()
    await server.wait_closed()
    return {
        "items": report.total,
        "planned": report.planned,
        "skipped": report.skipped,
        "fatal": report.fatal,
        "elapsed": timer.elapsed,
        "cpu": timer.cpu_used,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb(),
        "rss_samples": samples,
        "connections": connections,
        "requests": ark.stats.requests,
        "journal_mb": journal_mb,
    }


def child_naive(manifest: Path) -> dict[str, Any]:
    baseline = current_rss_mb()
    with Timer() as timer:
        with manifest.open(encoding="utf-8") as f:
            items = [json.loads(line) for line in f]
        planned = sum(1 for item in items if item.get("url"))
    return {
        "items": len(items),
        "planned": planned,
        "elapsed": timer.elapsed,
        "cpu": timer.cpu_used,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb(),
    }


def run_child(kind: str, manifest: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(manifest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- the parent ---------------------------------------------------------------------------


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", nargs=2, metavar=("KIND", "MANIFEST"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=int, nargs="+", help="manifest sizes (default 100000 1000000)")
    args = p.parse_args()
    if args.child:
        kind, manifest = args.child
        if kind == "ours":
            out = asyncio.run(child_ours(Path(manifest)))
        else:
            out = child_naive(Path(manifest))
        print(json.dumps(out))
        return 0

    sizes = sorted(args.sizes or ([10_000, 100_000] if args.quick else [100_000, 1_000_000]))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chenyu-bench-manifest-") as tmp:
        for n in sizes:
            manifest = Path(tmp) / f"manifest-{n}.jsonl"
            wrote = write_manifest(manifest, n)
            size_mb = manifest.stat().st_size / 2**20
            for kind in ("ours", "naive"):
                print(f"… {n:,} rows {kind}", file=sys.stderr, flush=True)
                result = run_child(kind, manifest)
                runs.append(
                    {
                        "contender": kind,
                        "n": n,
                        "manifest_mb": size_mb,
                        "write_s": wrote,
                        **result,
                    }
                )
            manifest.unlink()

    ours = [r for r in runs if r["contender"] == "ours"]
    small, large = ours[0], ours[-1]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    peak_ok = large["peak_rss_mb"] <= PEAK_TARGET_MB
    growth_ok = growth <= GROWTH_TARGET
    clean = all(r["connections"] == 0 and r["planned"] == r["n"] and not r["fatal"] for r in ours)
    rows = []
    for r in runs:
        same = next(x for x in ours if x["n"] == r["n"])
        note = []
        if r["contender"] == "ours":
            note.append(f"{r['connections']} connections")
            if r is large:
                note.append(f"peak {'PASS' if peak_ok else 'MISS'} (≤ {PEAK_TARGET_MB:g} MB)")
                note.append(
                    f"growth ×{growth:.2f} {'PASS' if growth_ok else 'MISS'} "
                    f"(≤ {GROWTH_TARGET:g} over ×{large['n'] // small['n']} rows)"
                )
        rows.append(
            [
                r["contender"],
                f"{r['n']:,}",
                r["manifest_mb"],
                r["planned"],
                r["elapsed"],
                r["n"] / r["elapsed"],
                r["baseline_rss_mb"],
                r["peak_rss_mb"],
                r["peak_rss_mb"] / same["peak_rss_mb"],
                "; ".join(note),
            ]
        )
    print(
        table(
            [
                "contender",
                "rows",
                "manifest MB",
                "planned",
                "s",
                "items/s",
                "RSS at start MB",
                "peak RSS MB",
                "× ours",
                "note",
            ],
            rows,
        )
    )
    print(
        "(ours: dry-run ingest, journal in SQLite, in its own process; naive: the manifest "
        "read into a list of dicts, nothing journaled)"
    )
    for r in ours:
        if r.get("rss_samples"):
            trail = " ".join(f"{n // 1000}k:{mb:.0f}" for n, mb in r["rss_samples"])
            print(f"ours {r['n']:,} rows, RSS MB as results came out: {trail}")
    passed = peak_ok and growth_ok and clean
    verdict = (
        f"scale {'PASS' if passed else 'MISS'}: {large['n']:,} rows planned in "
        f"{large['elapsed']:.0f} s ({large['n'] / large['elapsed']:,.0f} items/s), peak RSS "
        f"{large['peak_rss_mb']:.0f} MB (target ≤ {PEAK_TARGET_MB:g}), ×{growth:.2f} the peak at "
        f"{small['n']:,} (target ≤ {GROWTH_TARGET:g}), "
        f"{sum(r['connections'] for r in ours)} connections opened; naive list "
        f"{runs[-1]['peak_rss_mb'] / large['peak_rss_mb']:.2f}× our peak"
        + ("" if large["n"] >= 1_000_000 else " (the 1 M targets need the full run)")
    )
    record("scale", args, {"sizes": sizes, "runs": runs}, verdict)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
