"""OpenTelemetry on the event hooks (chenyu_assets.otel), checked with the SDK's in-memory
span exporter and metric reader against the emulator over 127.0.0.1 on virtual time; and
the SDK without OpenTelemetry installed (a subprocess where it cannot be imported)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from emulator_kit import virtual_emulator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets.ark import ArkClient
from chenyu_assets.batch import IngestOptions, SourceItem, ingest
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.emulator import Account, Emulator, EmulatorConfig, FaultRule
from chenyu_assets.otel import OTelHooks, instrument
from tests import mediagen
from tests.vclock import virtual

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_elapsed=10, rate_limit_wait=0.05)
ROOT = Path(__file__).resolve().parent.parent

CANARY = Account(
    name="canary",
    access_key="AKLTcanaryAccessKey0123456789",
    secret_key="canarySecretKeyValue0123456789==",
    api_key="cy_" + "c0ffee00" * 4,
)


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def hooks(self) -> OTelHooks:
        return OTelHooks(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def finished(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """name -> [(attributes, value)] of every data point."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[attr-defined]
                        out.setdefault(metric.name, []).append((dict(point.attributes), value))
        return out


def total(points: list[tuple[dict[str, Any], Any]], **match: Any) -> Any:
    return sum(v for a, v in points if all(a.get(k) == w for k, w in match.items()))


@contextlib.asynccontextmanager
async def running(**cfg: Any) -> AsyncIterator[Emulator]:
    emu, _ = virtual_emulator(EmulatorConfig(processing_delay=0.5, processing_jitter=0, **cfg))
    async with emu:
        yield emu


def ark_client(emu: Emulator, account: Account | None = None, **kw: Any) -> ArkClient:
    acct = account or emu.account
    return ArkClient(
        access_key=acct.access_key,
        secret_key=acct.secret_key,
        base_url=emu.url,
        **{"retry": FAST, **kw},
    )


@virtual
async def test_a_span_per_call_with_a_child_per_attempt() -> None:
    otel = Otel()
    async with running() as emu, ark_client(emu, hooks=[otel.hooks()]) as ark:
        group = await ark.create_asset_group(name="g")
        emu.set_faults(
            [
                FaultRule(action="GetAssetGroup", status=503, max_count=1),
                FaultRule(action="GetAssetGroup", status=429, retry_after="0.2", max_count=1),
            ]
        )
        await ark.get_asset_group(group)
        port = emu.port
    spans = otel.finished()
    [call] = [s for s in spans if s.name == "GetAssetGroup"]
    attempts = [
        s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id
    ]
    assert call.kind is SpanKind.INTERNAL
    assert call.attributes is not None
    assert call.attributes["chenyu_assets.action"] == "GetAssetGroup"
    assert call.attributes["chenyu_assets.outcome"] == "ok"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert [e.name for e in call.events] == ["retry", "rate_limited", "retry"]
    assert call.events[1].attributes is not None
    assert call.events[1].attributes["pause"] == 0.2
    assert len(attempts) == 3
    attempts.sort(key=lambda s: s.start_time or 0)
    statuses = [s.attributes["http.response.status_code"] for s in attempts if s.attributes]
    assert statuses == [503, 429, 200]
    for i, span in enumerate(attempts):
        a = span.attributes
        assert a is not None
        assert span.kind is SpanKind.CLIENT
        assert span.name == "POST"
        assert a["http.request.method"] == "POST"
        assert a["url.full"] == f"http://127.0.0.1:{port}/"
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", port)
        assert a["chenyu_assets.action"] == "GetAssetGroup"
        assert a["chenyu_assets.request_id"]
        assert a.get("http.request.resend_count", 0) == i
    assert attempts[0].attributes is not None
    assert attempts[0].attributes["error.type"] == "503"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[2].attributes is not None
    assert "error.type" not in attempts[2].attributes
    # the attempts sit inside their call, in order
    assert call.start_time is not None
    assert call.end_time is not None
    for span in attempts:
        assert span.start_time is not None
        assert span.end_time is not None
        assert call.start_time <= span.start_time <= span.end_time <= call.end_time
    metrics = otel.metrics()
    get = {"chenyu_assets.action": "GetAssetGroup"}
    assert total(metrics["chenyu_assets.requests"], **get) == 3
    assert (
        total(metrics["chenyu_assets.requests"], **get, **{"http.response.status_code": 429}) == 1
    )
    assert total(metrics["chenyu_assets.rate_limited"], **get) == 1
    assert total(metrics["chenyu_assets.retries"], **get) == 2
    assert total(metrics["http.client.request.duration"], **get) == 3  # histogram count


@virtual
async def test_a_failed_call_is_an_error_span() -> None:
    otel = Otel()
    async with running() as emu, ark_client(emu) as ark:
        instrument(ark, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
        with pytest.raises(Exception, match="NotFound"):
            await ark.get_asset_group("no-such-group")
    [call] = [s for s in otel.finished() if s.name == "GetAssetGroup"]
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "NotFoundError"
    [attempt] = [s for s in otel.finished() if s.kind is SpanKind.CLIENT]
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 404
    assert "NotFound" in str(attempt.attributes["chenyu_assets.error_code"])


def make_images(root: Path, n: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    data = mediagen.png(640, 480)
    paths = [root / f"img-{i}.png" for i in range(n)]
    for path in paths:
        path.write_bytes(data)
    return paths


@virtual
async def test_an_ingest_span_item_outcomes_and_slots_with_no_secret(tmp_path: Path) -> None:
    otel = Otel()
    async with running(accounts=[CANARY]) as emu:
        paths = make_images(tmp_path / "src", 2)
        ark = ark_client(emu, CANARY)
        chenyu = ChenyuClient(api_key=CANARY.api_key, base_url=emu.chenyu_url)
        instrument(ark, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
        instrument(chenyu, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
        async with ark, chenyu:
            group = await ark.create_asset_group(name="bulk")
            items = [
                *(SourceItem(key=p.stem, path=p, url=None) for p in paths),
                SourceItem(key="ratio", path=None, url=emu.media_url("png", 3000, 500)),
            ]
            report = await ingest(
                ark,
                items,
                group_id=group,
                chenyu=chenyu,
                options=IngestOptions(allow_private_urls=True),
            )
            # a refused call too: its error text must not leak either
            bad = ArkClient(
                access_key=CANARY.access_key,
                secret_key="wrong" + CANARY.secret_key,
                base_url=emu.url,
                hooks=[otel.hooks()],
            )
            async with bad:
                with pytest.raises(Exception, match=r"uthenticat|ignature"):
                    await bad.get_asset_group(group)
    assert (report.active, report.failed) == (2, 1)
    spans = otel.finished()
    [run] = [s for s in spans if s.name == "chenyu_assets.ingest"]
    assert run.attributes is not None
    assert run.attributes["chenyu_assets.group_id"] == group
    assert run.attributes["chenyu_assets.ingest.active"] == 2
    assert run.attributes["chenyu_assets.ingest.failed"] == 1
    names = {s.name for s in spans}
    assert {"CreateAsset", "CreateAssetGroup"} <= names
    assert len([s for s in spans if s.name == "CreateAsset"]) == 3
    metrics = otel.metrics()
    items_ended = metrics["chenyu_assets.ingest.items"]
    assert total(items_ended, outcome="active") == 2
    assert total(items_ended, outcome="failed") == 1
    [(_, in_use)] = metrics["chenyu_assets.processing_slots"]
    assert in_use == 0  # the last change: every slot given back
    # no key, secret or signature anywhere in names, attributes, events or metric labels
    dump = json.dumps(
        [
            (
                s.name,
                dict(s.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in s.events],
            )
            for s in spans
        ]
        + [(name, pts) for name, pts in metrics.items()],
        default=str,
    )
    for secret in (
        CANARY.access_key,
        CANARY.secret_key,
        CANARY.api_key,
        "Signature=",
        "Credential=",
        "Bearer",
    ):
        assert secret not in dump, secret
    assert "AKLT" not in dump
    assert "SignatureDoesNotMatch" in dump  # the refused call is there, by its code only


@pytest.fixture
def no_otel_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.subprocess
def test_without_opentelemetry_the_sdk_works_and_instrument_names_the_extra(
    no_otel_env: dict[str, str],
) -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        import chenyu_assets
        from chenyu_assets import ArkClient, ConfigurationError
        from chenyu_assets.emulator import Emulator
        import chenyu_assets.otel as otel

        async def main():
            async with Emulator() as emu:
                acct = emu.account
                async with ArkClient(access_key=acct.access_key, secret_key=acct.secret_key,
                                     base_url=emu.url, hooks=[lambda e: None]) as ark:
                    gid = await ark.create_asset_group(name="g")
                    assert (await ark.get_asset_group(gid)).id == gid
                    try:
                        otel.instrument(ark)
                    except ConfigurationError as exc:
                        print("refused:", exc)
                    else:
                        raise SystemExit("instrument() did not refuse")
            loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v]
            print("loaded:", loaded)

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=no_otel_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout
    assert "chenyu-assets[otel]" in proc.stdout
    assert "loaded: []" in proc.stdout
