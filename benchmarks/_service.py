"""The service the benchmarks measure against: the emulator in its own process.

The emulator runs in a child process (``python benchmarks/_service.py CONFIG_JSON``) so
its CPU is not billed to the client under test (the machine has 2 cores: one each). It
listens on 127.0.0.1 only, with the strict sliding-window limiter and the in-flight cap
of Processing assets enforced (``EmulatorConfig`` defaults).

Clocks: the audit's ``t`` values (``created_t``, ``finished_t``, request times) are real
seconds since the emulator's :class:`Clock` was created. The child builds that clock
itself and reports its origin on ``time.monotonic()``; CLOCK_MONOTONIC is system-wide on
Linux, so ``origin + t`` is directly comparable with the parent's ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestOptions
from chenyu_assets.emulator import Audit, Clock, Emulator, EmulatorConfig
from chenyu_assets.limits import ACTION_RATES

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Service:
    """A running emulator child: its addresses, the demo account and its clock origin."""

    url: str
    gateway_url: str
    api_key: str
    media_url: str
    origin: float  # time.monotonic() at the emulator's t = 0
    time_scale: float

    def client_time(self, t: float) -> float:
        """An audit time ``t`` on this process's ``time.monotonic()`` clock."""
        return self.origin + t

    async def audit(self) -> Audit:
        timeout = aiohttp.ClientTimeout(total=120)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{self.url}/_emulator/audit") as resp,
        ):
            resp.raise_for_status()
            return Audit.model_validate_json(await resp.read())

    def ark(self, **kwargs: Any) -> ArkClient:
        """Our SDK's client on the gateway (Bearer) style, its limits scaled like the
        service's (``time_scale`` × the published rates)."""
        rates = {k: v * self.time_scale for k, v in ACTION_RATES.items()}
        return ArkClient(
            api_key=self.api_key, base_url=self.gateway_url, rate_limits=rates, **kwargs
        )


def scaled_options(scale: float) -> IngestOptions:
    """Default ingest options with their time knobs divided by ``scale``."""
    d = IngestOptions()
    return IngestOptions(
        allow_private_urls=True,  # the emulator's media URLs are on 127.0.0.1
        poll_min_interval=d.poll_min_interval / scale,
        poll_starved_interval=d.poll_starved_interval / scale,
        poll_max_interval=d.poll_max_interval / scale,
        stale_after=d.stale_after / scale,
        processing_timeout=d.processing_timeout / scale,
        reconcile_wait=d.reconcile_wait / scale,
        reconcile_interval=d.reconcile_interval / scale,
    )


@contextlib.asynccontextmanager
async def service(**config: Any) -> AsyncIterator[Service]:
    """Start an emulator child with these :class:`EmulatorConfig` fields; stop it after."""
    cfg = EmulatorConfig(host="127.0.0.1", port=0, **config)  # validate here, fail early
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        cfg.model_dump_json(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT)
        if not line:
            raise RuntimeError("the emulator child exited before it was ready")
        info = json.loads(line)
        yield Service(
            url=info["url"],
            gateway_url=info["gateway_url"],
            api_key=info["api_key"],
            media_url=info["media_url"],
            origin=info["origin"],
            time_scale=cfg.time_scale,
        )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the child stops when its stdin closes
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _child(config_json: str) -> None:
    cfg = EmulatorConfig.model_validate_json(config_json)
    clock = Clock(scale=lambda: cfg.time_scale, offset=lambda: cfg.clock_offset_seconds)
    origin = time.monotonic() - clock.elapsed()
    async with Emulator(cfg, clock=clock) as emu:
        info = {
            "url": emu.url,
            "gateway_url": emu.gateway_url,
            "api_key": emu.account.api_key,
            "media_url": emu.media_url("png", 800, 1200),
            "origin": origin,
        }
        print(json.dumps(info), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1]))
