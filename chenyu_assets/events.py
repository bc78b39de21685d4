"""Typed event hooks: what a client and an ingest did, as frozen dataclasses.

A hook is any ``hook(event) -> None``; pass ``hooks=[...]`` to a client or call
``client.add_hook(hook)``. Hooks run synchronously in the task that made the event, so
keep them short (count, enqueue). Events:

* :class:`AttemptEvent` — one HTTP attempt ended (response or transport failure).
* :class:`RetryEvent` — an attempt failed and the call waits ``delay`` s before the next.
* :class:`ThrottleEvent` — a 429: the action pauses ``pause`` s (``cap``: the service's
  in-flight cap, which pauses nobody else).
* :class:`CallEvent` — one logical call ended (all its attempts and waits).
* :class:`ItemEvent` — an ingest item moved (planned → uploaded → created → active /
  failed / skipped, or retryable).
* :class:`IngestEvent` — an ingest started or ended.
* :class:`SlotEvent`, :class:`SweepEvent` — the watcher's Processing slots and sweep.

No event is built when a client has no hook. A hook that raises never breaks a call: the
exception is swallowed and logged at WARNING on ``chenyu_assets.events`` with the hook's
name and the exception's type (first failure of each hook, then at most once per
:data:`FAILURE_LOG_INTERVAL` s with the number of failures since); :attr:`HookSet.failures`
counts them. Events carry no secret: no header, no body, no query string; ``error`` holds
the SDK's own exception (secret-free by contract).
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chenyu_assets._core.logs import get_logger

__all__ = [
    "FAILURE_LOG_INTERVAL",
    "AttemptEvent",
    "CallEvent",
    "Hook",
    "HookEvent",
    "HookSet",
    "IngestEvent",
    "ItemEvent",
    "ItemPhase",
    "RetryEvent",
    "SlotEvent",
    "SweepEvent",
    "ThrottleEvent",
    "legacy_adapter",
    "watcher_event",
]

log = get_logger("chenyu_assets.events")

#: Seconds between two WARNING lines about the same failing hook.
FAILURE_LOG_INTERVAL = 60.0

_call_ids = itertools.count(1)


def next_call_id() -> int:
    """A process-unique id tying the attempts of one call together."""
    return next(_call_ids)


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One HTTP attempt of a call (``call_id`` 0: the call began before any hook was set,
    and no CallEvent follows). ``status`` is None when no response arrived (then
    ``error_type`` names the transport failure); ``error_code`` is the vendor's code;
    ``duration`` the attempt's seconds on the loop's clock; ``bytes_sent`` is None for a
    streamed body. ``url`` is ``scheme://host[:port]/path``: never a query string or
    credentials."""

    call_id: int
    action: str
    attempt: int
    method: str
    url: str
    host: str
    path: str
    status: int | None
    error_code: str | None
    error_type: str | None
    request_id: str | None
    bytes_sent: int | None
    bytes_received: int
    duration: float


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Attempt ``attempt`` failed with ``error``; the next one comes after ``delay`` s."""

    call_id: int
    action: str
    attempt: int
    delay: float
    status: int | None
    error_code: str | None
    error_type: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class ThrottleEvent:
    """A 429 on ``action``: every task of the client pauses the action ``pause`` s
    (``cap=True``: the service's in-flight cap, nobody else pauses)."""

    call_id: int
    action: str
    attempt: int
    pause: float
    cap: bool


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One logical call ended: ``outcome`` is ``ok``, ``error`` or ``ambiguous`` (the
    effect of a create is unknown); ``duration`` includes rate-limit queueing and waits."""

    call_id: int
    action: str
    method: str
    host: str
    outcome: Literal["ok", "error", "ambiguous"]
    error_type: str | None
    duration: float
    error: BaseException | None = None


ItemPhase = Literal["planned", "uploaded", "created", "active", "failed", "skipped", "retryable"]


@dataclass(frozen=True, slots=True)
class ItemEvent:
    """An ingest item moved to ``state``; ``reason`` says why a retryable one goes again."""

    key: str
    state: ItemPhase
    asset_id: str | None = None
    error_code: str | None = None
    reason: str | None = None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """An ingest ``started`` or ``ended`` (``run_id`` ties the two); at the end the
    report's counts."""

    phase: Literal["started", "ended"]
    run_id: int
    group_id: str
    duration: float = 0.0
    counts: Mapping[str, int] | None = None
    fatal: str | None = None


@dataclass(frozen=True, slots=True)
class SlotEvent:
    """A Processing slot ``taken`` / ``freed``, or ``lease_expired`` (freed after its
    lease); ``in_use`` and ``limit`` describe the pool after the change."""

    kind: Literal["taken", "freed", "lease_expired"]
    holder: str | None
    asset_id: str | None
    in_use: int
    limit: int


@dataclass(frozen=True, slots=True)
class SweepEvent:
    """The watcher's sweep: ``switched`` to the robust path (``reason``), or an asset
    ``finished`` (``asset_id``, ``status``)."""

    kind: Literal["switched", "finished"]
    reason: str | None = None
    asset_id: str | None = None
    status: str | None = None


HookEvent = (
    AttemptEvent
    | RetryEvent
    | ThrottleEvent
    | CallEvent
    | ItemEvent
    | IngestEvent
    | SlotEvent
    | SweepEvent
)
Hook = Callable[[HookEvent], None]


class HookSet:
    """The hooks of one client. Falsy when empty: emitters test it before building an
    event, so no hook costs nothing."""

    __slots__ = ("_failing", "_hooks", "failures")

    def __init__(self, hooks: Iterator[Hook] | list[Hook] | tuple[Hook, ...] = ()) -> None:
        self._hooks: list[Hook] = list(hooks)
        self.failures = 0
        #: id(hook) -> (time of the last WARNING, failures since)
        self._failing: dict[int, list[float]] = {}

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    def __contains__(self, hook: object) -> bool:
        return hook in self._hooks

    def add(self, hook: Hook) -> None:
        self._hooks.append(hook)

    def remove(self, hook: Hook) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)

    def emit(self, event: HookEvent) -> None:
        for hook in tuple(self._hooks):
            try:
                hook(event)
            except Exception as exc:  # a broken hook must never break a call
                self._failed(hook, exc)

    def _failed(self, hook: Hook, exc: Exception) -> None:
        self.failures += 1
        now = time.monotonic()
        state = self._failing.get(id(hook))
        if state is None:
            self._failing[id(hook)] = [now, 0.0]
            log.warning(
                "event hook %s raised %s; the call goes on (further failures of this hook"
                " are logged at most every %g s)",
                _name(hook),
                type(exc).__name__,
                FAILURE_LOG_INTERVAL,
            )
            return
        state[1] += 1
        if now - state[0] >= FAILURE_LOG_INTERVAL:
            log.warning(
                "event hook %s raised %s (%d failures since the last warning)",
                _name(hook),
                type(exc).__name__,
                int(state[1]),
            )
            state[0], state[1] = now, 0.0


def _name(hook: object) -> str:
    name = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    return str(name)


_SLOT_KINDS = {"slot_taken": "taken", "slot_freed": "freed", "lease_expired": "lease_expired"}


def watcher_event(kind: str, fields: Mapping[str, Any]) -> HookEvent:
    """The typed form (:mod:`chenyu_assets.events`) of a listener's ``(kind, fields)``."""
    if kind in _SLOT_KINDS:
        return SlotEvent(
            _SLOT_KINDS[kind],  # type: ignore[arg-type]
            fields.get("holder"),
            fields.get("asset_id"),
            int(fields.get("in_use", 0)),
            int(fields.get("limit", 0)),
        )
    return SweepEvent(
        "switched" if kind == "switched" else "finished",
        reason=fields.get("reason"),
        asset_id=fields.get("asset_id"),
        status=fields.get("status"),
    )


#: ``hook(event, fields)``: the string events of 0.x ("retry", "rate_limited", "ambiguous").
LegacyHook = Callable[[str, Mapping[str, Any]], None]


def legacy_adapter(hook: LegacyHook) -> Hook:
    """A typed hook feeding ``hook`` the old string events (deprecated: removed in the
    next release)."""
    warnings.warn(
        "add_event_hook(fn(event, fields)) is deprecated and goes in the next release:"
        " use add_hook(fn(event)) with the typed events of chenyu_assets.events",
        DeprecationWarning,
        stacklevel=3,
    )

    def adapt(event: HookEvent) -> None:
        if isinstance(event, RetryEvent):
            fields = {"endpoint": event.action, "attempt": event.attempt}
            hook("retry", {**fields, "error": event.error, "delay": event.delay})
        elif isinstance(event, ThrottleEvent):
            hook("rate_limited", {"endpoint": event.action, "pause": event.pause})
        elif isinstance(event, CallEvent) and event.outcome == "ambiguous":
            error = getattr(event.error, "__cause__", None) or event.error
            hook("ambiguous", {"endpoint": event.action, "error": error})

    adapt.__qualname__ = _name(hook)
    adapt.legacy = hook  # type: ignore[attr-defined]
    return adapt
