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
from chenyu_assets.events import (
    AttemptEvent,
    CallEvent,
    Hook,
    HookSet,
    LegacyHook,
    RetryEvent,
    ThrottleEvent,
    legacy_adapter,
    next_call_id,
)

__all__ = ["ClientBase", "Engine", "EventHook", "Prepared", "Stats", "check_base_url"]

T = TypeVar("T")
log = get_logger("chenyu_assets.engine")

#: Deprecated (goes in the next release): ``hook(event, fields)`` for "retry",
#: "rate_limited", "ambiguous"; use the typed hooks of :mod:`chenyu_assets.events`.
EventHook = LegacyHook


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
        self.hooks = HookSet()
        #: ``(endpoint, error) -> True`` for a 429 that is not about the request rate (a
        #: family's in-flight cap): it is retried like any 429 but pauses no limiter.
        self.not_a_rate_429: Callable[[str, RateLimitError], bool] | None = None

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
        args = (endpoint, method, url, prepare, parse, idempotent, deadline, policy_bound)
        if not self.hooks:
            return await self._attempts(*args, 0)
        call_id = next_call_id()
        started = asyncio.get_running_loop().time()
        try:
            result = await self._attempts(*args, call_id)
        except BaseException as exc:
            if self.hooks:
                self.hooks.emit(_call_event(call_id, args, started, exc))
            raise
        if self.hooks:
            self.hooks.emit(_call_event(call_id, args, started, None))
        return result

    async def _attempts(
        self,
        endpoint: str,
        method: str,
        url: str,
        prepare: Callable[[int], Awaitable[Prepared]],
        parse: Callable[[Response], T],
        idempotent: bool,
        deadline: float | None,
        policy_bound: bool,
        call_id: int,
    ) -> T:
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
            try:  # the grant's instant, and any pause (a 429) begun since: within the deadline
                async with asyncio.timeout_at(None if deadline is None else started + deadline):
                    await grant.send()  # stamps the send time; cancelled, it gives its place back
            except TimeoutError:
                raise RequestTimeoutError(
                    f"{endpoint}: deadline of {deadline:g} s passed waiting for the rate limit",
                    method=method,
                    sent=False,
                ) from None
            now = clock()
            if attempt == 1 and self.budget is not None:
                self.budget.record_request()
            self.stats.requests += 1
            self.stats.by_endpoint[endpoint] += 1
            first_sent = now if first_sent is None else first_sent
            bounds = [self.policy.max_elapsed - (now - first_sent)] if policy_bound else []
            if deadline is not None:
                bounds.append(deadline - (now - started))
            remaining = max(0.001, min(bounds)) if bounds else None
            failure: TransportError | APIError
            response: Response | None = None
            try:
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
                result = parse(response)
            except (TransportError, APIError) as exc:
                failure = exc
            else:
                if self.hooks:
                    self.hooks.emit(
                        _attempt(call_id, endpoint, attempt, url, prepared, response, None, now)
                    )
                return result
            if self.hooks:
                self.hooks.emit(
                    _attempt(call_id, endpoint, attempt, url, prepared, response, failure, now)
                )
            decision = classify(failure, idempotent=idempotent)
            if isinstance(failure, RateLimitError):
                self.stats.rate_limited += 1
                pause = failure.retry_after
                if pause is None or pause > self.policy.max_retry_after:
                    pause = self.policy.rate_limit_wait
                cap = self.not_a_rate_429 is not None and self.not_a_rate_429(endpoint, failure)
                if cap:
                    pause = 0.0  # the service's cap, not the rate: nobody else waits
                else:
                    await self.limiters.pause(endpoint, pause)
                if self.hooks:
                    self.hooks.emit(ThrottleEvent(call_id, endpoint, attempt, pause, cap))
            if decision is Decision.AMBIGUOUS:
                self.stats.ambiguous += 1
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
            if self.hooks:
                self.hooks.emit(_retry(call_id, endpoint, attempt, delay, failure))
            await asyncio.sleep(delay)


def _host(url: str) -> tuple[str, str]:
    """``(host[:port], path)`` of ``url``: never its query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    return (f"{host}:{parts.port}" if parts.port else host), parts.path or "/"


def _attempt(
    call_id: int,
    action: str,
    attempt: int,
    url: str,
    prepared: Prepared,
    response: Response | None,
    failure: TransportError | APIError | None,
    sent_at: float,
) -> AttemptEvent:
    host, path = _host(url)
    body = prepared.body
    status = response.status if response is not None else None
    request_id = None
    if response is not None:
        request_id = response.headers.get("X-Tt-Logid") or response.headers.get("X-Request-Id")
    code = None
    if isinstance(failure, APIError):
        status = failure.status if failure.status is not None else status
        code, request_id = failure.code, failure.request_id or request_id
    method = response.method if response is not None else (getattr(failure, "method", None) or "")
    return AttemptEvent(
        call_id=call_id,
        action=action,
        attempt=attempt,
        method=method,
        url=f"{urlsplit(url).scheme}://{host}{path}",
        host=host,
        path=path,
        status=status,
        error_code=code,
        error_type=type(failure).__name__ if failure is not None else None,
        request_id=request_id,
        bytes_sent=len(body) if isinstance(body, bytes) else (0 if body is None else None),
        bytes_received=len(response.body) if response is not None else 0,
        duration=asyncio.get_running_loop().time() - sent_at,
    )


def _retry(
    call_id: int, action: str, attempt: int, delay: float, failure: TransportError | APIError
) -> RetryEvent:
    api = failure if isinstance(failure, APIError) else None
    return RetryEvent(
        call_id=call_id,
        action=action,
        attempt=attempt,
        delay=delay,
        status=api.status if api is not None else None,
        error_code=api.code if api is not None else None,
        error_type=type(failure).__name__,
        error=failure,
    )


def _call_event(
    call_id: int, args: tuple[Any, ...], started: float, exc: BaseException | None
) -> CallEvent:
    action, method, url = args[0], args[1], args[2]
    outcome = "ok" if exc is None else "ambiguous"
    if exc is not None and not isinstance(exc, AmbiguousOutcomeError):
        outcome = "error"
    return CallEvent(
        call_id=call_id,
        action=action,
        method=method,
        host=_host(url)[0],
        outcome=outcome,  # type: ignore[arg-type]
        error_type=type(exc).__name__ if exc is not None else None,
        duration=asyncio.get_running_loop().time() - started,
        error=exc,
    )


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
        hooks: Sequence[Hook] = (),
    ) -> None:
        self._legacy: dict[EventHook, Hook] = {}
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
        for hook in hooks:
            self.add_hook(hook)

    @property
    def stats(self) -> Stats:
        return self._engine.stats

    @property
    def limiters(self) -> LimiterRegistry:
        return self._engine.limiters

    @property
    def hooks(self) -> HookSet:
        """The typed event hooks (see :mod:`chenyu_assets.events`)."""
        return self._engine.hooks

    def add_hook(self, hook: Hook) -> None:
        """Receive every typed event of this client (attempts, retries, throttling, calls,
        its watcher's slots and sweep, the item transitions of an ingest run on it)."""
        self._engine.hooks.add(hook)

    def remove_hook(self, hook: Hook) -> None:
        self._engine.hooks.remove(hook)

    def add_event_hook(self, hook: EventHook) -> None:
        """Deprecated (goes in the next release; warns): receive the old
        ("retry" | "rate_limited" | "ambiguous", fields) events. Use :meth:`add_hook`."""
        self._legacy[hook] = adapter = legacy_adapter(hook)
        self._engine.hooks.add(adapter)

    def remove_event_hook(self, hook: EventHook) -> None:
        adapter = self._legacy.pop(hook, None)
        if adapter is not None:
            self._engine.hooks.remove(adapter)

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
