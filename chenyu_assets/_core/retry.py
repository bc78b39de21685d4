"""When to try again, and how long to wait.

``classify(failure, idempotent=...)`` (in :mod:`chenyu_assets.errors`, beside the errors it
reads; :func:`chenyu_assets.errors.is_transient` is its public yes/no) is the one decision
table:

=====================================  ==============  =====================
failure                                idempotent      create (not idempotent)
=====================================  ==============  =====================
TLSVerificationError                   fatal           fatal
ConnectError (nothing sent)            retry           retry
RequestTimeoutError, sent=False        retry           retry
RequestTimeoutError, sent=True         retry           ambiguous
ConnectionLostError (reset, closed)    retry           ambiguous
RateLimitError (429, FlowLimitExceeded) retry          retry (refused, not done)
HTTP 408                               retry           retry (not processed)
ServerError 500/502/503/504            retry           ambiguous
ServerError other 5xx (501, 505, ...)  fatal           fatal
ResponseFormatError (HTML, truncated)  retry           ambiguous
ResponseFormatError, not retryable     fatal           ambiguous
  (too deep, too big, wrong types,
  undecodable; PaginationError)
RedirectError (any 3xx)                fatal           fatal
any other APIError (400/401/403/404)   fatal           fatal
anything else                          fatal           fatal
=====================================  ==============  =====================

An ambiguous create is never re-sent by the core; the engine raises
:class:`~chenyu_assets.errors.AmbiguousOutcomeError` and the batch engine reconciles.

``RetryPolicy`` bounds retries by attempts and by total time, waits with exponential
backoff and full jitter, and honours a server's ``Retry-After`` up to ``max_retry_after``
(above it, the error is raised with ``retry_after`` set). ``RetryBudget`` is a token
bucket shared by a client's calls: every first attempt deposits ``ratio`` of a token,
every retry spends one, so a failing service sees at most ``ratio`` extra load (plus a
small floor) instead of a storm. ``set_testing(True)`` turns every wait into zero.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from chenyu_assets.errors import Decision, RateLimitError, classify

__all__ = [
    "Decision",
    "RetryBudget",
    "RetryPolicy",
    "classify",
    "is_testing",
    "parse_retry_after",
    "set_testing",
]

_testing = False


def set_testing(enabled: bool) -> None:
    """Make every backoff wait zero seconds (for tests of retry logic)."""
    global _testing
    _testing = enabled


def is_testing() -> bool:
    return _testing


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or HTTP-date).

    Garbage, infinities and NaN give None (ignored); a date in the past gives 0.
    ``headers`` lookups must be case-insensitive (aiohttp's headers are).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms.strip())
        except ValueError:
            ms = math.nan
        if math.isfinite(ms):
            return max(0.0, ms / 1000.0)
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and pacing of retries. Times are seconds.

    ``max_attempts`` counts the first try; ``max_elapsed`` bounds the whole call including
    waits; ``max_retry_after`` is the longest server-requested wait we accept;
    ``rate_limit_wait`` is the pause after a 429 that gave no ``Retry-After``.
    """

    max_attempts: int = 5
    max_elapsed: float = 60.0
    base_delay: float = 0.2
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    rate_limit_wait: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_elapsed <= 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry times must be positive")

    @classmethod
    def none(cls) -> RetryPolicy:
        """Never retry."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))]."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return ceiling * rng()

    def next_delay(
        self,
        attempt: int,
        failure: BaseException,
        elapsed: float,
        rng: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up.

        ``attempt`` is the number of attempts made so far (1 after the first failure).
        A ``RateLimitError`` whose ``retry_after`` exceeds ``max_retry_after`` gives None:
        the caller raises it with ``retry_after`` set.
        """
        if attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt, rng)
        if isinstance(failure, RateLimitError):
            hint = failure.retry_after
            if hint is not None and hint > self.max_retry_after:
                return None
            floor = hint if hint is not None else self.rate_limit_wait
            delay = floor + delay * 0.1  # honour the hint, spread the herd a little
        if elapsed + delay > self.max_elapsed:
            return None
        return 0.0 if _testing else delay


class RetryBudget:
    """A token bucket for retries: first attempts deposit ``ratio``, retries spend 1.

    ``floor_per_second`` keeps a trickle of retries possible for a client that sends
    little; ``capacity`` caps the savings. Uses ``time.monotonic`` (thread-agnostic).
    """

    __slots__ = ("_capacity", "_floor", "_last", "_ratio", "_tokens", "denied", "spent")

    def __init__(
        self, *, ratio: float = 0.2, floor_per_second: float = 2.0, capacity: float = 20.0
    ) -> None:
        if ratio < 0 or floor_per_second < 0 or capacity < 1:
            raise ValueError("ratio and floor must be >= 0 and capacity >= 1")
        self._ratio = ratio
        self._floor = floor_per_second
        self._capacity = capacity
        self._tokens = capacity
        self._last = time.monotonic()
        self.spent = 0
        self.denied = 0

    def __repr__(self) -> str:
        return (
            f"<RetryBudget tokens={self._tokens:.1f}/{self._capacity:g} ratio={self._ratio} "
            f"spent={self.spent} denied={self.denied}>"
        )

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._floor)
        self._last = now

    def record_request(self) -> None:
        """A first attempt was made."""
        self._refill()
        self._tokens = min(self._capacity, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        """Take one retry token; False when the budget is exhausted."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.spent += 1
            return True
        self.denied += 1
        return False
