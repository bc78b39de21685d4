"""The bounds of one HTTP attempt: :class:`Timeouts` (the user's settings) and
:class:`Clock` (one attempt's phases, each bound in force in turn)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from chenyu_assets.errors import ConfigurationError

__all__ = ["Clock", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The bounds of one attempt, in seconds (all positive and finite).

    ``connect``: opening a connection. ``write``: the longest stall while the request body
    is sent (between two chunks), so an upload of any size is fine while it progresses.
    ``headers``: from the end of the request body (for a request without a body: from the
    start, connecting included) to the end of the answer's headers.
    ``read``: the longest silence between two bytes of the answer. ``total``: from the end
    of the request body to the last byte of the answer: a server trickling its headers or
    body byte by byte ends with ``RequestTimeoutError`` however small each silence is.
    """

    connect: float = 10.0
    read: float = 60.0
    headers: float = 60.0
    total: float = 120.0
    write: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "headers", "total", "write"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"Timeouts.{name} must be a positive number of seconds")


class Clock:
    """The phases of one attempt and the call's own deadline, behind one ``asyncio.timeout``:
    sending (idle: every chunk taken moves the bound), waiting for the headers, and the
    whole answer (both counted from the end of the body).

    The bound moves at every phase change and every chunk, but its timer does not: one
    loop timer is armed at the earliest instant the attempt may have to end, and only
    re-armed when a bound moves *earlier* than it, or when it fires and the bound in force
    has since moved later. A quick request costs one timer, not one per phase and chunk.
    ``expired_by`` tells which bound ended the attempt: ``"phase"`` or ``"deadline"``.
    """

    __slots__ = (
        "_armed",
        "_bound",
        "_cap",
        "_handle",
        "_loop",
        "_sent_at",
        "_timeouts",
        "_when",
        "expired_by",
        "phase",
    )

    def __init__(
        self, bound: asyncio.Timeout, timeouts: Timeouts, deadline: float | None = None
    ) -> None:
        self._bound = bound
        self._timeouts = timeouts
        self._loop = asyncio.get_running_loop()
        self._cap = math.inf if deadline is None else self._loop.time() + deadline
        self._when = math.inf  # the phase's bound (loop time)
        self._armed = math.inf  # when the timer fires
        self._handle: asyncio.TimerHandle | None = None
        self._sent_at: float | None = None
        self.expired_by: str | None = None
        self.phase = "start"
        if deadline is not None:
            self._arm(self._cap)

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._fire)

    def _set(self, when: float) -> None:
        if self.phase == "done":  # aiohttp's writer task may outlive the attempt
            return
        self._when = when
        if when < self._armed:
            self._arm(when)

    def _fire(self) -> None:
        self._handle, self._armed = None, math.inf
        if self.phase == "done" or self._bound.expired():
            return
        due = min(self._when, self._cap)
        if due > self._loop.time():  # the bound moved later since the timer was armed
            self._arm(due)
            return
        self.expired_by = "deadline" if self._cap <= self._when else "phase"
        self._bound.reschedule(self._loop.time())  # expires now: the attempt is cancelled

    def done(self) -> None:
        """The attempt is over: later progress reports (from the writer task) are ignored."""
        self.phase = "done"
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def start_sending(self) -> None:
        self.phase = "write"
        self._set(self._loop.time() + self._timeouts.connect + self._timeouts.write)

    def progress(self) -> None:
        if self.phase == "write":
            self._set(self._loop.time() + self._timeouts.write)

    def sent(self) -> None:
        if self.phase in ("start", "write"):  # not once the answer has begun
            self._sent_at = self._loop.time()
            self.phase = "headers"
            self._set(self._sent_at + self._timeouts.headers)

    def answered(self) -> None:
        if self.phase == "done":
            return
        base = self._sent_at if self._sent_at is not None else self._loop.time()
        self.phase = "total"
        self._set(base + self._timeouts.total)

    def describe(self) -> str:
        t = self._timeouts
        if self.phase == "write":
            return f"the request body stalled for {t.write:g} s (Timeouts.write)"
        if self.phase == "headers":
            return f"no complete answer headers within {t.headers:g} s (Timeouts.headers)"
        return f"the answer was not complete within {t.total:g} s (Timeouts.total)"
