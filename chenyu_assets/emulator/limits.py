"""Per-account, per-action request-rate enforcement.

Two strategies, chosen by ``EmulatorConfig.window``:

* ``sliding`` (default, strict): an action is accepted only if fewer than
  ``rate × time_scale`` requests were accepted in the last second, i.e. no window
  ``(t - 1, t]`` ever holds more than the limit;
* ``token_bucket``: capacity ``rate × time_scale`` tokens, refilled continuously at that
  rate per second, starting full.

A refused request never consumes capacity, and nothing is queued: the caller answers 429 at
once. :meth:`RateLimiter.refund` gives back an acceptance the handler later turned into a 429
(the in-flight cap). The in-flight cap itself is counted by the store.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping

__all__ = ["RateLimiter"]

_WINDOW = 1.0


class _Sliding:
    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def try_take(self, now: float, capacity: int) -> bool:
        times = self.times
        while times and times[0] <= now - _WINDOW:
            times.popleft()
        if len(times) >= capacity:
            return False
        times.append(now)
        return True

    def give_back(self, now: float) -> None:
        if self.times:
            self.times.pop()


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, capacity: float, now: float) -> None:
        self.tokens = capacity
        self.last = now

    def try_take(self, now: float, capacity: int) -> bool:
        self.tokens = min(float(capacity), self.tokens + (now - self.last) * capacity)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self, now: float) -> None:
        self.tokens += 1.0


class RateLimiter:
    """Accept-or-refuse decisions per ``(account, action)``.

    ``rates``, ``scale`` and ``strategy`` are read on every call so the limiter follows the
    live config. Actions absent from ``rates`` are not limited.
    """

    __slots__ = ("_rates", "_scale", "_states", "_strategy")

    def __init__(
        self,
        *,
        rates: Callable[[], Mapping[str, float]],
        scale: Callable[[], float],
        strategy: Callable[[], str],
    ) -> None:
        self._rates = rates
        self._scale = scale
        self._strategy = strategy
        self._states: dict[tuple[str, str, str], _Sliding | _Bucket] = {}

    def capacity(self, action: str) -> int | None:
        """Requests per window for ``action`` now, or None when unlimited."""
        rate = self._rates().get(action)
        if rate is None:
            return None
        return max(1, math.floor(rate * self._scale() + 1e-9))

    def try_acquire(self, account: str, action: str, now: float) -> bool:
        """Take one slot at real time ``now`` (seconds); False means answer 429."""
        capacity = self.capacity(action)
        if capacity is None:
            return True
        strategy = self._strategy()
        key = (strategy, account, action)
        state = self._states.get(key)
        if state is None:
            state = _Sliding() if strategy == "sliding" else _Bucket(float(capacity), now)
            self._states[key] = state
        return state.try_take(now, capacity)

    def refund(self, account: str, action: str, now: float) -> None:
        """Give back the most recent acceptance (the request was refused after all)."""
        state = self._states.get((self._strategy(), account, action))
        if state is not None:
            state.give_back(now)

    def __repr__(self) -> str:
        return f"RateLimiter(strategy={self._strategy()!r}, states={len(self._states)})"
