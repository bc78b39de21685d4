"""Create pacing: how close to the CreateAsset limit does each limiter get, and does a strict
sliding-window server ever refuse it?

Every row drives the same signed CreateAsset requests through the same ``ArkClient`` (same
retries, same reaction to a 429) against the emulator in its own process (processing
instant and uncapped, so only the rate limit can refuse), once per server model
(``--models``: ``sliding`` strict window, ``fixed`` one-second windows, ``bucket`` token
bucket of 2). Only the limiter the client waits on differs: ours (``ArkClient()`` as is:
the send-time ``WindowLimiter``) or a peer plugged in with ``limiter_factory``. Each row is
its own client process and emulator account; rows start together, four at a time
(busy-loop rows two at a time; ``--side-by-side N``), so rows of a batch see the same machine.

Scenarios: 200 tasks fan out ``--calls`` creates with 0 / 5 / 20 ms of send jitter (a random
sleep in [0, J] between the limiter's grant and the send: ours stamps after it, as the
engine does after building the request); the same while the event loop is busy (a task
burning 2 ms of CPU every 5 ms); Poisson arrivals at the limit.

Table: one row per limiter. A cell is the achieved rate / limit as the server saw it
(accepted creates over the span first→last accepted) and, in brackets, the 429s it
answered (the client retries them). ``bare rate`` is the limiter's own grant rate / limit and
``cpu/acq`` its process CPU per acquire (µs), both from a network-free run; ``max/1s`` is
the most creates accepted in any one-second window; ``failed`` calls that gave up.

    python benchmarks/pacing.py            # 2,000 calls per row, every limiter and scenario
    python benchmarks/pacing.py --quick    # 200 calls per row, fewer rows; under a minute
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import die, parser, record, table
from _server import ServerProcess, account, revision

from chenyu_assets import ArkClient
from chenyu_assets._core.ratelimit import Grant, Limiter, Rate, WindowLimiter
from chenyu_assets.emulator import Audit
from chenyu_assets.errors import ChenyuAssetsError
from chenyu_assets.limits import ACTION_RATES

MODELS = ("sliding", "fixed", "bucket")

PUBLISHED = ACTION_RATES["CreateAsset"]  # 30 / s
TASKS = 200
TARGET = 0.985
ROW_TIMEOUT = 900.0
#: rows run at once: all at once puts 8 clients + the server on 2 cores, and the extra
#: arrival jitter alone brings 429s to a limiter at 0.99 of the limit
SIDE_BY_SIDE = 4
#: busy-loop rows burn 40 % of a core each: at most this many side by side on 2 cores
BUSY_SIDE_BY_SIDE = 2

AcquireFn = Callable[[], Awaitable[Any]]
PauseFn = Callable[[float], Awaitable[None]]


# -- the limiters under test ------------------------------------------------------------------


class _Sent:
    """A peer's grant: nothing to stamp."""

    async def send(self) -> None:
        pass

    def answered(self) -> None:
        pass

    def cancel(self) -> None:
        pass


class Paced:
    """Adapts a peer's acquire() to the client's ``Limiter`` protocol and adds the send
    jitter. A peer cannot be told of a 429, so new acquires wait out the pause here while
    tasks already queued inside the peer carry on: what a user of that peer gets."""

    def __init__(self, acquire: AcquireFn, *, jitter: float, rng: random.Random) -> None:
        self._acquire = acquire
        self._jitter = jitter
        self._rng = rng
        self._paused_until = 0.0

    async def acquire(self) -> Grant:
        loop = asyncio.get_running_loop()
        while (wait := self._paused_until - loop.time()) > 0:
            await asyncio.sleep(wait)
        await self._acquire()
        if self._jitter > 0:
            await asyncio.sleep(self._rng.uniform(0.0, self._jitter))
        return _Sent()

    async def pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._paused_until = max(self._paused_until, loop.time() + seconds)


class _LateGrant:
    def __init__(self, grant: Grant, delay: float) -> None:
        self._grant, self._delay = grant, delay

    async def send(self) -> None:
        await asyncio.sleep(self._delay)  # the jitter lies between the grant and the stamp
        await self._grant.send()

    def answered(self) -> None:
        self._grant.answered()

    def cancel(self) -> None:
        self._grant.cancel()


class Jittered:
    """Ours, untouched, with the send jitter between its grant and its stamp."""

    def __init__(self, inner: Limiter, *, jitter: float, rng: random.Random) -> None:
        self._inner, self._jitter, self._rng = inner, jitter, rng

    async def acquire(self) -> Grant:
        grant = await self._inner.acquire()
        return _LateGrant(grant, self._rng.uniform(0.0, self._jitter))

    async def pause(self, seconds: float) -> None:
        await self._inner.pause(seconds)


def _aiolimiter_capacity(limit: float) -> tuple[AcquireFn, None]:
    from aiolimiter import AsyncLimiter

    return AsyncLimiter(limit, 1).acquire, None


def _aiolimiter_one(limit: float) -> tuple[AcquireFn, None]:
    from aiolimiter import AsyncLimiter

    return AsyncLimiter(1, 1 / limit).acquire, None


def _pyrate(limit: float) -> tuple[AcquireFn, None]:
    from pyrate_limiter import Duration, Limiter, Rate

    lim = Limiter(Rate(int(limit), Duration.SECOND))

    async def acquire() -> None:
        if not await lim.try_acquire_async("bench"):
            raise RuntimeError("pyrate-limiter refused a blocking acquire")

    return acquire, None


def _limits(strategy: str) -> Callable[[float], tuple[AcquireFn, None]]:
    def make(limit: float) -> tuple[AcquireFn, None]:
        from limits import RateLimitItemPerSecond
        from limits.aio.storage import MemoryStorage
        from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

        cls = MovingWindowRateLimiter if strategy == "moving" else FixedWindowRateLimiter
        lim = cls(MemoryStorage())
        item = RateLimitItemPerSecond(int(limit))

        async def acquire() -> None:
            # `limits` only answers yes / no; its documented pattern: hit, else sleep
            # until the window's reset time and try again.
            while not await lim.hit(item, "bench"):
                stats = await lim.get_window_stats(item, "bench")
                await asyncio.sleep(max(0.001, stats.reset_time - time.time()))

        return acquire, None

    return make


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    #: a peer: ``make(limit)`` -> (acquire, None); None for ours
    make: Callable[[float], tuple[AcquireFn, None]] | None = None


KINDS = [
    Kind("ours", "ours: ArkClient() default (WindowLimiter)"),
    Kind("aio_cap", "aiolimiter AsyncLimiter(limit, 1)", _aiolimiter_capacity),
    Kind("aio_one", "aiolimiter AsyncLimiter(1, 1/limit)", _aiolimiter_one),
    Kind("pyrate", "pyrate-limiter Limiter(Rate(limit, SECOND))", _pyrate),
    Kind("limits_mw", "limits moving-window, memory (poll to reset)", _limits("moving")),
    Kind("limits_fw", "limits fixed-window, memory (poll to reset)", _limits("fixed")),
]
KIND = {k.key: k for k in KINDS}


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    jitter: float = 0.0
    busy: bool = False
    poisson: float | None = None  # offered load, as a multiple of the limit


SCENARIOS = [
    Scenario("j0", "fan-out, 0 ms jitter"),
    Scenario("j5", "fan-out, 5 ms jitter", jitter=0.005),
    Scenario("j20", "fan-out, 20 ms jitter", jitter=0.020),
    Scenario("busy", "fan-out, busy loop", busy=True),
    Scenario("poisson", "Poisson at 1.0×limit", poisson=1.0),
]
SCENARIO = {s.key: s for s in SCENARIOS}


# -- one row (runs in its own process) -------------------------------------------------------


def _client(acct: dict[str, str], url: str, kind: Kind, limit: float, jitter: float, seed: int):
    """The ArkClient of one row: the same client everywhere, only the limiter differs."""
    rng = random.Random(seed)
    rates = {"CreateAsset": limit, "CreateAssetGroup": limit}
    common = {"access_key": acct["access_key"], "secret_key": acct["secret_key"], "base_url": url}
    if kind.key == "ours":
        if jitter == 0:  # the registry's own WindowLimiter, untouched
            return ArkClient(**common, rates=rates)

        def ours(endpoint: str, rate: Rate, *, margin: float) -> Limiter:
            window = WindowLimiter(rate, margin=margin)  # what ArkClient() builds
            if endpoint != "CreateAsset":
                return window
            return Jittered(window, jitter=jitter, rng=rng)

        return ArkClient(**common, rates=rates, limiter_factory=ours)

    def other(endpoint: str, rate: Rate, *, margin: float) -> Limiter:
        if endpoint != "CreateAsset":
            return WindowLimiter(rate, margin=margin)
        assert kind.make is not None
        acquire, _ = kind.make(limit)
        return Paced(acquire, jitter=jitter, rng=rng)

    return ArkClient(**common, rates=rates, limiter_factory=other)


async def _busy(stop: asyncio.Event) -> None:
    """~2 ms of CPU every 5 ms on the client's event loop."""
    while not stop.is_set():
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0.003)


async def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    kind, sc = KIND[spec["kind"]], SCENARIO[spec["scenario"]]
    limit, calls, seed, url = spec["limit"], spec["calls"], spec["seed"], spec["url"]
    ark = _client(spec["account"], url, kind, limit, sc.jitter, seed)
    media = url + "/_emulator/media/png/800x800.png"
    failures: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()
    async with ark:
        group = await ark.create_asset_group(name=f"pacing-{kind.key}-{sc.key}")
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        if spec.get("wait_for_go"):
            # Every row of a batch is imported, connected and warm before any starts.
            print("ready", flush=True)
            sys.stdin.readline()

        async def worker() -> None:
            while (i := await queue.get()) is not None:
                try:
                    await ark.create_asset(group_id=group, url=media, name=f"a{i:05d}")
                except ChenyuAssetsError as exc:
                    failures[type(exc).__name__] += 1

        async def produce() -> None:
            if sc.poisson is None:
                for i in range(calls):
                    queue.put_nowait(i)
            else:
                rng = random.Random(spec["arrival_seed"])  # same arrivals for every row
                loop = asyncio.get_running_loop()
                due = loop.time()
                for i in range(calls):
                    due += rng.expovariate(limit * sc.poisson)
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    queue.put_nowait(i)
            for _ in range(TASKS):
                queue.put_nowait(None)

        busy = asyncio.create_task(_busy(stop)) if sc.busy else None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(ROW_TIMEOUT), asyncio.TaskGroup() as tg:
                tg.create_task(produce())
                for _ in range(TASKS):
                    tg.create_task(worker())
        finally:
            stop.set()
            if busy is not None:
                await busy
        wall = time.perf_counter() - started
        stats = ark.stats
    out: dict[str, Any] = {
        "wall_s": wall,
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "retries": stats.retries,
        "client_429": stats.rate_limited,
    }
    return out


async def dry_run(kind: Kind, limit: float, seconds: float) -> tuple[float, float]:
    """(CPU per acquire in µs, grant rate / limit) of the bare limiter: 200 tasks acquiring
    for ``seconds`` with no network, on a quiet loop. A first burst is not counted; the rate
    is taken over the span first→last grant, or over the window for a bursty limiter."""
    if kind.key == "ours":
        window = WindowLimiter(Rate.per_second(limit))

        async def acquire() -> None:
            grant = await window.acquire()
            await grant.send()
            grant.answered()

    else:
        assert kind.make is not None
        acquire = kind.make(limit)[0]
    grants: list[float] = []
    loop = asyncio.get_running_loop()

    async def task() -> None:
        while True:
            await acquire()
            grants.append(loop.time())

    tasks = [asyncio.create_task(task()) for _ in range(TASKS)]
    await asyncio.sleep(0.5)  # every task is waiting; a first burst is not counted
    first = len(grants)
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    used, times = time.process_time() - cpu, grants[first:]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if len(times) < 2:
        return float("nan"), 0.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if min(gaps) > 0.2 / limit:  # paced: the span first→last grant is the precise measure
        rate = (len(times) - 1) / (times[-1] - times[0])
    else:  # grants in bursts: count them over the whole window
        rate = len(times) / seconds
    return used / len(times) * 1e6, rate / limit


def _row_main(spec_json: str) -> None:
    logging.getLogger("chenyu_assets").addHandler(logging.NullHandler())
    logging.getLogger("chenyu_assets").propagate = False
    spec = json.loads(spec_json)
    if "dry_seconds" in spec:
        if spec.get("wait_for_go"):
            print("ready", flush=True)
            sys.stdin.readline()
        cpu, rate = asyncio.run(dry_run(KIND[spec["kind"]], spec["limit"], spec["dry_seconds"]))
        result = {"dry_cpu_per_acquire_us": cpu, "dry_rate_over_limit": rate}
    else:
        result = asyncio.run(run_row(spec))
    print(json.dumps(result), flush=True)


# -- the driver ------------------------------------------------------------------------------


def server_view(audit: Audit, acct: str, limit: float) -> dict[str, Any]:
    mine = [r for r in audit.requests if r.action == "CreateAsset" and r.account == acct]
    times = sorted(r.t for r in mine if 200 <= r.status < 300)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    rate = (len(times) - 1) / span if span > 0 else 0.0
    return {
        "accepted": len(times),
        "rate_over_limit": rate / limit,
        "rejected_429": sum(1 for r in mine if r.status == 429),
        "max_in_window": audit.max_in_window("CreateAsset", 1.0, account=acct),
    }


def run_batch(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run row processes side by side, started together once all are ready."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--row", json.dumps({**spec, "wait_for_go": True})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    results = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a row process failed to start (exit {proc.wait()})")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=ROW_TIMEOUT + 60)
            lines = out.strip().splitlines()
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"a row process failed (exit {proc.returncode})")
            results.append(json.loads(lines[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _target(scenario: str) -> float:
    """The issue's bar: 0.985 at 0 ms jitter and on a busy loop, 0.98 at 5 and 20 ms."""
    return TARGET if scenario in ("j0", "busy") else 0.98


def _verdict(results: list[dict[str, Any]], bare: dict[str, Any]) -> str:
    """Per server model and fan-out scenario: ours reaches the bar with 0 × 429 and is not
    below the best peer's rate among peers that also had 0 × 429."""
    ours = [r for r in results if r["limiter"] == "ours" and r["scenario"] != "poisson"]
    if not ours:
        return "pacing: no verdict — the default ArkClient row was not run"
    misses = []
    for r in ours:
        peers = [
            p["rate_over_limit"]
            for p in results
            if p["limiter"] != "ours"
            and (p["model"], p["scenario"]) == (r["model"], r["scenario"])
            and p["rejected_429"] == 0
        ]
        rate, n429 = r["rate_over_limit"], r["rejected_429"]
        if rate < _target(r["scenario"]) or n429 or rate < max(peers, default=0.0):
            misses.append(f"{r['model']} {r['scenario']} {rate:.3f} ({n429})")
    why = (
        f"; bare limiter {bare['ours']['dry_rate_over_limit']:.3f} × limit"
        if "ours" in bare
        else ""
    )
    if misses:
        return (
            f"pacing: MISSED in {len(misses)}/{len(ours)} cells (bar 0.985 at j0/busy, 0.98 at "
            f"j5/j20, 0 × 429, not below a 429-free peer): {', '.join(misses)}{why}"
        )
    return f"pacing: MET in all {len(ours)} cells (every server model and fan-out scenario){why}"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--row":
        _row_main(sys.argv[2])
        return
    p = parser(__doc__.split("\n\n", 1)[0])
    p.add_argument("--calls", type=int, help="creates per row (default 2000; quick 200)")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulator time_scale; the limit and every client limiter are multiplied by it "
        "(default 1, the real limits: a loop wakes timers ~1 ms late whatever the rate, so "
        "at 10× the same loss is 10× larger and rows are not comparable with the target)",
    )
    p.add_argument(
        "--side-by-side",
        type=int,
        default=SIDE_BY_SIDE,
        metavar="N",
        help=f"rows run at once (default {SIDE_BY_SIDE}; busy-loop rows at most "
        f"{BUSY_SIDE_BY_SIDE}; 1 = one at a time)",
    )
    p.add_argument("--limiters", help=f"comma list of rows to run, of: {','.join(KIND)}")
    p.add_argument("--scenarios", help=f"comma list of scenarios, of: {','.join(SCENARIO)}")
    p.add_argument("--models", help=f"comma list of server models, of: {','.join(MODELS)}")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    calls = args.calls or (200 if args.quick else 2000)
    if calls < 50:
        die("--calls must be at least 50")
    scale = args.time_scale
    limit = PUBLISHED * scale
    if args.quick:
        kinds = [KIND[k] for k in ("ours", "aio_one", "aio_cap")]
        scenarios = [SCENARIO[s] for s in ("j0", "j5", "j20", "busy")]
    else:
        kinds, scenarios = KINDS, SCENARIOS
    try:
        if args.limiters:
            kinds = [KIND[k] for k in args.limiters.split(",")]
        if args.scenarios:
            scenarios = [SCENARIO[k] for k in args.scenarios.split(",")]
    except KeyError as exc:
        die(f"unknown limiter or scenario: {exc}")
    models = args.models.split(",") if args.models else list(MODELS)
    if not set(models) <= set(MODELS):
        die(f"unknown server model in {args.models}")
    cells = [(m, sc) for m in models for sc in scenarios]

    accounts = [account(i + 1) for i in range(len(kinds) * len(cells))]
    config = {
        "time_scale": scale,
        "validate_media": False,
        "processing_delay": 0.0,
        "processing_jitter": 0.0,
        "max_processing": 10**9,
        "accounts": accounts,
        "audit_max_requests": 10**6,
    }
    width = max(1, args.side_by_side)
    mode = "one at a time" if width == 1 else f"{width} at a time"
    print(
        f"pacing [{revision()}]: {calls} CreateAsset calls per row from {TASKS} tasks; "
        f"emulator time_scale "
        f"{scale:g}, limit {limit:g}/s; server models {', '.join(models)}; rows run {mode}",
        flush=True,
    )
    dry_seconds = 2.0 if args.quick else 4.0
    results: list[dict[str, Any]] = []
    # The bare limiters first, side by side (same conditions), no network.
    dry = run_batch([{"kind": k.key, "limit": limit, "dry_seconds": dry_seconds} for k in kinds])
    bare = {k.key: out for k, out in zip(kinds, dry, strict=True)}
    n = 0
    for model in models:
        with ServerProcess({**config, "window": model}) as server:
            for sc in scenarios:
                specs = []
                for kind in kinds:
                    specs.append(
                        {
                            "url": server.url,
                            "account": accounts[n],
                            "kind": kind.key,
                            "scenario": sc.key,
                            "limit": limit,
                            "calls": calls,
                            "seed": args.seed * 1000 + n,
                            "arrival_seed": args.seed,
                        }
                    )
                    n += 1
                n_at_once = min(width, BUSY_SIDE_BY_SIDE) if sc.busy else width
                outs: list[dict[str, Any]] = []
                for b in range(0, len(specs), n_at_once):
                    outs += run_batch(specs[b : b + n_at_once])
                audit = server.audit()
                for spec, out in zip(specs, outs, strict=True):
                    view = server_view(audit, spec["account"]["name"], limit)
                    res = {"model": model, "scenario": sc.key, "limiter": spec["kind"]}
                    results.append({**res, **view, **out})
                    print(
                        f"  {model:<8} {sc.label:<22} {KIND[spec['kind']].label:<46} "
                        f"{view['rate_over_limit']:.3f}  429s {view['rejected_429']:>4}  "
                        f"max/1s {view['max_in_window']}  failed {out['failed']}",
                        flush=True,
                    )
    by = {(r["limiter"], r["model"], r["scenario"]): r for r in results}
    headers = ["limiter", "bare rate", "cpu/acq µs"]
    headers += [f"{m} {SCENARIO[s.key].key}" for m, s in cells] + ["max/1s", "failed"]
    rows: list[list[Any]] = []
    for kind in kinds:
        mine = [by[(kind.key, m, sc.key)] for m, sc in cells]
        rows.append(
            [
                kind.label,
                round(bare.get(kind.key, {}).get("dry_rate_over_limit", float("nan")), 3),
                round(bare.get(kind.key, {}).get("dry_cpu_per_acquire_us", float("nan")), 1),
                *(f"{r['rate_over_limit']:.3f} ({r['rejected_429']})" for r in mine),
                f"{max(r['max_in_window'] for r in mine)}/{limit:g}",
                sum(r["failed"] for r in mine),
            ]
        )
    print()
    print(
        "cells: achieved rate / limit at the server (429s answered); bare rate = the "
        "limiter's grant rate / limit with no network; target for ours: "
        f"≥ {TARGET} and (0) in every fan-out column"
    )
    print(table(headers, rows))
    verdict = _verdict(results, bare)
    data = {
        "calls": calls,
        "time_scale": scale,
        "limit": limit,
        "side_by_side": width,
        "models": models,
        "loadavg": os.getloadavg(),
        "revision": revision(),
        "rows": results,
    }
    record("pacing", args, data, verdict)


if __name__ == "__main__":
    main()
