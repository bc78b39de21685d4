"""A real asyncio event loop on virtual time.

When the loop would block in ``select`` with nothing ready, the virtual clock jumps
forward by the timeout instead of sleeping, so timers fire in order, instantly. Code
under test uses ``loop.time()`` / ``call_at`` as usual. Sockets still work (select is
polled with timeout 0), but tests on this loop should not rely on real I/O latency.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout is not None and timeout > 0:
            self._clock.now += timeout
        return events


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


def run_virtual(
    main: Callable[[], Awaitable[T]], *, start: float = 1000.0
) -> tuple[T, VirtualClock]:
    clock = VirtualClock(start)
    loop = asyncio.SelectorEventLoop(_JumpingSelector(clock))
    loop.time = clock.time  # type: ignore[method-assign]
    try:
        result: Any = loop.run_until_complete(main())
    finally:
        loop.close()
    return result, clock
