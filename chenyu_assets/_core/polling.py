"""``wait_until``: poll with a growing, jittered interval until done or the deadline."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chenyu_assets.errors import WaitTimeoutError, clean_text

__all__ = ["wait_until"]

T = TypeVar("T")


async def wait_until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 1.0,
    max_interval: float = 10.0,
    factor: float = 1.5,
    jitter: float = 0.1,
    describe: Callable[[T | None], str] = lambda _: "condition",
) -> T:
    """Call ``fetch`` until ``done(result)``; raise ``WaitTimeoutError`` at ``timeout`` s.

    The interval starts at ``interval``, grows by ``factor`` up to ``max_interval``, is
    spread by ±``jitter`` (a fraction), and never sleeps past the deadline.
    """
    if timeout <= 0 or interval <= 0:
        raise ValueError("timeout and interval must be positive")
    deadline = asyncio.get_running_loop().time() + timeout
    last: T | None = None
    wait = interval
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                last = await fetch()
        except TimeoutError:
            break
        if done(last):
            return last
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        spread = wait * (1 + random.uniform(-jitter, jitter))
        await asyncio.sleep(min(spread, remaining))
        wait = min(max_interval, wait * factor)
    # the description may quote the server's last answer: redacted like any server text
    raise WaitTimeoutError(clean_text(f"{describe(last)} not reached within {timeout:g} s"))
