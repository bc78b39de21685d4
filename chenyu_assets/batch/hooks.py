"""The ingest's side of the typed hooks (:mod:`chenyu_assets.events`): item transitions,
the run's start and end, and the client's retries and 429s forwarded as ingest Events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chenyu_assets._core.logs import redact_text
from chenyu_assets.batch.types import IngestReport, IngestResult, Outcome
from chenyu_assets.events import (
    CallEvent,
    Hook,
    HookEvent,
    IngestEvent,
    ItemEvent,
    ItemPhase,
    RetryEvent,
    ThrottleEvent,
)

__all__ = ["ended", "forwarder", "item_event", "result_event"]

#: Pipeline event kinds -> the item phase of their ItemEvent.
_PHASES: dict[str, ItemPhase] = {
    "queued": "planned",
    "uploaded": "uploaded",
    "created": "created",
    "recovered": "created",
    "retried": "retryable",
}


def item_event(kind: str, key: str | None, data: Mapping[str, Any]) -> ItemEvent | None:
    """The ItemEvent of a pipeline event about one item, if it is a transition."""
    phase = _PHASES.get(kind)
    if key is None or phase is None:
        return None
    if phase == "retryable":
        return ItemEvent(key, phase, reason=redact_text(str(data.get("reason", ""))))
    return ItemEvent(key, phase, asset_id=data.get("asset_id"))


#: a result's status -> the phase of its final ItemEvent (the same words)
_END_PHASES: dict[Outcome, ItemPhase] = {
    Outcome.ACTIVE: "active",
    Outcome.FAILED: "failed",
    Outcome.SKIPPED: "skipped",
    Outcome.PLANNED: "planned",
}


def result_event(result: IngestResult) -> ItemEvent:
    """The final transition of an item (active / failed / skipped, planned in a dry run)."""
    return ItemEvent(
        result.key,
        _END_PHASES[result.status],
        asset_id=result.asset_id,
        error_code=result.error_code,
        resumed=result.resumed,
    )


def ended(run_id: int, group_id: str, r: IngestReport) -> IngestEvent:
    counts = {k: getattr(r, k) for k in ("total", "active", "failed", "skipped", "planned")}
    counts.update(retries=r.retries, rate_limited=r.rate_limited)
    return IngestEvent("ended", run_id, group_id, r.elapsed, counts, r.fatal)


def forwarder(emit: Callable[..., None]) -> Hook:
    """A hook passing the client's retries, 429s and ambiguous outcomes to the ingest's
    ``on_event`` (as the "retried", "rate_limited", "ambiguous" Events)."""

    def hook(event: HookEvent) -> None:
        if isinstance(event, RetryEvent):
            fields = {"endpoint": event.action, "attempt": event.attempt}
            emit("retried", None, **fields, error=event.error, delay=event.delay)
        elif isinstance(event, ThrottleEvent):
            emit("rate_limited", None, endpoint=event.action, pause=event.pause)
        elif isinstance(event, CallEvent) and event.outcome == "ambiguous":
            error = getattr(event.error, "__cause__", None) or event.error
            emit("ambiguous", None, endpoint=event.action, error=error)

    return hook
