"""Who is calling: Bearer API keys and Volcengine AK/SK signatures.

Neither function logs or echoes a credential; error messages are the fixed texts of the
signing module or of this one.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from chenyu_assets._core.signing import SignatureError, VerifiedRequest, verify_request
from chenyu_assets.emulator.config import Account
from chenyu_assets.emulator.envelopes import ApiError

__all__ = ["bearer_account", "signed_account"]


def bearer_account(authorization: str | None, accounts: Sequence[Account]) -> Account:
    """The account whose API key is in ``Authorization: Bearer <key>``.

    Missing header: ``MissingAuthenticationToken``; malformed or unknown key:
    ``InvalidAuthorization`` (both 401).
    """
    if not authorization or not authorization.strip():
        raise ApiError("MissingAuthenticationToken", "the request has no Authorization header")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError("InvalidAuthorization", "expected 'Authorization: Bearer <api key>'")
    found: Account | None = None
    for account in accounts:
        # compare every key so timing does not reveal which account almost matched
        if hmac.compare_digest(account.api_key.encode(), key.encode("utf-8", "replace")):
            found = account
    if found is None:
        raise ApiError("InvalidAuthorization", "the API key is not valid")
    return found


def signed_account(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    accounts: Sequence[Account],
    now: datetime,
    max_skew_seconds: float,
    allowed_regions: Sequence[str],
) -> tuple[Account, VerifiedRequest]:
    """Verify a SignerV4 request; returns the signing account and what was verified."""
    by_key = {a.access_key: a for a in accounts}

    def lookup(access_key: str) -> str | None:
        account = by_key.get(access_key)
        return None if account is None else account.secret_key

    try:
        verified = verify_request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            lookup_secret=lookup,
            now=now,
            max_skew=timedelta(seconds=max_skew_seconds),
            service="ark",
            allowed_regions=tuple(allowed_regions),
        )
    except SignatureError as exc:
        raise ApiError(exc.code, exc.message) from None
    return by_key[verified.access_key], verified
