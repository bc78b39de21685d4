"""The attempt loop every call goes through, and the lifecycle every client shares.

``Engine.call`` = wait for the endpoint's limiter → build the request (fresh headers,
signature and body for every attempt) → send → parse → on failure :func:`classify`:
fatal errors are raised, ambiguous creates become
:class:`~chenyu_assets.errors.AmbiguousOutcomeError`, retryable ones wait (backoff,
``Retry-After``, retry budget) and go round again, all within the policy's bounds and the
call's own deadline. A 429 pauses the endpoint for every task of the client.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import SplitResult, urlsplit

from chenyu_assets._core.logs import get_logger, redact_url
from chenyu_assets._core.ratelimit import LimiterRegistry
from chenyu_assets._core.retry import Decision, RetryBudget, RetryPolicy, classify
from chenyu_assets._core.transport import Body, Response, Timeouts, Transport
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    APIError,
    ConfigurationError,
    RateLimitError,
    RequestTimeoutError,
    TransportError,
)

__all__ = ["ClientBase", "Engine", "EventHook", "Prepared", "Stats", "check_base_url"]

T = TypeVar("T")
log = get_logger("chenyu_assets.engine")

#: Called as ``hook(event, fields)`` for "request", "retry", "rate_limited", "ambiguous".
EventHook = Callable[[str, Mapping[str, Any]], None]


@dataclass(slots=True)
class Prepared:
    """One attempt's request: built anew per attempt (fresh X-Date, signature, body)."""

    headers: Mapping[str, str]
    body: Body = None
    params: Sequence[tuple[str, str]] | None = None


@dataclass(slots=True)
class Stats:
    """Counters of one client, for progress displays and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    ambiguous: int = 0
    by_endpoint: collections.Counter[str] = field(default_factory=collections.Counter)


class Engine:
    """Runs calls for one client: shared limiters, retry policy, budget and stats."""

    def __init__(
        self,
        transport: Transport,
        limiters: LimiterRegistry,
        *,
        policy: RetryPolicy,
        budget: RetryBudget | None = None,
    ) -> None:
        self.transport = transport
        self.limiters = limiters
        self.policy = policy
        self.budget = budget
        self.stats = Stats()
        self.hooks: list[EventHook] = []
        #: ``(endpoint, error) -> True`` for a 429 that is not about the request rate (a
        #: family's in-flight cap): it is retried like any 429 but pauses no limiter.
        self.not_a_rate_429: Callable[[str, RateLimitError], bool] | None = None

    def _emit(self, event: str, fields: Mapping[str, Any]) -> None:
        for hook in self.hooks:
            try:
                hook(event, fields)
            except Exception:  # a broken progress bar must not break a call
                log.exception("event hook failed on %s", event)

    async def call(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        prepare: Callable[[int], Awaitable[Prepared]],
        parse: Callable[[Response], T],
        idempotent: bool = True,
        deadline: float | None = None,
        policy_bound: bool = True,
    ) -> T:
        """Run one logical call; see the module docstring. ``deadline`` is in seconds.

        With ``policy_bound`` the attempts and waits of the call (from its first send:
        queueing at the rate limiter before it does not count) end within the policy's
        ``max_elapsed``; uploads turn it off, their attempts being bounded by the
        transport's idle send bound instead (a large upload may take longer)."""
        clock = asyncio.get_running_loop().time  # the loop's clock, like every timer here
        started = clock()
        first_sent: float | None = None
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - (clock() - started)
            if remaining is not None and remaining <= 0:
                raise RequestTimeoutError(
                    f"{endpoint}: deadline of {deadline:g} s passed before attempt {attempt}",
                    method=method,
                    sent=False,
                )
            try:
                async with asyncio.timeout(remaining):
                    grant = await self.limiters.acquire(endpoint)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"{endpoint}: deadline of {deadline:g} s passed waiting for the rate limit",
                    method=method,
                    sent=False,
                ) from None
            try:
                prepared = await prepare(attempt)
            except BaseException:
                grant.cancel()  # never sent: its place in the window goes back
                raise
            if attempt == 1 and self.budget is not None:
                self.budget.record_request()
            self.stats.requests += 1
            self.stats.by_endpoint[endpoint] += 1
            now = clock()
            first_sent = now if first_sent is None else first_sent
            bounds = [self.policy.max_elapsed - (now - first_sent)] if policy_bound else []
            if deadline is not None:
                bounds.append(deadline - (now - started))
            remaining = max(0.001, min(bounds)) if bounds else None
            failure: TransportError | APIError
            try:
                await grant.send()  # waits for the grant's instant; stamps the send time
                try:
                    response = await self.transport.request(
                        method,
                        url,
                        params=prepared.params,
                        headers=prepared.headers,
                        data=prepared.body,
                        deadline=remaining,
                    )
                finally:
                    grant.answered()  # the arrival lies between the stamp and now
                return parse(response)
            except (TransportError, APIError) as exc:
                failure = exc
            decision = classify(failure, idempotent=idempotent)
            if isinstance(failure, RateLimitError):
                self.stats.rate_limited += 1
                pause = failure.retry_after
                if pause is None or pause > self.policy.max_retry_after:
                    pause = self.policy.rate_limit_wait
                if self.not_a_rate_429 is not None and self.not_a_rate_429(endpoint, failure):
                    pause = 0.0  # the service's cap, not the rate: nobody else waits
                else:
                    await self.limiters.pause(endpoint, pause)
                self._emit("rate_limited", {"endpoint": endpoint, "pause": pause})
            if decision is Decision.AMBIGUOUS:
                self.stats.ambiguous += 1
                self._emit("ambiguous", {"endpoint": endpoint, "error": failure})
                raise AmbiguousOutcomeError(endpoint, failure) from failure
            if decision is Decision.FATAL:
                raise failure
            elapsed = clock() - started
            delay = self.policy.next_delay(attempt, failure, elapsed)
            if delay is None or (deadline is not None and elapsed + delay >= deadline):
                raise failure
            # a 429's retry waits for the shared pause and the limiter: it cannot storm
            paced = isinstance(failure, RateLimitError)
            if self.budget is not None and not paced and not self.budget.try_spend():
                log.warning("%s: retry budget exhausted, not retrying %s", endpoint, failure)
                raise failure
            self.stats.retries += 1
            log.info(
                "%s: attempt %d failed (%s); retrying in %.2fs", endpoint, attempt, failure, delay
            )
            self._emit(
                "retry",
                {"endpoint": endpoint, "attempt": attempt, "error": failure, "delay": delay},
            )
            await asyncio.sleep(delay)


def check_base_url(url: str) -> SplitResult:
    """``url`` split, if it is an absolute http(s) URL; else ``ConfigurationError``
    (showing the URL with any credentials in it masked)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL, got {redact_url(url)!r}")
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"base_url must not carry credentials (user:password@), got {redact_url(url)!r}:"
            " pass the key as api_key= (or access_key=/secret_key=)"
        )
    return parts


class ClientBase:
    """What every family client shares: no I/O in ``__init__``; the session is opened in
    ``__aenter__`` inside the running loop and closed in ``__aexit__``."""

    def __init__(
        self,
        *,
        limiters: LimiterRegistry,
        session: Any = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        connection_limit: int = 100,
        ca_bundle: str | None = None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._closers = tuple(closers)  # resources the client owns besides its session
        self._transport = Transport(
            session=session,
            timeouts=timeouts,
            connection_limit=connection_limit,
            ca_bundle=ca_bundle,
        )
        self._engine = Engine(
            self._transport,
            limiters,
            policy=retry or RetryPolicy(),
            budget=retry_budget if retry_budget is not None else RetryBudget(),
        )

    @property
    def stats(self) -> Stats:
        return self._engine.stats

    @property
    def limiters(self) -> LimiterRegistry:
        return self._engine.limiters

    def add_event_hook(self, hook: EventHook) -> None:
        """Receive ("retry" | "rate_limited" | "ambiguous", fields) events."""
        self._engine.hooks.append(hook)

    def remove_event_hook(self, hook: EventHook) -> None:
        if hook in self._engine.hooks:
            self._engine.hooks.remove(hook)

    async def __aenter__(self) -> Self:
        await self._transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            await self._transport.close()
        finally:
            for close in self._closers:
                await close()
