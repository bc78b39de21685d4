"""Cost of the event hooks: CPU µs per GetAssetGroup call with no hook, one no-op hook and
OTelHooks (the OpenTelemetry SDK, spans to a no-op processor), against an in-process
emulator (limits off) over 127.0.0.1; plus tracemalloc's count of memory blocks the event
code (chenyu_assets/events.py and the engine's event builders) allocates with no hook set.

    python benchmarks/hooks.py            # 5 rounds × 400 calls per side
    python benchmarks/hooks.py --quick    # 3 rounds × 200 calls
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from chenyu_assets import ArkClient
from chenyu_assets.emulator import Emulator, EmulatorConfig
from chenyu_assets.limits import ACTION_RATES

EVENT_CODE = ("chenyu_assets/events.py", "chenyu_assets/otel.py")


def _hooks(side: str) -> list[Any]:
    if side == "none":
        return []
    if side == "noop":
        return [lambda event: None]
    if side == "keep":  # the tracemalloc control: a hook that keeps every event
        kept: list[Any] = []
        return [kept.append]
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from chenyu_assets.otel import OTelHooks

    return [OTelHooks(tracer_provider=TracerProvider(), meter_provider=MeterProvider())]


async def _round(emu: Emulator, side: str, calls: int, traced: bool = False) -> float:
    acct = emu.account
    rates = dict.fromkeys(ACTION_RATES, 1000000.0)
    async with ArkClient(
        access_key=acct.access_key,
        secret_key=acct.secret_key,
        base_url=emu.url,
        rate_limits=rates,
        headroom=1.0,
        hooks=_hooks(side),
    ) as ark:
        group = await ark.create_asset_group(name="g")
        for _ in range(20):  # warm up
            await ark.get_asset_group(group)
        if traced:
            tracemalloc.start(5)
        t0 = time.process_time()
        for _ in range(calls):
            await ark.get_asset_group(group)
        cpu = time.process_time() - t0
        if traced:
            snap = tracemalloc.take_snapshot()
            tracemalloc.stop()
            blocks = [
                s
                for s in snap.statistics("traceback")
                if any(
                    f.filename.endswith(EVENT_CODE)
                    or (f.filename.endswith("engine.py") and f.lineno > 220)
                    for f in s.traceback
                )
            ]
            count = sum(s.count for s in blocks)
            print(f"tracemalloc, hooks={side}: {count} live blocks allocated by event code")
    return cpu / calls * 1e6


async def main(rounds: int, calls: int) -> None:
    async with Emulator(EmulatorConfig(enforce_limits=False)) as emu:
        await _round(emu, "none", 50, traced=True)
        await _round(emu, "keep", 50, traced=True)
        results: dict[str, list[float]] = {"none": [], "noop": [], "otel": []}
        for r in range(rounds):
            sides = list(results)
            for side in sides[r % 3 :] + sides[: r % 3]:
                results[side].append(await _round(emu, side, calls))
    base = statistics.median(results["none"])
    print(f"{'hooks':<6} {'CPU µs/call (median)':>22} {'vs none':>9}")
    for side, values in results.items():
        med = statistics.median(values)
        print(f"{side:<6} {med:>22.1f} {med - base:>+9.1f}")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    asyncio.run(main(3 if quick else 5, 200 if quick else 400))
