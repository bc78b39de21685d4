"""Per-account, per-action request-rate enforcement, in one of three server models.

``EmulatorConfig.window`` (alias ``limit_model``) picks how a real service might count:

* ``sliding`` (default, strict): accepted only if fewer than ``limit`` requests were
  accepted in the trailing window, i.e. no window ``(t - W, t]`` ever holds more;
* ``fixed``: at most ``limit`` per fixed window ``[k·W, (k+1)·W)`` of the emulator's clock
  (so two windows' worth can pass within ``W`` across a boundary);
* ``bucket[:B]``: a token bucket of ``B`` tokens (default 2), refilled at ``limit / W``
  per second, starting full; ``token_bucket`` (the old name) is a bucket of ``limit`` tokens.

A rate is ``EmulatorConfig.rates[action]``: requests per second, or ``"N/s"`` /
``"N/min"``; a key ``"ACCOUNT/ACTION"`` gives that account its own rate. ``time_scale``
multiplies every limit. A refused request never consumes capacity, and nothing is queued:
the caller answers 429 at once. :meth:`RateLimiter.refund` gives back an acceptance the
handler later turned into a 429 (the in-flight cap, which the store counts).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping

from chenyu_assets.limits import Rate

__all__ = ["MODELS", "RateLimiter"]

#: The server models ``window`` may name (``bucket:B`` sets the burst).
MODELS = ("sliding", "fixed", "bucket", "token_bucket")
_DEFAULT_BURST = 2


class _Sliding:
    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def try_take(self, now: float, limit: int, window: float) -> bool:
        times = self.times
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    def give_back(self) -> None:
        if self.times:
            self.times.pop()


class _Fixed:
    __slots__ = ("count", "index")

    def __init__(self) -> None:
        self.index = -1
        self.count = 0

    def try_take(self, now: float, limit: int, window: float) -> bool:
        index = math.floor(now / window)
        if index != self.index:
            self.index, self.count = index, 0
        if self.count >= limit:
            return False
        self.count += 1
        return True

    def give_back(self) -> None:
        self.count = max(0, self.count - 1)


class _Bucket:
    __slots__ = ("burst", "last", "tokens")

    def __init__(self, burst: int | None) -> None:
        self.burst = burst
        self.tokens = math.inf  # full, whatever the capacity turns out to be
        self.last = -math.inf

    def try_take(self, now: float, limit: int, window: float) -> bool:
        capacity = float(self.burst or limit)
        elapsed = max(0.0, now - self.last) if self.last > -math.inf else 0.0
        self.tokens = min(capacity, self.tokens + elapsed * limit / window)
        self.last = now
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        self.tokens += 1.0


def parse_model(text: str) -> tuple[str, int | None]:
    """``"bucket:3"`` -> ("bucket", 3); ``"token_bucket"`` -> ("bucket", None: burst = limit)."""
    name, _, burst = text.partition(":")
    if name == "token_bucket":
        return "bucket", None
    if name == "bucket":
        return "bucket", int(burst) if burst else _DEFAULT_BURST
    return name, None


class RateLimiter:
    """Accept-or-refuse decisions per ``(account, action)``.

    ``rates``, ``scale`` and ``strategy`` (the model) are read on every call so the limiter
    follows the live config. Actions absent from ``rates`` are not limited.
    """

    __slots__ = ("_rates", "_scale", "_states", "_strategy")

    def __init__(
        self,
        *,
        rates: Callable[[], Mapping[str, float | str]],
        scale: Callable[[], float],
        strategy: Callable[[], str],
    ) -> None:
        self._rates = rates
        self._scale = scale
        self._strategy = strategy
        self._states: dict[tuple[str, str, str], _Sliding | _Fixed | _Bucket] = {}

    def rate(self, action: str, account: str | None = None) -> Rate | None:
        """``action``'s rate for ``account`` now (scaled), or None when unlimited."""
        rates = self._rates()
        spec = rates.get(f"{account}/{action}") if account is not None else None
        if spec is None:
            spec = rates.get(action)
        if spec is None:
            return None
        rate = Rate.parse(spec)
        return Rate(max(1, math.floor(rate.limit * self._scale() + 1e-9)), rate.window)

    def capacity(self, action: str, account: str | None = None) -> int | None:
        """Requests per window for ``action`` now, or None when unlimited."""
        rate = self.rate(action, account)
        return None if rate is None else rate.limit

    def try_acquire(self, account: str, action: str, now: float) -> bool:
        """Take one place at emulator time ``now`` (seconds); False means answer 429."""
        rate = self.rate(action, account)
        if rate is None:
            return True
        model = self._strategy()
        key = (model, account, action)
        state = self._states.get(key)
        if state is None:
            name, burst = parse_model(model)
            if name == "sliding":
                state = _Sliding()
            elif name == "fixed":
                state = _Fixed()
            else:
                state = _Bucket(burst)
            self._states[key] = state
        return state.try_take(now, rate.limit, rate.window)

    def refund(self, account: str, action: str, now: float) -> None:
        """Give back the most recent acceptance (the request was refused after all)."""
        state = self._states.get((self._strategy(), account, action))
        if state is not None:
            state.give_back()

    def __repr__(self) -> str:
        return f"RateLimiter(model={self._strategy()!r}, states={len(self._states)})"
