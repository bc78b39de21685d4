"""The emulator's one clock.

Three readings, all derived from one injectable monotonic source and one wall source:

* :meth:`Clock.elapsed` — real seconds since the emulator started (audit timestamps,
  rate-limit windows, list lag);
* :meth:`Clock.now` — emulated Unix time: starts at the real wall time, runs
  ``time_scale`` times faster, is shifted by ``clock_offset_seconds`` and by
  :meth:`Clock.advance` (asset TTLs, signed-URL expiry, CreateTime/UpdateTime);
* :meth:`Clock.signing_now` — real wall time plus ``clock_offset_seconds`` (the ``X-Date``
  skew check; not scaled, so a sped-up emulator still accepts honest clients).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock"]


class Clock:
    """Scaled, shiftable time for one emulator.

    ``scale`` and ``offset`` are callables so the clock follows the live config; a change of
    scale applies from the previous reading on, so emulated time never jumps.
    """

    __slots__ = (
        "_advanced",
        "_anchor_elapsed",
        "_anchor_emulated",
        "_mono",
        "_mono0",
        "_offset",
        "_scale",
        "_wall",
    )

    def __init__(
        self,
        *,
        scale: Callable[[], float] = lambda: 1.0,
        offset: Callable[[], float] = lambda: 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._mono = monotonic
        self._wall = wall
        self._scale = scale
        self._offset = offset
        self._mono0 = monotonic()
        self._anchor_elapsed = 0.0
        self._anchor_emulated = wall()
        self._advanced = 0.0

    def elapsed(self) -> float:
        """Real (unscaled) seconds since the clock was created."""
        return self._mono() - self._mono0

    def now(self) -> float:
        """Emulated Unix time in seconds."""
        elapsed = self.elapsed()
        # Re-anchor at every reading: a scale change applies from the previous reading on,
        # and emulated time never jumps or runs backwards.
        self._anchor_emulated += (elapsed - self._anchor_elapsed) * self._scale()
        self._anchor_elapsed = elapsed
        return self._anchor_emulated + self._advanced + self._offset()

    def now_datetime(self) -> datetime:
        """:meth:`now` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def signing_now(self) -> datetime:
        """Real wall time plus the configured offset, for request-signature skew checks."""
        return datetime.fromtimestamp(self._wall() + self._offset(), tz=UTC)

    def advance(self, seconds: float) -> None:
        """Jump emulated time forward (tests: expire TTLs and signed URLs at once)."""
        if seconds < 0:
            raise ValueError("the emulated clock only moves forward")
        self._advanced += seconds

    def scale(self) -> float:
        """The current time scale."""
        return self._scale()

    def __repr__(self) -> str:
        return f"Clock(elapsed={self.elapsed():.3f}, scale={self._scale()})"
