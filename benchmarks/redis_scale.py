"""Shared limits in Redis: what one acquire costs, and whether 1, 2, 4 and 8 processes
sharing one window together get the configured rate — no more, and not much less.

A throwaway ``redis-server`` (127.0.0.1, free port, no persistence) is started for the run.
Every row starts N worker processes at the same instant; each runs two phases:

* latency: ``--lat-calls`` acquires, one after another, on a bucket far above any reachable
  rate (so none waits): the cost of one Lua round trip with N processes hammering one key;
* rate: ``TASKS`` tasks per process acquire, send (stamp) and answer in a loop for
  ``--seconds`` on one window shared by all N processes, as ``ArkClient(limits=...)`` does:
  ``--rate`` per second.

Peers, measured in the same run: a plain ``PING`` round trip (the floor of any Redis-based
limiter) and our local ``WindowLimiter`` in one process at the same rate (the precision of
the in-process limiter the Redis one stands in for).

Columns: ``p50/p99 µs`` acquire round trip; ``×ping`` p50 over PING's p50; ``granted/s``
grants per second, first to last grant (all processes); ``/paced`` that over the bucket's
rate; ``max/1s`` most grants in any one-second window (must not exceed ``--rate``).

    python benchmarks/redis_scale.py            # 10 s per row
    python benchmarks/redis_scale.py --quick    # 3 s per row; under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import die, parser, record, table

from chenyu_assets._core.ratelimit import Grant, Rate, WindowLimiter
from chenyu_assets._core.redis_limits import RedisLimits

PROCESSES = (1, 2, 4, 8)
TASKS = 4
ACCOUNT = "benchmark-account"


# -- worker ---------------------------------------------------------------------------------
# Line protocol on stdin/stdout, so every phase starts in every process at once:
# worker "ready" -> parent "go" (latency phase) -> worker "lat <json>" -> parent "go <t>" (rate
# phase until monotonic time t) -> worker "rate <json>".


async def _use(grant: Grant) -> None:
    await grant.send()
    grant.answered()


async def _worker(url: str, prefix: str, rate: float, lat_calls: int) -> None:
    loop = asyncio.get_running_loop()

    async def read() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    def say(text: str) -> None:
        print(text, flush=True)

    limits = RedisLimits(url, account=ACCOUNT, prefix=prefix)
    try:
        await limits.ping()
        fast = limits.limiter("latency", 1e6)
        slow = limits.limiter("rate", rate)
        say("ready")
        await read()
        lat = []
        for _ in range(lat_calls):
            t0 = time.perf_counter()
            await _use(await fast.acquire())
            lat.append(time.perf_counter() - t0)
        say("lat " + json.dumps(lat))
        end = float((await read()).split()[1])
        grants: list[float] = []

        async def run() -> None:
            while True:
                grant = await slow.acquire()
                await grant.send()
                now = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
                grant.answered()
                if now >= end:
                    return
                grants.append(now)

        await asyncio.gather(*(run() for _ in range(TASKS)))
        say("rate " + json.dumps({"grants": grants, "late": 0}))
    finally:
        await limits.aclose()


# -- parent ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        die("redis-server is not installed (apt-get install redis-server)")
        raise AssertionError  # unreachable: die() exits
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(binary, "--bind", "127.0.0.1", "--port", str(port)),
            *("--save", "", "--appendonly", "no", "--dir", directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    die("redis-server did not start")
    raise AssertionError  # unreachable: die() exits


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, t + window, lo=i) - i for i, t in enumerate(times)), default=0
    )


def _row(url: str, n: int, args: Any, prefix: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", url, prefix, str(args.pace), str(args.lat_calls)]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]

    def each(message: str | None) -> list[str]:
        if message is not None:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(message + "\n")
                proc.stdin.flush()
        lines = []
        for proc in procs:
            assert proc.stdout is not None
            lines.append(proc.stdout.readline())
        return lines

    try:
        each(None)  # all ready
        lat = [x for line in each("go") for x in json.loads(line.split(" ", 1)[1])]
        start = time.monotonic() + 0.1
        outs = [json.loads(line.split(" ", 1)[1]) for line in each(f"go {start + args.seconds}")]
    finally:
        for proc in procs:
            proc.wait(timeout=60)
    grants = sorted(x for o in outs for x in o["grants"])
    span = (grants[-1] - grants[0]) if len(grants) > 1 else float("nan")
    rate = (len(grants) - 1) / span
    return {
        "processes": n,
        "p50_us": _pct(lat, 0.5) * 1e6,
        "p99_us": _pct(lat, 0.99) * 1e6,
        "granted_per_s": rate,
        "ratio": rate / args.pace,
        "max_1s": _max_in_window(grants),
        "late": sum(o["late"] for o in outs),
    }


async def _ping_and_local(url: str, calls: int, rate: float, seconds: float) -> tuple[float, float]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        await r.ping()
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await r.ping()
            lat.append(time.perf_counter() - t0)
    finally:
        await r.aclose()
    bucket = WindowLimiter(Rate.per_second(rate))
    end = time.monotonic() + seconds
    count = 0

    async def loop() -> None:
        nonlocal count
        while True:
            await _use(await bucket.acquire())
            if time.monotonic() >= end:
                return
            count += 1

    await asyncio.gather(*(loop() for _ in range(TASKS)))
    return _pct(lat, 0.5) * 1e6, count / seconds


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=200.0, help="the limit (/s) (default 200)")
    p.add_argument("--seconds", type=float, help="rate phase per row (default 10, quick 3)")
    p.add_argument("--lat-calls", type=int, help="latency acquires per process")
    args = p.parse_args()
    if args.worker:
        url, prefix, pace, calls = args.worker
        asyncio.run(_worker(url, prefix, float(pace), int(calls)))
        return
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.lat_calls = args.lat_calls or (200 if args.quick else 2000)
    args.pace = args.rate  # what ArkClient(limits=...) configures
    with tempfile.TemporaryDirectory(prefix="redis-scale-") as tmp:
        server, url = _start_redis(tmp)
        try:
            ping_p50, local_rate = asyncio.run(
                _ping_and_local(url, args.lat_calls, args.pace, args.seconds)
            )
            rows = [_row(url, n, args, f"bench{n}-{os.getpid()}") for n in PROCESSES]
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(
        f"limit {args.rate:g}/s; one shared window; {TASKS} tasks per process; "
        f"{args.seconds:g} s per row"
    )
    print(
        table(
            ["processes", "p50 µs", "p99 µs", "×ping", "granted/s", "/paced", "max/1s", "late"],
            [
                [
                    r["processes"],
                    r["p50_us"],
                    r["p99_us"],
                    r["p50_us"] / ping_p50,
                    r["granted_per_s"],
                    r["ratio"],
                    r["max_1s"],
                    r["late"],
                ]
                for r in rows
            ],
        )
    )
    local = local_rate / args.pace
    print(
        f"peers: PING p50 {ping_p50:.0f} µs; local WindowLimiter (1 process) {local:.3f} of paced"
    )
    lo, hi = min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)
    over = [r["processes"] for r in rows if r["max_1s"] > args.rate]
    ok = lo >= 0.97 and not over
    verdict = (
        f"redis_scale: {'OK' if ok else 'NOT OK'}: 1-8 processes together get {lo:.3f}-{hi:.3f} "
        f"of the paced rate (local bucket {local:.3f}); "
        + (
            f"over the limit in a 1 s window with {over} processes; "
            if over
            else "never over the limit in any 1 s window; "
        )
        + f"acquire p50 {rows[0]['p50_us']:.0f}-{max(r['p50_us'] for r in rows):.0f} µs "
        f"({rows[0]['p50_us'] / ping_p50:.1f}x a PING with 1 process)"
    )
    record(
        "redis_scale",
        args,
        {
            "rate": args.rate,
            "pace": args.pace,
            "seconds": args.seconds,
            "ping_p50_us": ping_p50,
            "local_ratio": local,
            "rows": rows,
        },
        verdict,
    )


if __name__ == "__main__":
    main()
