"""What a CLI run of the ingest shares with a queued run (`ingest --queue`): the clients
built from the arguments, Ctrl-C handling, and the exit code of a report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio

from chenyu_assets._cli_common import (
    EXIT_FATAL,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_RETRYABLE,
)
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestReport, Outcome, S3Stage
from chenyu_assets.chenyu import CHENYU_RATES, ChenyuClient
from chenyu_assets.errors import ConfigurationError
from chenyu_assets.limits import Rate, load_rates, profile_rates


async def interruptible(job: Coroutine[Any, Any, int]) -> int:
    """Ctrl-C cancels the run through an anyio cancel scope, which keeps re-delivering the
    cancellation until every task has left (a bare ``task.cancel()``, asyncio.run's own
    handler, can be absorbed by a task that is inside a shielded scope at that instant, and
    the run would go on). Shielded create units finish first; a second Ctrl-C stops at once."""
    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:

        def again() -> None:
            raise KeyboardInterrupt

        def first() -> None:
            scope.cancel()
            loop.add_signal_handler(signal.SIGINT, again)

        try:
            loop.add_signal_handler(signal.SIGINT, first)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return await job
        try:
            return await job
        finally:
            loop.remove_signal_handler(signal.SIGINT)
    raise KeyboardInterrupt  # the scope caught the cancellation: interrupted


@contextlib.asynccontextmanager
async def open_clients(
    args: argparse.Namespace, stage: S3Stage | None
) -> AsyncIterator[tuple[ArkClient, ChenyuClient | None]]:
    if args.rate_margin < 0:
        raise ConfigurationError("--rate-margin must not be negative")
    if args.rates is not None:
        ark_rates = load_rates(args.rates, profile=args.limits_profile)
    else:
        ark_rates = profile_rates(args.limits_profile or "volcengine")
    ca = str(args.ca_bundle) if args.ca_bundle else None
    if not args.emulator:
        scale = args.rate_scale
        # Ark first: every ingest needs it, Chenyu only for local files
        ark_client = ArkClient.from_env(
            rates=_scaled(ark_rates, scale),
            rate_margin=args.rate_margin,
            limits=args.limits,
            ca_bundle=ca,
        )
        if stage is not None:  # no Chenyu account needed
            async with ark_client as ark:
                yield ark, None
            return
        try:
            chenyu_client = ChenyuClient.from_env(
                rate_limits=_scaled_floats(CHENYU_RATES, scale), ca_bundle=ca
            )
        except ConfigurationError as exc:  # the message names the setting, never a value
            raise ConfigurationError(
                f"{exc} (no Chenyu account? stage local files in your own S3-compatible "
                "bucket: --stage s3://bucket/prefix)"
            ) from None
        async with ark_client as ark, chenyu_client as chenyu:
            yield ark, chenyu
        return
    from chenyu_assets.emulator import Emulator, EmulatorConfig

    scale = args.emulator_time_scale
    # the embedded emulator may fetch the staging bucket's presigned URLs (and nothing else)
    allow = (_authority(stage.endpoint_url),) if stage and stage.endpoint_url else ()
    async with Emulator(EmulatorConfig(time_scale=scale, fetch_allowlist=allow)) as emu:
        acct = emu.account
        async with (
            ArkClient(
                access_key=acct.access_key,
                secret_key=acct.secret_key,
                base_url=emu.url,
                rates=_scaled(ark_rates, scale),
                rate_margin=args.rate_margin,
                limits=args.limits,
            ) as ark,
            ChenyuClient(
                api_key=acct.api_key,
                base_url=emu.chenyu_url,
                rate_limits=_scaled_floats(CHENYU_RATES, scale),
            ) as chenyu,
        ):
            yield ark, chenyu


def _authority(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _scaled(rates: Mapping[str, Rate], scale: float) -> dict[str, Rate]:
    return {k: v.scaled(scale) for k, v in rates.items()}


def _scaled_floats(rates: Mapping[str, float], scale: float) -> dict[str, float]:
    return {k: v * scale for k, v in rates.items()}


def exit_code(report: IngestReport) -> int:
    """4 fatal; 3 a content failure or a skip; 5 only retryable failures; 0 all active."""
    if report.fatal:
        return EXIT_FATAL
    counts = report.outcomes()
    if counts[Outcome.FAILED] or counts[Outcome.SKIPPED]:
        return EXIT_ITEMS_FAILED
    return EXIT_RETRYABLE if counts[Outcome.RETRYABLE] else EXIT_OK
