"""Volcengine "SignerV4" request signing (HMAC-SHA256), its verifier, and Bearer auth.

The algorithm (api-reference.md §2.2), for a request sent at UTC time ``X-Date``:

1. ``X-Date`` = ``%Y%m%dT%H%M%SZ``; the short date is its first 8 characters.
2. ``X-Content-Sha256`` = lower-case hex SHA-256 of the exact body bytes.
3. ``X-Security-Token`` is added when the credentials carry an STS session token.
4. Signed headers: content-type, content-md5, host and every ``x-*`` header, lower-cased and
   sorted; the host value drops a ``:80`` / ``:443`` port and keeps any other.
5. Canonical request = method, path, canonical query (keys and values percent-encoded with
   only ``-_.~`` unreserved, pairs sorted), one ``name:value`` line per signed header, the
   ``;``-joined signed-header list and the body hash, joined by newlines.
6. String to sign = ``HMAC-SHA256``, X-Date, scope (``date/region/service/request``) and the
   hex SHA-256 of the canonical request, joined by newlines.
7. Signing key = HMAC chain from the secret key over date, region, service and ``request``;
   the signature is the hex HMAC-SHA256 of the string to sign under that key.

:func:`verify_request` is the server half (the emulator uses it): it re-encodes the decoded
query, rebuilds the canonical request from the ``SignedHeaders`` the client sent and reports
every failure as a :class:`SignatureError` carrying an Ark error code. No secret, session
token or signature ever enters an error message or a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import quote

__all__ = [
    "ALGORITHM",
    "EMPTY_BODY_SHA256",
    "SERVICE",
    "BearerAuth",
    "Credentials",
    "SignatureError",
    "VerifiedRequest",
    "canonical_query",
    "canonical_request",
    "derive_signing_key",
    "sign_request",
    "string_to_sign",
    "verify_request",
]

SERVICE: Final = "ark"
ALGORITHM: Final = "HMAC-SHA256"
EMPTY_BODY_SHA256: Final = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_X_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
_X_DATE_RE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SIGNATURE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_ALWAYS_SIGNED: Final = frozenset({"content-type", "content-md5", "host"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key / secret key pair, with an optional STS session token."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise ValueError("access_key and secret_key must both be non-empty")
        if any(c in "/," or c.isspace() for c in self.access_key):
            raise ValueError("access_key must not contain '/', ',' or whitespace")

    def __repr__(self) -> str:
        token = "None" if self.session_token is None else "'***'"
        return (
            f"Credentials(access_key='{self.access_key[:4]}…', secret_key='***', "
            f"session_token={token})"
        )


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What :func:`verify_request` learned from a correctly signed request."""

    access_key: str
    region: str
    service: str
    signed_headers: tuple[str, ...]


class SignatureError(Exception):
    """A request failed verification. ``code`` is the Ark error code, ``message`` is safe text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BearerAuth:
    """An API key sent as ``Authorization: Bearer <key>``; its ``repr`` shows only the length."""

    __slots__ = ("_key",)

    def __init__(self, api_key: str) -> None:
        if not api_key or any(c.isspace() or not c.isprintable() for c in api_key):
            raise ValueError("API key must be non-empty, without whitespace or control characters")
        self._key = api_key

    def header(self) -> str:
        """The ``Authorization`` header value."""
        return f"Bearer {self._key}"

    def __repr__(self) -> str:
        return f"BearerAuth(<redacted, {len(self._key)} chars>)"


def _quote(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Percent-encode each decoded key and value (only ``-_.~`` unreserved), sort, join."""
    encoded = sorted((_quote(key), _quote(value)) for key, value in pairs)
    return "&".join(f"{key}={value}" for key, value in encoded)


def derive_signing_key(
    secret_key: str, short_date: str, region: str, service: str = SERVICE
) -> bytes:
    """HMAC-SHA256 chain: SK -> date -> region -> service -> ``request`` (raw digests)."""
    key = secret_key.encode()
    for part in (short_date, region, service, "request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _header_value(name: str, value: str) -> str:
    value = value.strip()
    if name == "host":
        for default_port in (":80", ":443"):
            if value.endswith(default_port):
                return value[: -len(default_port)]
    return value


def canonical_request(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_sha256: str,
) -> str:
    """Step 5. ``headers`` has lower-case names; ``path`` is decoded; ``query`` is canonical."""
    lines = "".join(f"{name}:{_header_value(name, headers[name])}\n" for name in signed_headers)
    canonical_path = quote(path or "/", safe="/-_.~")
    parts = [method.upper(), canonical_path, query, lines, ";".join(signed_headers), body_sha256]
    return "\n".join(parts)


def string_to_sign(x_date: str, scope: str, canonical: str) -> str:
    """Step 6: the text the signing key signs."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{x_date}\n{scope}\n{digest}"


def _signature(secret_key: str, x_date: str, region: str, service: str, canonical: str) -> str:
    scope = f"{x_date[:8]}/{region}/{service}/request"
    key = derive_signing_key(secret_key, x_date[:8], region, service)
    message = string_to_sign(x_date, scope, canonical).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("datetimes passed to signing must be timezone-aware")
    return moment.astimezone(UTC)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def sign_request(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] | Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str = SERVICE,
    now: datetime | None = None,
) -> dict[str, str]:
    """Sign a request; return the headers to add (or replace) before sending it.

    ``headers`` are those that will be sent and must include ``Host``. The result holds
    ``X-Date``, ``X-Content-Sha256``, ``X-Security-Token`` (with a session token) and
    ``Authorization``.
    """
    x_date = (datetime.now(UTC) if now is None else _utc(now)).strftime(_X_DATE_FORMAT)
    body_hash = hashlib.sha256(body).hexdigest()
    added = {"X-Date": x_date, "X-Content-Sha256": body_hash}
    if credentials.session_token is not None:
        added["X-Security-Token"] = credentials.session_token
    sent = _lower(headers) | _lower(added)
    if "host" not in sent:
        raise ValueError("headers must include Host")
    signed = sorted(name for name in sent if name in _ALWAYS_SIGNED or name.startswith("x-"))
    pairs = query.items() if isinstance(query, Mapping) else query
    canonical = canonical_request(
        method=method,
        path=path,
        query=canonical_query(pairs),
        headers=sent,
        signed_headers=signed,
        body_sha256=body_hash,
    )
    signature = _signature(credentials.secret_key, x_date, region, service, canonical)
    added["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{x_date[:8]}/{region}/{service}/request, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return added


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("InvalidAuthorization", f"Authorization must use {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field = part.strip().partition("=")
        if not sep or name in fields:
            raise SignatureError("InvalidAuthorization", "the Authorization header is malformed")
        fields[name] = field.strip()
    return fields


def verify_request(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] | Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
    service: str = SERVICE,
    allowed_regions: Collection[str] | None = None,
) -> VerifiedRequest:
    """Check a received request's signature; raise :class:`SignatureError` if it fails.

    ``query`` holds the decoded pairs; header names may be in any case. Scope problems
    (wrong service or region, date unlike X-Date, host / x-date / a present X-Security-Token
    not signed, a signed header absent) are ``InvalidAuthorization``.
    """
    sent = _lower(headers)
    authorization = sent.get("authorization", "").strip()
    if not authorization:
        raise SignatureError("MissingAuthenticationToken", "the request has no Authorization")
    fields = _parse_authorization(authorization)
    received = fields.get("Signature", "")
    if not received:
        raise SignatureError("MissingSignature", "the Authorization header has no Signature")
    scope = fields.get("Credential", "").split("/")
    signed = tuple(fields.get("SignedHeaders", "").split(";"))
    if len(scope) != 5 or not all(scope) or scope[4] != "request":
        raise SignatureError("InvalidAuthorization", "the Credential scope is malformed")
    if not all(signed) or len(set(signed)) != len(signed) or any(n != n.lower() for n in signed):
        raise SignatureError("InvalidAuthorization", "SignedHeaders is malformed")
    if not {"host", "x-date"} <= set(signed):
        raise SignatureError("InvalidAuthorization", "SignedHeaders must include host and x-date")
    if "x-security-token" in sent and "x-security-token" not in signed:
        raise SignatureError("InvalidAuthorization", "X-Security-Token must be signed")
    if any(name not in sent for name in signed):
        raise SignatureError("InvalidAuthorization", "a signed header is missing from the request")

    x_date = sent["x-date"].strip()
    if not _X_DATE_RE.fullmatch(x_date):
        raise SignatureError("InvalidTimestamp", "X-Date is not in YYYYMMDDTHHMMSSZ form")
    try:
        signed_at = datetime.strptime(x_date, _X_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("InvalidTimestamp", "X-Date is not a valid time") from None
    if abs(_utc(now) - signed_at) > max_skew:
        raise SignatureError("InvalidTimestamp", f"X-Date is more than {max_skew} from server time")

    access_key, short_date, region, scope_service, _ = scope
    if short_date != x_date[:8]:
        raise SignatureError("InvalidAuthorization", "the Credential date does not match X-Date")
    if scope_service != service:
        raise SignatureError("InvalidAuthorization", f"the Credential service is not {service!r}")
    if allowed_regions is not None and region not in allowed_regions:
        raise SignatureError("InvalidAuthorization", "the Credential region is not served here")

    body_hash = hashlib.sha256(body).hexdigest()
    claimed = sent.get("x-content-sha256")
    if claimed is not None and claimed.strip().lower() != body_hash:
        raise SignatureError("SignatureDoesNotMatch", "X-Content-Sha256 does not match the body")
    secret = lookup_secret(access_key)
    if secret is None:
        raise SignatureError("InvalidAccessKey", "the access key is not known")
    pairs = query.items() if isinstance(query, Mapping) else query
    canonical = canonical_request(
        method=method,
        path=path,
        query=canonical_query(pairs),
        headers=sent,
        signed_headers=signed,
        body_sha256=body_hash,
    )
    expected = _signature(secret, x_date, region, scope_service, canonical)
    if not _SIGNATURE_RE.fullmatch(received) or not hmac.compare_digest(expected, received.lower()):
        raise SignatureError("SignatureDoesNotMatch", "the request signature does not match")
    return VerifiedRequest(access_key, region, scope_service, signed)
