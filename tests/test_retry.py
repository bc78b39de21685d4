from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from chenyu_assets._core.retry import (
    Decision,
    RetryBudget,
    RetryPolicy,
    classify,
    parse_retry_after,
    set_testing,
)
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ConnectionLostError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    TLSVerificationError,
    api_error_for,
    is_transient,
)

R, F, A = Decision.RETRY, Decision.FATAL, Decision.AMBIGUOUS

CASES = [
    # failure, idempotent decision, create decision
    (ConnectError("refused"), R, R),
    (RequestTimeoutError("connect", sent=False), R, R),
    (RequestTimeoutError("read"), R, A),
    (ConnectionLostError("reset"), R, A),
    (TLSVerificationError("bad cert"), F, F),
    (RateLimitError("slow down", status=429, code="FlowLimitExceeded"), R, R),
    (APIError("timeout", status=408), R, R),
    (ServerError("boom", status=500, code="InternalError"), R, A),
    (ServerError("bad gw", status=502), R, A),
    (ServerError("unavailable", status=503), R, A),
    (ServerError("gw timeout", status=504), R, A),
    (ServerError("not impl", status=501), F, F),
    (ServerError("version", status=505), F, F),
    (ResponseFormatError("html", status=502), R, A),
    (ResponseFormatError("truncated json", status=200), R, A),
    (ResponseFormatError("html 404", status=404), F, F),
    (BadRequestError("x", status=400, code="MissingParameter.Name"), F, F),
    (BadRequestError("x", status=400, code="InvalidTimestamp"), F, F),
    (AuthenticationError("x", status=401, code="SignatureDoesNotMatch"), F, F),
    (AuthenticationError("x", status=401, code="InvalidAccessKey"), F, F),
    (PermissionDeniedError("x", status=403, code="AccessDenied"), F, F),
    (NotFoundError("x", status=404, code="NotFound.asset_id"), F, F),
    (NotFoundError("x", status=404, code="InvalidActionOrVersion"), F, F),
    (PayloadTooLargeError("x", status=413), F, F),
    (ValueError("a bug"), F, F),
]


@pytest.mark.parametrize(("failure", "idem", "create"), CASES, ids=lambda c: repr(c)[:40])
def test_classify_table(failure: BaseException, idem: Decision, create: Decision) -> None:
    assert classify(failure, idempotent=True) is idem
    assert classify(failure, idempotent=False) is create


@pytest.mark.parametrize(("failure", "idem", "create"), CASES, ids=lambda c: repr(c)[:40])
def test_is_transient_is_the_tables_retry_column(
    failure: BaseException, idem: Decision, create: Decision
) -> None:
    # the public predicate the batch engine (and users) depend on, instead of classify
    assert is_transient(failure) is (idem is Decision.RETRY)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "MissingParameter", BadRequestError),
        (200, "InvalidParameter.DownloadFailed", BadRequestError),
        (200, "FlowLimitExceeded", RateLimitError),
        (200, "NotFound.group_id", NotFoundError),
        (200, "SignatureDoesNotMatch", AuthenticationError),
        (200, "AccessDenied", PermissionDeniedError),
        (200, "InternalError", ServerError),
        (None, "SomethingNew", APIError),
        (503, None, ServerError),
        (418, None, APIError),
    ],
)
def test_every_vendor_code_maps_to_its_class(
    status: int | None, code: str | None, cls: type[APIError]
) -> None:
    assert api_error_for(status, code) is cls


NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": " 1.5 "}, 1.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"Retry-After": format_datetime(NOW - timedelta(seconds=30), usegmt=True)}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "junk", "Retry-After": "9"}, 9.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    got = parse_retry_after(CIMultiDict(headers), now=NOW)
    assert got == (pytest.approx(expected, abs=1) if expected is not None else None)


def test_backoff_is_full_jitter_bounded_by_attempts_and_time() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=5.0, max_elapsed=100)
    assert policy.backoff(1, rng=lambda: 1.0) == 1.0
    assert policy.backoff(3, rng=lambda: 1.0) == 4.0
    assert policy.backoff(10, rng=lambda: 1.0) == 5.0  # capped
    assert policy.backoff(3, rng=lambda: 0.0) == 0.0  # full jitter reaches zero
    err = ServerError("x", status=503)
    assert policy.next_delay(3, err, 0.0, rng=lambda: 0.5) == 2.0
    assert policy.next_delay(4, err, 0.0) is None  # attempts exhausted
    assert policy.next_delay(1, err, 99.9, rng=lambda: 1.0) is None  # would pass max_elapsed
    rng = random.Random(1)
    delays = [policy.backoff(2, rng=rng.random) for _ in range(1000)]
    assert 0 <= min(delays) < 0.1
    assert 1.9 < max(delays) <= 2.0


def test_retry_after_is_honoured_up_to_a_cap_and_then_raised() -> None:
    policy = RetryPolicy(max_retry_after=30, max_elapsed=100)
    hinted = RateLimitError("x", status=429, retry_after=12.0)
    delay = policy.next_delay(1, hinted, 0.0, rng=lambda: 0.0)
    assert delay == 12.0
    too_long = RateLimitError("x", status=429, retry_after=31.0)
    assert policy.next_delay(1, too_long, 0.0) is None
    assert too_long.retry_after == 31.0
    bare = RateLimitError("x", status=429)
    assert policy.next_delay(1, bare, 0.0, rng=lambda: 0.0) == policy.rate_limit_wait


def test_testing_switch_turns_sleeping_off() -> None:
    policy = RetryPolicy(base_delay=10, max_delay=10, max_elapsed=1000)
    set_testing(True)
    try:
        assert policy.next_delay(1, ServerError("x", status=503), 0.0) == 0.0
    finally:
        set_testing(False)
    assert policy.next_delay(1, ServerError("x", status=503), 0.0, rng=lambda: 1.0) == 10.0


def test_retry_budget_stops_storms() -> None:
    budget = RetryBudget(ratio=0.1, floor_per_second=0.0, capacity=5)
    spent = sum(budget.try_spend() for _ in range(50))
    assert spent == 5  # the savings, then nothing
    for _ in range(100):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(50)) == 5  # 100 requests x 0.1, capped at 5
    assert budget.denied == 90
    assert "spent=10" in repr(budget)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    assert RetryPolicy.none().next_delay(1, ServerError("x", status=503), 0) is None
