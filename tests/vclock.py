"""A real asyncio event loop on virtual time.

When the loop would block in ``select`` with nothing ready, the virtual clock jumps
forward by the timeout instead of sleeping, so timers fire in order, instantly. Code
under test uses ``loop.time()`` / ``call_at`` as usual.

Sockets still work: ``select`` is polled with timeout 0 first, and over loopback between
two ends in the same process the bytes are readable as soon as ``write`` returns, so an
in-process emulator and a client exchange requests without the clock moving.

Work handed to threads (``loop.run_in_executor``, ``asyncio.to_thread``, aiohttp's
resolver, aiofiles, ``anyio.to_thread.run_sync``) is counted: while any is outstanding the
clock stands still and the loop blocks for real until the thread reports back. Without
that, a slow thread on a loaded machine would let virtual time leap past every deadline
and the verdict would depend on how busy the machine is.

``run_virtual(main)`` runs a coroutine to completion on such a loop. ``emulator_clock(loop)``
is an emulator :class:`~chenyu_assets.emulator.Clock` on the same virtual time, so that the
emulator's windows, pauses and processing delays are exact.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import selectors
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")

#: How long one real wait for a thread or a socket blocks before the selector looks again.
_POLL = 0.002
#: A thread or socket that has not caught up after this many real seconds is a hang, not load.
_HANG = 120.0
#: Linux ioctl: bytes in a socket's send queue not yet sent (linux/sockios.h).
_SIOCOUTQNSD = 0x894B


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.jumps = 0

    def time(self) -> float:
        return self.now


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock
        self.threads_busy = 0  # work handed to threads and not yet reported back

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        give_up = time.monotonic() + _HANG
        while self.threads_busy or self._bytes_in_flight():
            # A thread is working or a socket's bytes are still on their way (a loaded
            # kernel may deliver loopback data late): wait in real time, virtual time
            # stands still.
            if time.monotonic() > give_up:
                raise RuntimeError("vclock: threads or sockets did not catch up in 120 s")
            events = super().select(_POLL)
            if events:
                return events
        if timeout is not None and timeout > 0:
            self._clock.now += timeout
            self._clock.jumps += 1
            return events
        # No timer at all: only another thread or process can wake the loop; wait for real,
        # and call a loop that nothing wakes in 120 s what it is (a deadlock, not load).
        events = super().select(_HANG)
        if not events:
            raise RuntimeError("vclock: nothing scheduled and nothing woke the loop in 120 s")
        return events

    def _bytes_in_flight(self) -> bool:
        """True while a connect is pending, a send buffer is full, or a registered socket
        still has bytes the kernel has not sent (``SIOCOUTQNSD``; bytes sent but not yet
        acknowledged are already in the peer's queue on loopback, and counting them would
        wait out every delayed ACK)."""
        for key in self.get_map().values():
            if key.events & selectors.EVENT_WRITE:
                return True
            try:
                raw = fcntl.ioctl(key.fd, _SIOCOUTQNSD, b"\0\0\0\0")
            except OSError:
                continue
            if struct.unpack("i", raw)[0] > 0:
                return True
        return False


class _VirtualLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` is the virtual clock and that counts thread work."""

    def __init__(self, clock: VirtualClock) -> None:
        self._jumping = _JumpingSelector(clock)
        super().__init__(self._jumping)
        self._vclock = clock

    def time(self) -> float:
        return self._vclock.now

    def track(self, fut: asyncio.Future[Any]) -> None:
        """Count ``fut`` as thread work until it is done."""
        self._jumping.threads_busy += 1

        def done(_: object) -> None:
            self._jumping.threads_busy -= 1

        fut.add_done_callback(done)

    def run_in_executor(  # type: ignore[override]
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[..., T],
        *args: Any,
    ) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self.track(fut)
        return fut


@contextlib.contextmanager
def _counted_anyio_threads(loop: _VirtualLoop) -> Iterator[None]:
    """anyio runs its own worker threads (not ``run_in_executor``): count those too."""
    original = anyio.to_thread.run_sync

    async def run_sync(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if asyncio.get_running_loop() is not loop:
            return await original(func, *args, **kwargs)
        fut: asyncio.Future[None] = loop.create_future()
        loop.track(fut)
        try:
            return await original(func, *args, **kwargs)
        finally:
            fut.set_result(None)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original


def run_virtual(
    main: Callable[[], Awaitable[T]], *, start: float = 1000.0
) -> tuple[T, VirtualClock]:
    """Run ``main()`` on a fresh virtual-time loop; return its result and the clock."""
    clock = VirtualClock(start)
    loop = _VirtualLoop(clock)
    try:
        with _counted_anyio_threads(loop):
            result: Any = loop.run_until_complete(main())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return result, clock


def emulator_clock(offset: float = 0.0) -> Any:
    """An emulator ``Clock`` that reads the running (virtual) loop's time.

    Emulated wall time starts at the real wall time and then moves with the virtual clock;
    request signatures are still checked against the real wall clock (``signing_now``), which
    is what an SDK client signs with.
    """
    from chenyu_assets.emulator import Clock

    loop = asyncio.get_running_loop()
    return Clock(monotonic=loop.time, offset=lambda: offset)


def virtual(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Decorator: run an ``async def`` test on its own virtual-time loop.

    The wrapper is a plain function, so pytest's fixtures (``tmp_path``...) still work and
    the anyio plugin leaves it alone; every timer, deadline, retry pause and limiter inside
    (and an emulator built with ``clock=emulator_clock()``) runs on virtual time.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        result, _ = run_virtual(lambda: fn(*args, **kwargs))
        return result  # type: ignore[no-any-return]

    return wrapper
