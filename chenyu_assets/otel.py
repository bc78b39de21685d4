"""OpenTelemetry traces and metrics, built on the typed event hooks (extra ``otel``).

``pip install 'chenyu-assets[otel]'`` (``opentelemetry-api`` only; bring your own SDK and
exporters), then either ``instrument(client)`` or ``ArkClient(..., hooks=[OTelHooks()])``.
Nothing of OpenTelemetry is imported until :class:`OTelHooks` is built; without the
package it raises :class:`~chenyu_assets.errors.ConfigurationError` naming the extra.

Spans (tracer ``chenyu_assets``):

* one INTERNAL span per logical call, named after the action (``CreateAsset``), with
  ``chenyu_assets.action``, ``server.address``, ``chenyu_assets.outcome`` and, on failure,
  ``error.type``; retries and 429 pauses are span events (``retry``, ``rate_limited``);
* a CLIENT child span per HTTP attempt, named after the method (``POST``):
  ``http.request.method``, ``url.full`` (no query string), ``server.address``,
  ``server.port``, ``http.response.status_code``, ``error.type`` (the status code, else the
  SDK's exception type), ``http.request.resend_count``, ``http.request.body.size``,
  ``http.response.body.size``, ``chenyu_assets.action``, ``chenyu_assets.request_id``,
  ``chenyu_assets.error_code``;
* one INTERNAL span per ingest (``chenyu_assets.ingest``) with the group id and the
  report's counts.

A call's spans are recorded when it ends, with the times it had (parented to the context
current in the calling task). Metrics (meter ``chenyu_assets``): ``chenyu_assets.requests``
(attempts; by action and status code), ``chenyu_assets.rate_limited`` (429s, by action),
``chenyu_assets.retries`` (by action and error type), ``http.client.request.duration``
(seconds, by action and status code), ``chenyu_assets.ingest.items`` (items ended, by
outcome), ``chenyu_assets.processing_slots`` (Processing slots in use, a gauge). No
attribute carries a key, a signature, a header or a query string.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from chenyu_assets._version import __version__
from chenyu_assets.errors import ConfigurationError
from chenyu_assets.events import (
    AttemptEvent,
    CallEvent,
    HookEvent,
    IngestEvent,
    ItemEvent,
    RetryEvent,
    SlotEvent,
    ThrottleEvent,
)

if TYPE_CHECKING:
    from chenyu_assets._core.engine import ClientBase

__all__ = ["OTelHooks", "instrument"]

#: Calls whose spans are pending (attempts seen, call not ended) kept at most.
MAX_PENDING = 10_000
_FINAL = ("active", "failed", "skipped", "planned")


def _otel() -> tuple[Any, Any]:
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        raise ConfigurationError(
            "OpenTelemetry is not installed: pip install 'chenyu-assets[otel]'"
            " (the otel extra, opentelemetry-api)"
        ) from None
    return trace, metrics


class _Pending:
    __slots__ = ("attempts", "notes")

    def __init__(self) -> None:
        #: (attempt, start ns, end ns)
        self.attempts: list[tuple[AttemptEvent, int, int]] = []
        #: (name, attributes, ns)
        self.notes: list[tuple[str, dict[str, Any], int]] = []


class OTelHooks:
    """A hook (see :mod:`chenyu_assets.events`) turning events into spans and metrics;
    ``tracer_provider`` / ``meter_provider`` default to the global ones."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        trace, metrics = _otel()
        self._trace = trace
        self._tracer = trace.get_tracer(
            "chenyu_assets", __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter("chenyu_assets", __version__, meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "chenyu_assets.requests", unit="{request}", description="HTTP attempts sent"
        )
        self._throttled = meter.create_counter(
            "chenyu_assets.rate_limited", unit="{response}", description="429 answers"
        )
        self._retries = meter.create_counter(
            "chenyu_assets.retries", unit="{retry}", description="attempts retried"
        )
        self._duration = meter.create_histogram(
            "http.client.request.duration", unit="s", description="HTTP attempt duration"
        )
        self._items = meter.create_counter(
            "chenyu_assets.ingest.items", unit="{item}", description="ingest items ended"
        )
        self._slots = meter.create_gauge(
            "chenyu_assets.processing_slots", unit="{slot}", description="Processing slots held"
        )
        self._pending: dict[int, _Pending] = {}
        self._ingests: dict[int, Any] = {}

    def __call__(self, event: HookEvent) -> None:
        now = time.time_ns()
        if isinstance(event, AttemptEvent):
            self._attempt(event, now)
        elif isinstance(event, RetryEvent):
            self._retries.add(
                1, {"chenyu_assets.action": event.action, "error.type": event.error_type}
            )
            note = {"attempt": event.attempt, "delay": event.delay, "error.type": event.error_type}
            if event.error_code:
                note["chenyu_assets.error_code"] = event.error_code
            self._note(event.call_id, "retry", note, now)
        elif isinstance(event, ThrottleEvent):
            self._throttled.add(1, {"chenyu_assets.action": event.action})
            note = {"attempt": event.attempt, "pause": event.pause, "cap": event.cap}
            self._note(event.call_id, "rate_limited", note, now)
        elif isinstance(event, CallEvent):
            self._call(event, now)
        elif isinstance(event, ItemEvent):
            if event.state in _FINAL:
                self._items.add(1, {"outcome": event.state})
        elif isinstance(event, SlotEvent):
            self._slots.set(event.in_use)
        elif isinstance(event, IngestEvent):
            self._ingest(event)

    def _entry(self, call_id: int) -> _Pending:
        entry = self._pending.get(call_id)
        if entry is None:
            if len(self._pending) >= MAX_PENDING:  # calls never ended (a bug): forget the oldest
                self._pending.pop(next(iter(self._pending)))
            entry = self._pending[call_id] = _Pending()
        return entry

    def _attempt(self, event: AttemptEvent, now: int) -> None:
        attrs: dict[str, Any] = {"chenyu_assets.action": event.action}
        if event.status is not None:
            attrs["http.response.status_code"] = event.status
        self._requests.add(1, attrs)
        self._duration.record(event.duration, attrs)
        if event.call_id == 0:  # the call began before this hook: it gets no call span
            return
        self._entry(event.call_id).attempts.append((event, now - int(event.duration * 1e9), now))

    def _note(self, call_id: int, name: str, attrs: dict[str, Any], now: int) -> None:
        if call_id == 0:
            return
        self._entry(call_id).notes.append((name, attrs, now))

    def _call(self, event: CallEvent, now: int) -> None:
        trace = self._trace
        entry = self._pending.pop(event.call_id, None) or _Pending()
        attrs: dict[str, Any] = {
            "chenyu_assets.action": event.action,
            "chenyu_assets.outcome": event.outcome,
            "server.address": _address(event.host)[0],
        }
        if event.error_type:
            attrs["error.type"] = event.error_type
        span = self._tracer.start_span(
            event.action,
            kind=trace.SpanKind.INTERNAL,
            attributes=attrs,
            start_time=now - int(event.duration * 1e9),
        )
        for name, note, at in entry.notes:
            span.add_event(name, note, timestamp=at)
        parent = trace.set_span_in_context(span)
        for attempt, start, end in entry.attempts:
            child = self._tracer.start_span(
                attempt.method or "HTTP",
                context=parent,
                kind=trace.SpanKind.CLIENT,
                attributes=_attempt_attributes(attempt),
                start_time=start,
            )
            if attempt.error_type is not None:
                child.set_status(trace.Status(trace.StatusCode.ERROR))
            child.end(end_time=end)
        if event.outcome != "ok":
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end(end_time=now)

    def _ingest(self, event: IngestEvent) -> None:
        if event.phase == "started":
            self._ingests[event.run_id] = self._tracer.start_span(
                "chenyu_assets.ingest",
                kind=self._trace.SpanKind.INTERNAL,
                attributes={"chenyu_assets.group_id": event.group_id},
            )
            return
        span = self._ingests.pop(event.run_id, None)
        if span is None:
            return
        for name, value in (event.counts or {}).items():
            span.set_attribute(f"chenyu_assets.ingest.{name}", value)
        if event.fatal:
            span.set_attribute("error.type", "fatal")
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()


def _address(host: str) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too) split into the address and the port."""
    address, sep, port = host.rpartition(":")
    if sep and port.isdigit() and (not address.startswith("[") or address.endswith("]")):
        return address.strip("[]"), int(port)
    return host.strip("[]"), None


def _attempt_attributes(a: AttemptEvent) -> dict[str, Any]:
    address, port = _address(a.host)
    attrs: dict[str, Any] = {
        "http.request.method": a.method,
        "url.full": a.url,
        "server.address": address,
        "chenyu_assets.action": a.action,
        "http.response.body.size": a.bytes_received,
    }
    if port is not None:
        attrs["server.port"] = port
    if a.attempt > 1:
        attrs["http.request.resend_count"] = a.attempt - 1
    if a.status is not None:
        attrs["http.response.status_code"] = a.status
    if a.error_type is not None:
        attrs["error.type"] = str(a.status) if a.status and a.status >= 400 else a.error_type
    if a.request_id:
        attrs["chenyu_assets.request_id"] = a.request_id
    if a.error_code:
        attrs["chenyu_assets.error_code"] = a.error_code
    if a.bytes_sent is not None:
        attrs["http.request.body.size"] = a.bytes_sent
    return attrs


def instrument(
    client: ClientBase, *, tracer_provider: Any = None, meter_provider: Any = None
) -> OTelHooks:
    """Add an :class:`OTelHooks` to ``client`` and return it (``client.remove_hook(h)``
    stops it). ``ConfigurationError`` when OpenTelemetry is not installed."""
    hooks = OTelHooks(tracer_provider=tracer_provider, meter_provider=meter_provider)
    client.add_hook(hooks)
    return hooks
