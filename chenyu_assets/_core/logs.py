"""Logging with secrets taken out.

Every logger of the package comes from :func:`get_logger` and carries a
:class:`RedactingFilter`, which rewrites each record's message before any handler sees it:
registered secrets (each client registers its keys), ``Authorization`` values, Bearer
tokens, SignerV4 credentials and signatures, Chenyu keys and signed-URL query values all
become ``***``. The code also never passes a secret to a log call; the filter is the
second line of defence.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "SENSITIVE_HEADERS",
    "RedactingFilter",
    "get_logger",
    "redact_headers",
    "redact_text",
    "redact_url",
    "register_secret",
]

MASK = "***"

SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-security-token",
        "x-api-key",
        "cookie",
        "set-cookie",
    }
)

#: Query keys whose values are secret in signed URLs (lower-cased substrings).
_SECRET_QUERY_HINTS = ("sign", "token", "key", "credential", "secret", "auth", "policy")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\n,}]+"), r"\1" + MASK),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer " + MASK),
    (re.compile(r"(Credential=)[^,\s]+"), r"\1" + MASK),
    (re.compile(r"(?i)(signature=)[^&\s,'\"]+"), r"\1" + MASK),
    (re.compile(r"(?i)(x-security-token['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"), r"\1" + MASK),
    # presigned S3 URLs (SigV4 query form): the session token of temporary credentials
    (re.compile(r"(?i)(x-amz-security-token=)[^&\s,'\"]+"), r"\1" + MASK),
    (re.compile(r"\bcy_[0-9a-fA-F]{32}\b"), MASK),
    (re.compile(r"\bAKLT[A-Za-z0-9+/=_-]{8,}"), MASK),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in this package's log output (len >= 4)."""
    global _secret_pattern
    if not value or len(value) < 4:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def redact_text(text: str) -> str:
    """``text`` with every known secret and secret-shaped value masked."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def redact_url(url: str, *, every_query_value: bool = False) -> str:
    """``url`` with user info and secret-looking query values masked (every query value
    with ``every_query_value``: for signed URLs whose key names are unknown)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = [
            (
                k,
                MASK
                if every_query_value or any(h in k.lower() for h in _SECRET_QUERY_HINTS)
                else v,
            )
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with credential headers masked."""
    return {
        k: (MASK if k.lower() in SENSITIVE_HEADERS else redact_text(v)) for k, v in headers.items()
    }


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (with its args merged) through :func:`redact_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw text, still redacted
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


def get_logger(name: str = "chenyu_assets") -> logging.Logger:
    """The package logger ``name`` with the redacting filter attached (idempotent)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
