"""Paging of ListAssets / ListAssetGroups, as strict as the real service may be
(api-reference §6):

- ``PageNumber``/``PageSize`` (the primary form; ``TotalCount`` in the answer), refused with
  ``InvalidParameter.PageNumber`` once ``PageSize × PageNumber`` passes the action's offset
  limit (:data:`~chenyu_assets.limits.OFFSET_PAGING_LIMITS`: 20,000 for ListAssets, 10,000
  for ListAssetGroups);
- ``MaxResults`` (1–100, default 10) + ``NextToken``: no ``TotalCount``; an empty
  ``NextToken`` ends the walk; no offset limit. Tokens are opaque and bound to the query that
  issued them (filter, sort, scope): another query's token is ``InvalidParameter.NextToken``;
- both styles in one request: ``InvalidParameter.NextToken``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from chenyu_assets.emulator.envelopes import invalid
from chenyu_assets.emulator.params import Params
from chenyu_assets.limits import OFFSET_PAGING_LIMITS

__all__ = ["Paging"]

_SORT_ORDERS = ("Desc", "Asc")
_PAGE_MAX = 100
_PAGE_NUMBER_MAX = 1_000_000

T = TypeVar("T")


class Paging:
    """PageNumber/PageSize (primary) or MaxResults/NextToken — never both."""

    def __init__(self, p: Params, action: str, scope: str) -> None:
        order = p.enum("SortOrder", _SORT_ORDERS, default="Desc")
        self.descending = order != "Asc"
        self.token_style = p.has("MaxResults") or p.has("NextToken")
        if self.token_style and (p.has("PageNumber") or p.has("PageSize")):
            raise invalid("NextToken", "PageNumber/PageSize and MaxResults/NextToken are exclusive")
        query = {k: v for k, v in p.as_dict().items() if k not in ("MaxResults", "NextToken")}
        material = json.dumps([action, scope, query], sort_keys=True, default=str).encode()
        self._query = hashlib.sha256(material).hexdigest()[:16]
        if self.token_style:
            self.size = p.integer("MaxResults", default=10, lo=1, hi=_PAGE_MAX)
            self.offset = self._decode(p.text("NextToken") or "")
            self.number = 1
        else:
            self.number = p.integer("PageNumber", default=1, lo=1, hi=_PAGE_NUMBER_MAX)
            self.size = p.integer("PageSize", default=10, lo=1, hi=_PAGE_MAX)
            limit = OFFSET_PAGING_LIMITS.get(action)
            if limit is not None and self.number * self.size > limit:
                raise invalid(
                    "PageNumber",
                    f"PageSize x PageNumber must not pass {limit}; page further with "
                    "MaxResults/NextToken",
                )
            self.offset = (self.number - 1) * self.size

    def result(self, items: list[T], view: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
        chunk = items[self.offset : self.offset + self.size]
        out: dict[str, Any] = {"Items": [view(i) for i in chunk]}
        if self.token_style:
            end = self.offset + len(chunk)
            out["MaxResults"] = self.size
            out["NextToken"] = self._encode(end) if end < len(items) else ""
        else:
            out["TotalCount"] = len(items)
            out["PageNumber"] = self.number
            out["PageSize"] = self.size
        return out

    def _encode(self, offset: int) -> str:
        raw = json.dumps({"o": offset, "q": self._query}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode(self, token: str) -> int:
        if not token:
            return 0
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise invalid("NextToken", "not a token this service issued") from None
        offset = data.get("o") if isinstance(data, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise invalid("NextToken", "not a token this service issued")
        if data.get("q") != self._query:
            raise invalid("NextToken", "the token belongs to another query")
        return offset
