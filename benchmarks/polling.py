"""Polling cost: status calls per asset and detection latency, ours vs per-asset GetAsset.

N URL items (300; ``--quick`` 60) with 30 assets Processing at a time, at mean processing
times P = 1 s, 10 s and 60 s (uniform in ``[P/2, 3P/2]``), against the emulator in its own
process (strict sliding-window limiter, 30-Processing cap, media validation off).

Detection latency of an asset: from the moment the service made it Active (the audit's
``finished_t``) to the moment the client knows — for ours, when ``open_ingest`` yields its
result; for the peers, when the GetAsset answer saying Active arrives. The audit's times are
seconds on the emulator child's monotonic clock since it started; the child reports that
origin on ``time.monotonic()`` (system-wide on Linux), so both ends are on one clock.

Time scale: ``time_scale = clamp(P, 1, 30)`` (P = 60 s runs in 2 real seconds). Every
duration is converted back by multiplying real seconds by ``time_scale`` ("unscaled"). The
peers' 3 s and 1 s poll intervals are divided by the same factor, and so are our ingest's
time knobs (poll interval clamp, stale check; see ``_service.scaled_options``), so each side
polls as it would against the real service. Request round trips do not scale: they weigh
``time_scale`` times more in unscaled latencies (pessimistic for everyone alike).

Contenders, each against a fresh emulator:

* ours — ``open_ingest`` on the client's watcher (one ListAssets per tick over recently
  finished assets, sorted by UpdateTime);
* ours ignore_sort / ours freeze_update_time — the same against an emulator that ignores
  ``SortBy``/``SortOrder`` or never moves ``UpdateTime``: the watcher notices at run time and
  switches to its robust sweep (the Processing listing plus a GetAsset per finished asset);
* GetAsset/3 s — the seeds' ``poll_asset_active``: 30 workers, each creates an asset, asks
  GetAsset at once and every 3 s until it is terminal, then takes the next item;
* GetAsset/1 s — the same every second.

Targets: ours ≤ 1/5 of the seeds' (3 s) calls per asset, and a median detection latency
≤ max(250 ms, P/10) (unscaled); against each misbehaving server, an end-to-end time within
1.2× of the well-behaved run ("× ours" column).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

from _common import Timer, parser, record, table
from _peers import poll_workers
from _service import Service, scaled_options, service

from chenyu_assets.batch import SourceItem, open_ingest
from chenyu_assets.limits import ACTION_RATES, MAX_PROCESSING

CALLS_TARGET = 1 / 5  # of the seeds' calls per asset
RUN_TIMEOUT = 900.0  # real seconds: a contender that takes longer is a bug, not a result
PEER_INTERVALS = {"GetAsset/3 s": 3.0, "GetAsset/1 s": 1.0}
#: our ingest against servers that misbehave (an EmulatorConfig switch each)
SWITCHES = {"ours ignore_sort": "ignore_sort", "ours freeze_update_time": "freeze_update_time"}
WALL_TARGET = 1.2  # × the well-behaved run's end-to-end time


def time_scale(p: float) -> float:
    return min(max(p, 1.0), 30.0)


def latency_target(p: float) -> float:
    return max(0.25, p / 10)


async def run_ours(svc: Service, n: int, group: str) -> tuple[dict[str, float], dict[str, Any]]:
    items = [SourceItem(key=f"item-{i:06d}", path=None, url=svc.media_url) for i in range(n)]
    seen: dict[str, float] = {}
    async with (
        svc.ark() as ark,
        open_ingest(ark, items, group_id=group, options=scaled_options(svc.time_scale)) as run,
    ):
        async for result in run:
            if result.asset_id:
                seen[result.asset_id] = time.monotonic()
    report = run.report
    if report.fatal:
        raise RuntimeError(f"ours: fatal: {report.fatal}")
    extra = {
        "client_status_calls_per_asset": report.status_calls_per_asset,
        "client_429": report.rate_limited,
    }
    return seen, extra


async def run_peer(
    svc: Service, n: int, group: str, interval: float, p: float
) -> tuple[dict[str, float], dict[str, Any]]:
    scale = svc.time_scale
    items = [(f"item-{i:06d}", svc.media_url) for i in range(n)]
    stats = await poll_workers(
        svc.gateway_url,
        svc.api_key,
        items,
        group_id=group,
        interval=interval / scale,
        concurrency=MAX_PROCESSING,
        create_rate=ACTION_RATES["CreateAsset"] * scale,
        get_rate=ACTION_RATES["GetAsset"] * scale,
        retry_sleep=1.0 / scale,
        timeout=(20 * (n / MAX_PROCESSING + 1) * (p + interval)) / scale,
    )
    return stats.seen_done, {"client_429": stats.http_429, "timed_out": stats.timed_out}


async def contender(kind: str, p: float, n: int) -> dict[str, Any]:
    scale = time_scale(p)
    config = {
        "time_scale": scale,
        "processing_delay": p,
        "processing_jitter": p / 2,
        "validate_media": False,
    }
    if kind in SWITCHES:
        config[SWITCHES[kind]] = True
    async with asyncio.timeout(RUN_TIMEOUT), service(**config) as svc:
        async with svc.ark() as ark:
            group = await ark.create_asset_group(name=f"bench-{kind}")
        with Timer() as timer:
            if kind == "ours" or kind in SWITCHES:
                seen, extra = await run_ours(svc, n, group)
            else:
                seen, extra = await run_peer(svc, n, group, PEER_INTERVALS[kind], p)
        audit = await svc.audit()
    latencies = sorted(
        scale * (seen[a.id] - svc.client_time(a.finished_t))
        for a in audit.assets
        if a.id in seen and a.finished_t is not None
    )
    status_calls = audit.count("GetAsset") + audit.count("ListAssets")
    done = len(latencies)
    return {
        "contender": kind,
        "p": p,
        "n": n,
        "time_scale": scale,
        "wall": timer.elapsed,
        "wall_unscaled": timer.elapsed * scale,
        "cpu": timer.cpu_used,
        "active": sum(a.status == "Active" for a in audit.assets),
        "detected": done,
        "status_calls": status_calls,
        "status_calls_per_asset": status_calls / n,
        "list_calls": audit.count("ListAssets"),
        "get_calls": audit.count("GetAsset"),
        "rejected_429": sum(audit.rejected_429.values()),
        "latency_median": statistics.median(latencies) if latencies else None,
        "latency_p95": latencies[int(0.95 * (done - 1))] if latencies else None,
        "latency_max": latencies[-1] if latencies else None,
        "latency_min": latencies[0] if latencies else None,
        **extra,
        "ok": done == n,
    }


async def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, help="items per run (default 300, quick 60)")
    p.add_argument("--p", type=float, nargs="+", default=[1.0, 10.0, 60.0], help="mean P, s")
    args = p.parse_args()
    n = args.n or (60 if args.quick else 300)
    runs: list[dict[str, Any]] = []
    for mean_p in args.p:
        for kind in ("ours", *SWITCHES, *PEER_INTERVALS):
            print(f"… P={mean_p:g} s {kind}", file=sys.stderr, flush=True)
            runs.append(await contender(kind, mean_p, n))

    rows = []
    checks: list[tuple[float, bool, bool]] = []
    for r in runs:
        seeds = next(x for x in runs if x["p"] == r["p"] and x["contender"] == "GetAsset/3 s")
        ours_r = next(x for x in runs if x["p"] == r["p"] and x["contender"] == "ours")
        calls_ratio = r["status_calls_per_asset"] / seeds["status_calls_per_asset"]
        wall_ratio = r["wall_unscaled"] / ours_r["wall_unscaled"]
        note = []
        if r["contender"] in SWITCHES:
            wall_ok = wall_ratio <= WALL_TARGET and r["ok"]
            checks.append((r["p"], wall_ok, True))
            note.append("time " + ("PASS" if wall_ok else f"MISS (target ≤ {WALL_TARGET:g}×)"))
        if not r["ok"]:
            note.append(f"ONLY {r['detected']}/{r['n']} DETECTED")
        if r["contender"] == "ours":
            calls_ok = calls_ratio <= CALLS_TARGET
            lat_ok = r["latency_median"] is not None and r["latency_median"] <= latency_target(
                r["p"]
            )
            checks.append((r["p"], calls_ok and r["ok"], lat_ok))
            note.append("calls " + ("PASS" if calls_ok else f"MISS (target ≤ {CALLS_TARGET:g})"))
            note.append(
                "latency "
                + ("PASS" if lat_ok else "MISS")
                + f" (target ≤ {latency_target(r['p']):g} s)"
            )
        rows.append(
            [
                r["contender"],
                f"{r['p']:g}",
                f"{r['time_scale']:g}",
                r["status_calls_per_asset"],
                calls_ratio,
                r["latency_median"],
                r["latency_p95"],
                r["latency_median"] / seeds["latency_median"] if seeds["latency_median"] else "",
                r["rejected_429"],
                r["wall_unscaled"],
                wall_ratio,
                "; ".join(note),
            ]
        )
    print(
        table(
            [
                "contender",
                "P s",
                "scale",
                "status calls/asset",
                "× seeds",
                "latency median s",
                "latency p95 s",
                "× seeds",
                "429s",
                "wall s",
                "× ours",
                "note",
            ],
            rows,
        )
    )
    print(
        f"(N = {n}, 30 Processing at a time; unscaled seconds = real × scale; "
        "seeds = GetAsset/3 s; processing uniform in [P/2, 3P/2])"
    )
    passed = all(c and lat for _, c, lat in checks)
    ours = [r for r in runs if r["contender"] == "ours"]
    switched = [r for r in runs if r["contender"] in SWITCHES]

    def ours_of(r: dict[str, Any]) -> dict[str, Any]:
        return next(x for x in ours if x["p"] == r["p"])

    def seeds_of(r: dict[str, Any]) -> dict[str, Any]:
        return next(x for x in runs if x["p"] == r["p"] and x["contender"] == "GetAsset/3 s")

    verdict = (
        f"polling {'PASS' if passed else 'MISS'}: ours uses "
        + "/".join(
            f"{r['status_calls_per_asset'] / seeds_of(r)['status_calls_per_asset']:.2f}×"
            for r in ours
        )
        + " the seeds' status calls per asset and detects in a median of "
        + "/".join(f"{r['latency_median']:.2f}" for r in ours)
        + " s at P="
        + "/".join(f"{r['p']:g}" for r in ours)
        + f" s (targets ≤ {CALLS_TARGET:g}×, ≤ max(0.25 s, P/10)); misbehaving servers: "
        + ", ".join(
            f"{r['contender'].removeprefix('ours ')} P={r['p']:g} "
            f"{r['wall_unscaled'] / ours_of(r)['wall_unscaled']:.2f}× the time"
            for r in switched
        )
        + f" (target ≤ {WALL_TARGET:g}×)"
    )
    record("polling", args, {"n": n, "runs": runs}, verdict)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        start = time.perf_counter()
        code = asyncio.run(main())
        print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        sys.exit(code)
