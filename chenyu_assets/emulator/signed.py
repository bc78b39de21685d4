"""Signed content URLs: ``<path>?expires=<unix seconds>&signature=<hex>``.

The signature is HMAC-SHA256 under a per-emulator secret (kept in the data directory so
URLs survive a restart) over ``kind``, the asset id and ``expires``; it is compared in
constant time. ``kind`` keeps a Chenyu URL from being replayed as an Ark URL and back.

A URL is valid only as it was issued: exactly one ``expires`` (canonical decimal, no
leading zeros) and one ``signature`` (lower-case hex) and nothing else; a repeated or
extra parameter is refused too, so no two parsers can disagree about what was signed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

__all__ = ["UrlSigner"]

Kind = Literal["chenyu", "ark"]


class UrlSigner:
    """Makes and checks signed-URL query parameters."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the URL-signing secret must be at least 16 bytes")
        self._secret = secret

    def signature(self, kind: Kind, asset_id: str, expires: int) -> str:
        """The hex signature for one (kind, asset, expiry)."""
        message = f"{kind}\n{asset_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def query(self, kind: Kind, asset_id: str, expires: int) -> str:
        """``expires=...&signature=...``."""
        return f"expires={expires}&signature={self.signature(kind, asset_id, expires)}"

    def check(self, kind: Kind, asset_id: str, query: Mapping[str, str], now: float) -> str | None:
        """None when ``query`` (a multidict keeps repeated keys) is exactly a valid, unexpired
        ``expires=...&signature=...``; else why not."""
        expires_text = query.get("expires")
        signature = query.get("signature")
        if not expires_text or not signature:
            return "the URL is not signed"
        if len(query) != 2 or set(query) != {"expires", "signature"}:  # len counts repeats
            return "the URL has parameters besides one expires and one signature"
        if (
            not expires_text.isascii()
            or not expires_text.isdigit()
            or len(expires_text) > 12
            or expires_text != str(int(expires_text))
        ):
            return "the URL's expiry is malformed"
        expected = self.signature(kind, asset_id, int(expires_text))
        if not signature.isascii() or not hmac.compare_digest(expected, signature):
            return "the URL's signature does not match"
        if int(expires_text) < now:
            return "the signed URL has expired"
        return None

    def __repr__(self) -> str:
        return "UrlSigner(<secret>)"
