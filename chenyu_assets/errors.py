"""Every failure chenyu_assets raises, in one place.

::

    ChenyuAssetsError
    ├── ConfigurationError            bad or missing setting (named; its value never shown)
    ├── TransportError                no usable HTTP response arrived
    │   ├── ConnectError              could not connect: nothing was sent
    │   ├── RequestTimeoutError       connect or read timed out (``.sent`` tells which)
    │   ├── ConnectionLostError       reset / closed mid-request: the server may have acted
    │   └── TLSVerificationError      the server's certificate is not trusted (never retried)
    ├── APIError                      the service answered with an error
    │   ├── BadRequestError           400 (Missing/InvalidParameter*, InvalidTimestamp)
    │   ├── AuthenticationError       401 (missing / bad signature, unknown key)
    │   ├── PermissionDeniedError     403 (AccessDenied, ...)
    │   ├── NotFoundError             404 (NotFound.*, InvalidActionOrVersion)
    │   ├── PayloadTooLargeError      413
    │   ├── RateLimitError            429 (FlowLimitExceeded); ``.retry_after`` in seconds
    │   ├── ServerError               5xx
    │   ├── RedirectError             a 3xx: never followed, never retried (``.location`` redacted)
    │   └── ResponseFormatError       not the family's envelope (HTML, truncated JSON);
    │       │                         ``.retryable`` is False for a hostile answer (too deep,
    │       │                         too big, wrong types, undecodable)
    │       └── PaginationError       a listing that cannot end (repeated page, lying TotalCount)
    ├── AmbiguousOutcomeError         a create was sent, outcome unknown: reconcile, don't resend
    ├── UploadError                   a file can't be uploaded (too big, empty, changed mid-upload)
    ├── MediaCheckError               media breaks the service's limits (``.reason`` is stable)
    ├── InvalidReferenceError         malformed workflow-input reference or label (a ValueError)
    ├── AssetFailedError              an asset ended ``Failed`` (server ``.code`` and ``.message``)
    ├── WaitTimeoutError              polling hit its deadline (also a TimeoutError)
    ├── LimiterUnavailableError       a shared (Redis) limiter cannot be reached: fail safe
    ├── JournalLockedError            another run holds the ingest journal
    └── JournalError                  the journal file is unusable: a folder, not SQLite,
                                      another group's, a newer schema (also a ValueError)

``str()`` of every error is meant for a support ticket: method, path, HTTP status, vendor
code, message and request id. No secret ever appears in it: the values that make up a
request's credentials are never passed to an exception in the first place, and server text
(which may echo a request's credentials) is redacted (registered secrets, ``Authorization``
values, signatures) and cut to :data:`MAX_MESSAGE_CHARS` before it is stored. No error
chains an exception of the HTTP library (those hold the request's headers): the safe facts
are attributes (``method``, ``host``, ``path``, ``status``, ``cause_name``).
"""

from __future__ import annotations

import enum
from typing import Any, Final

from chenyu_assets._core.logs import redact_text
from chenyu_assets.spec import ARK_ERROR_STATUS

__all__ = [
    "ARK_ERROR_STATUS",
    "APIError",
    "AmbiguousOutcomeError",
    "AssetFailedError",
    "AuthenticationError",
    "BadRequestError",
    "ChenyuAssetsError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLostError",
    "InvalidReferenceError",
    "JournalError",
    "JournalLockedError",
    "LimiterUnavailableError",
    "MediaCheckError",
    "NotFoundError",
    "PaginationError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RedirectError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ServerError",
    "TLSVerificationError",
    "TransportError",
    "UploadError",
    "WaitTimeoutError",
    "api_error_for",
    "is_transient",
]

#: Server text kept in an error, in characters (after redaction).
MAX_MESSAGE_CHARS: Final = 2000


def clean_text(text: object) -> str:
    """Server (or library) text made safe to keep in an error: every registered secret,
    ``Authorization`` value and signature masked, then cut to ``MAX_MESSAGE_CHARS``."""
    cleaned = redact_text(str(text))
    if len(cleaned) > MAX_MESSAGE_CHARS:
        cleaned = cleaned[:MAX_MESSAGE_CHARS] + "…"
    return cleaned


def _clean_opt(text: object) -> str | None:
    return None if text is None else clean_text(text)


def ark_status_for_code(code: str) -> int | None:
    """HTTP status of a vendor error code (``NotFound.asset_id`` -> 404), or None."""
    if code in ARK_ERROR_STATUS:
        return ARK_ERROR_STATUS[code]
    prefix = code.split(".", 1)[0]
    return ARK_ERROR_STATUS.get(prefix)


class ChenyuAssetsError(Exception):
    """Base of every error this package raises."""


class ConfigurationError(ChenyuAssetsError):
    """A setting is missing or invalid. The message names the setting, never its value."""


class _RequestContext:
    """Where a request-scoped error happened: method, path and request id."""

    method: str | None
    path: str | None
    request_id: str | None

    def _where(self) -> str:
        parts = []
        if self.method or self.path:
            parts.append(f"{self.method or '?'} {self.path or '?'}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class TransportError(ChenyuAssetsError, _RequestContext):
    """No usable HTTP response arrived."""

    #: True when the request may have reached the server (its effect is unknown).
    sent: bool = True

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        sent: bool | None = None,
        host: str | None = None,
        cause_name: str | None = None,
    ) -> None:
        message = clean_text(message)
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = _clean_opt(path)
        self.host = _clean_opt(host)
        #: the class name of the HTTP library's exception (the exception itself is dropped)
        self.cause_name = cause_name
        self.request_id = None
        if sent is not None:
            self.sent = sent

    def __str__(self) -> str:
        where = self._where()
        return f"{where}: {self.message}" if where else self.message


class ConnectError(TransportError):
    """The connection could not be opened; nothing was sent."""

    sent = False


class RequestTimeoutError(TransportError):
    """The connect or read timed out. ``sent`` is False only for connect timeouts."""


class ConnectionLostError(TransportError):
    """The connection broke mid-request (reset, server closed, truncated body)."""


class TLSVerificationError(TransportError):
    """TLS verification failed. Pass ``ca_bundle=`` to trust a private CA; it is never
    turned off."""

    sent = False


class APIError(ChenyuAssetsError, _RequestContext):
    """The service answered with an error.

    Attributes: ``status`` (HTTP), ``code`` (vendor error code or numeric Chenyu code as
    text), ``message``, ``request_id``, ``method``, ``path``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        message = clean_text(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = _clean_opt(code)
        self.request_id = _clean_opt(request_id)
        self.method = method
        self.path = _clean_opt(path)

    def __str__(self) -> str:
        head = []
        if self.method or self.path:
            head.append(f"{self.method or '?'} {self.path or '?'}")
        if self.status is not None:
            head.append(f"HTTP {self.status}")
        if self.code:
            head.append(str(self.code))
        text = " ".join(head)
        text = f"{text}: {self.message}" if text else self.message
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text


class BadRequestError(APIError):
    """400: a missing or invalid parameter, or a request signed with a skewed clock."""


class AuthenticationError(APIError):
    """401: credentials missing, unknown or wrongly signed."""


class PermissionDeniedError(APIError):
    """403: the credentials are valid but not allowed to do this."""


class NotFoundError(APIError):
    """404: the id (or action) is unknown in this account and project."""


class PayloadTooLargeError(APIError):
    """413: the upload is over the service's size cap."""


class RateLimitError(APIError):
    """429: over the account's rate or in-flight limit.

    ``retry_after`` is the server's hint in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the service failed. For a create, the outcome may be unknown."""


class ResponseFormatError(APIError):
    """The answer is not the expected envelope: HTML, truncated JSON, missing fields.

    ``retryable`` is False when asking again cannot help or must not be done: an answer
    nested too deep, over the size cap, of the wrong types, or in an encoding we cannot
    decode (a hostile or broken server). Such an error is never retried.
    """

    def __init__(self, message: str, *, retryable: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retryable = retryable


class PaginationError(ResponseFormatError):
    """A listing that would not end: a page repeating an earlier one, pages past what
    ``TotalCount`` allows, or more pages than the listing's hard cap. Never retried."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("retryable", False)
        super().__init__(message, **kw)


class RedirectError(APIError):
    """The server answered a 3xx. Redirects are never followed (they could send the
    credentials elsewhere) and never retried; ``location`` is the redacted target."""

    def __init__(self, message: str, *, location: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.location = location


_STATUS_CLASSES: Final[dict[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}


def api_error_for(status: int | None, code: str | None = None) -> type[APIError]:
    """The exception class for an HTTP status, falling back to the vendor code's status.

    ``status`` may be 200 when the error travelled inside a successful HTTP answer; then the
    vendor code decides (``FlowLimitExceeded`` -> RateLimitError, ``NotFound.*`` -> NotFoundError).
    """
    effective = status
    if (effective is None or effective < 400) and code:
        effective = ark_status_for_code(code)
    if effective is None:
        return APIError
    if effective in _STATUS_CLASSES:
        return _STATUS_CLASSES[effective]
    if effective >= 500:
        return ServerError
    return APIError


class AmbiguousOutcomeError(ChenyuAssetsError):
    """A non-idempotent request (a create) was sent and its outcome is unknown.

    The core never re-sends it: the caller must reconcile (list for the deterministic name)
    before deciding to create again. ``cause`` is the failure that made it ambiguous.
    """

    def __init__(self, action: str, cause: BaseException) -> None:
        super().__init__(
            clean_text(f"{action}: outcome unknown after {type(cause).__name__}: {cause}")
        )
        self.action = action
        self.cause = cause


class UploadError(ChenyuAssetsError):
    """A local file can't be uploaded: too big, empty, not a regular file, unreadable,
    or changed while it was being sent. ``reason`` is a stable code."""

    def __init__(self, message: str, *, reason: str = "upload_failed", path: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.path = path


class MediaCheckError(ChenyuAssetsError):
    """Local media breaks the published limits; ``reason`` is stable (e.g. ``image_ratio``)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidReferenceError(ChenyuAssetsError, ValueError):
    """A workflow-input reference, role or label is malformed; the message names the item."""


class AssetFailedError(ChenyuAssetsError):
    """An asset finished ``Failed``. ``code`` and ``message`` are the server's."""

    def __init__(self, asset_id: str, code: str | None, message: str | None) -> None:
        code, message = _clean_opt(code), _clean_opt(message)
        super().__init__(f"asset {asset_id} failed: {code or 'unknown'}: {message or ''}".rstrip())
        self.asset_id = asset_id
        self.code = code
        self.message = message


class WaitTimeoutError(ChenyuAssetsError, TimeoutError):
    """Polling did not see a terminal status before its deadline."""


class LimiterUnavailableError(ChenyuAssetsError):
    """A shared limiter backend (Redis) is unreachable. Sending stops rather than exceed
    the account's limits with a local fallback."""


class JournalLockedError(ChenyuAssetsError):
    """Another process is using this ingest journal."""


class JournalError(ChenyuAssetsError, ValueError):
    """The ingest journal file cannot be used (the message names it and why): a folder, a
    file that is not an SQLite database, a journal of another group, a newer schema."""


# --- what a failure means: try again, give up, or reconcile ------------------------------------


class Decision(enum.StrEnum):
    RETRY = "retry"
    FATAL = "fatal"
    AMBIGUOUS = "ambiguous"


_TRANSIENT_5XX: Final = frozenset({500, 502, 503, 504})


def classify(failure: BaseException, *, idempotent: bool = True) -> Decision:
    """Retry, give up, or (for a create whose effect is unknown) reconcile; the table is in
    :mod:`chenyu_assets._core.retry`."""
    maybe_done = Decision.RETRY if idempotent else Decision.AMBIGUOUS
    if isinstance(failure, TLSVerificationError):
        return Decision.FATAL
    if isinstance(failure, ConnectError):
        return Decision.RETRY
    if isinstance(failure, RequestTimeoutError):
        return maybe_done if failure.sent else Decision.RETRY
    if isinstance(failure, ConnectionLostError):
        return maybe_done
    if isinstance(failure, RateLimitError):
        return Decision.RETRY
    if isinstance(failure, ResponseFormatError):
        if not failure.retryable:  # asking again cannot help; a create may still be done
            return Decision.FATAL if idempotent else Decision.AMBIGUOUS
        if failure.status is not None and 400 <= failure.status < 500:
            return Decision.RETRY if failure.status in (408, 429) else Decision.FATAL
        return maybe_done
    if isinstance(failure, ServerError):
        transient = failure.status in _TRANSIENT_5XX or failure.status is None
        return maybe_done if transient else Decision.FATAL
    if isinstance(failure, APIError):
        return Decision.RETRY if failure.status == 408 else Decision.FATAL
    return Decision.FATAL


def is_transient(failure: BaseException) -> bool:
    """True if the same request may succeed later (a timeout, a reset, a 429, a 503...):
    what the SDK itself retries; False for a refusal (401, 403, 404, a bad request) and
    for anything that is not one of this package's errors."""
    return classify(failure) is Decision.RETRY
