"""SDK overhead: GetAsset round trips per second, ours (``ArkClient.get_asset``) against a
raw aiohttp loop sending the same signed requests, limits lifted.

Both sides: the same concurrency, an ``aiohttp.ClientSession`` with the settings our
transport uses (connection limit 100, socket timeouts, ``trust_env=False``), requests signed with
``chenyu_assets._core.signing.sign_request`` (fresh X-Date per request). The raw loop reads
the body and ``json.loads`` it, checking for an error; ours also runs the limiter (rate
lifted: 10⁶/s, headroom 1.0), the retry engine and the pydantic ``Asset`` model. The emulator
(``enforce_limits=False``) runs in its own process, so on 2 cores it may well be the
bottleneck: ``CPU µs/req``, the client process's CPU per request, shows the SDK's own cost
whichever side saturates, and ``client CPU`` (CPU time / wall time of the client process)
shows whether the client was the one saturated (100 % = one core). A third row, raw with
``trust_env=True``, prices that one session setting (aiohttp then does a ``.netrc`` read
and a proxy lookup, each a thread-pool round trip, on every request: what our transport did
before it read the proxy variables once per session). Rounds rotate the order of the sides;
the table shows medians. Target: ours ≥ 1.0× raw's req/s (no slower).

    python benchmarks/overhead.py            # 5 rounds × 5 s per side
    python benchmarks/overhead.py --quick    # 3 rounds × 2 s per side
    python benchmarks/overhead.py --profile  # also cProfile ours and print where time goes
"""

from __future__ import annotations

import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import parser, record, table
from _server import ServerProcess, revision

from chenyu_assets import ArkClient
from chenyu_assets._core.signing import Credentials, sign_request
from chenyu_assets._core.transport import USER_AGENT
from chenyu_assets.emulator.config import DEMO_ACCESS_KEY, DEMO_SECRET_KEY
from chenyu_assets.limits import ARK_VERSION

TARGET = 1.0
REGION = "cn-beijing"


async def _drive(one: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> dict:
    """``concurrency`` tasks calling ``one()`` until ``seconds`` pass: (count, wall, CPU)."""
    count = 0
    stop_at = time.perf_counter() + seconds

    async def task() -> None:
        nonlocal count
        while time.perf_counter() < stop_at:
            await one()
            count += 1

    cpu, wall = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(task())
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return {
        "requests": count,
        "rps": count / wall,
        "cpu_per_req_us": cpu / max(count, 1) * 1e6,
        "client_cpu_share": cpu / wall,
    }


def _session(*, trust_env: bool = True) -> aiohttp.ClientSession:
    """The same session settings as ``chenyu_assets._core.transport.Transport``."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ssl=ssl.create_default_context()),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=60.0),
        trust_env=trust_env,
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
    )


async def run_raw(
    url: str, asset_id: str, concurrency: int, seconds: float, *, trust_env: bool = True
) -> dict:
    creds = Credentials(DEMO_ACCESS_KEY, DEMO_SECRET_KEY)
    host = urlsplit(url).netloc
    params = [("Action", "GetAsset"), ("Version", ARK_VERSION)]
    payload = json.dumps({"Id": asset_id}, separators=(",", ":")).encode()
    async with _session(trust_env=trust_env) as session:

        async def one() -> None:
            headers = {"Host": host, "Content-Type": "application/json"}
            headers.update(
                sign_request(
                    method="POST",
                    path="/",
                    query=params,
                    headers=headers,
                    body=payload,
                    credentials=creds,
                    region=REGION,
                    now=datetime.now(UTC),
                )
            )
            del headers["Host"]
            async with session.post(url + "/", params=params, headers=headers, data=payload) as r:
                body = await r.read()
            data = json.loads(body)
            if r.status != 200 or "Error" in data.get("ResponseMetadata", {}):
                raise RuntimeError(f"GetAsset failed: HTTP {r.status} {body[:200]!r}")

        await one()  # connect before the clock starts
        return await _drive(one, concurrency, seconds)


def _ours(url: str) -> ArkClient:
    return ArkClient(
        access_key=DEMO_ACCESS_KEY,
        secret_key=DEMO_SECRET_KEY,
        base_url=url,
        region=REGION,
        rate_limits={"GetAsset": 1e6},
        headroom=1.0,
    )


async def run_ours(url: str, asset_id: str, concurrency: int, seconds: float) -> dict:
    async with _ours(url) as ark:

        async def one() -> None:
            asset = await ark.get_asset(asset_id)
            if asset.id != asset_id:
                raise RuntimeError("GetAsset answered another asset")

        await one()
        return await _drive(one, concurrency, seconds)


async def setup(url: str) -> tuple[str, bool]:
    """An asset to get, and our transport's ``trust_env`` (the raw side copies it)."""
    async with _ours(url) as ark:
        session = ark._transport._session
        trust_env = bool(session.trust_env) if session is not None else True
        group = await ark.create_asset_group(name="overhead")
        asset_id = await ark.create_asset(
            group_id=group, url=url + "/_emulator/media/png/800x800.png", name="overhead-01"
        )
        return asset_id, trust_env


def profile_ours(url: str, asset_id: str, concurrency: int, seconds: float) -> str:
    prof = cProfile.Profile()
    prof.enable()
    res = asyncio.run(run_ours(url, asset_id, concurrency, seconds))
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(18)
    return f"ours under cProfile: {res['rps']:.0f} req/s\n" + buf.getvalue()


SIDES = {
    "raw": ("raw aiohttp + sign_request + json.loads", run_raw),
    "ours": ("ours: ArkClient.get_asset", run_ours),
    "raw_env": (
        "raw, trust_env=True (prices that setting)",
        functools.partial(run_raw, trust_env=True),
    ),
}


def main() -> None:
    p = parser(__doc__.split("\n\n", 1)[0])
    p.add_argument("--concurrency", type=int, default=32, help="tasks per side (default 32)")
    p.add_argument("--rounds", type=int, help="rounds of every side (default 5; quick 3)")
    p.add_argument("--seconds", type=float, help="seconds per side per round (5; quick 2)")
    p.add_argument("--profile", action="store_true", help="cProfile ours and print the top")
    args = p.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    conc = args.concurrency
    config = {"enforce_limits": False, "validate_media": False, "processing_delay": 0.0}
    print(
        f"overhead [{revision()}]: GetAsset, {conc} tasks per side, "
        f"{rounds} rounds × {seconds:g} s per side; "
        "emulator in its own process, limits off",
        flush=True,
    )
    keys = list(SIDES)
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    with ServerProcess(config) as server:
        asset_id, trust_env = asyncio.run(setup(server.url))
        sides = dict(SIDES)
        sides["raw"] = (sides["raw"][0], functools.partial(run_raw, trust_env=trust_env))
        for r in range(rounds):
            for side in keys[r % len(keys) :] + keys[: r % len(keys)]:  # rotate the order
                res = asyncio.run(sides[side][1](server.url, asset_id, conc, seconds))
                samples[side].append(res)
                print(
                    f"  round {r + 1} {side:<10} {res['rps']:6.0f} req/s  "
                    f"{res['cpu_per_req_us']:5.0f} µs CPU/req  "
                    f"client CPU {res['client_cpu_share']:.0%}",
                    flush=True,
                )
        profile = profile_ours(server.url, asset_id, conc, seconds) if args.profile else ""

    med = {
        side: {
            key: statistics.median(s[key] for s in rs)
            for key in ("rps", "cpu_per_req_us", "client_cpu_share")
        }
        for side, rs in samples.items()
    }
    raw = med["raw"]
    ratio = med["ours"]["rps"] / raw["rps"]
    cpu_ratio = med["ours"]["cpu_per_req_us"] / raw["cpu_per_req_us"]
    rows = []
    for side in ("raw", "ours", "raw_env"):
        m = med[side]
        rows.append(
            [
                SIDES[side][0],
                round(m["rps"]),
                m["rps"] / raw["rps"],
                round(m["cpu_per_req_us"]),
                m["cpu_per_req_us"] / raw["cpu_per_req_us"],
                f"{m['client_cpu_share']:.0%}",
                f"≥{TARGET}× raw: {'met' if ratio >= TARGET else 'MISSED'}"
                if side == "ours"
                else "",
            ]
        )
    print()
    headers = ["client", "req/s", "× raw", "CPU µs/req", "CPU × raw", "client CPU", "target"]
    print(table(headers, rows))
    if profile:
        print()
        print(profile)
    summary = (
        f"ours {ratio:.2f}× raw req/s ({med['ours']['rps']:.0f} vs {raw['rps']:.0f}); "
        f"client CPU per request {cpu_ratio:.2f}× raw "
        f"({med['ours']['cpu_per_req_us']:.0f} vs {raw['cpu_per_req_us']:.0f} µs)"
    )
    verdict = f"overhead: {'MET' if ratio >= TARGET else 'MISSED'} — {summary}"
    data = {
        "concurrency": conc,
        "rounds": rounds,
        "seconds": seconds,
        "samples": samples,
        "median": med,
        "ratio": ratio,
        "loadavg": os.getloadavg(),
        "revision": revision(),
    }
    record("overhead", args, data, verdict)


if __name__ == "__main__":
    main()
