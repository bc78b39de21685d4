"""Every family's answer, checked: the data it carries, or the mapped error.

=================  ==========================================  ================================
family             success                                     error
=================  ==========================================  ================================
Volcengine / Ark   ``{ResponseMetadata, Result}``              ``ResponseMetadata.Error{Code,
                                                               Message}`` (also inside HTTP 200)
gateway (flat)     fields at top level, ``base_resp.status_    ``status_code != 0`` (also
                   code == 0``                                 inside HTTP 200)
Chenyu v2          ``{code: 0, msg, data}``                    ``code != 0`` (also inside 200)
=================  ==========================================  ================================

An answer that is not the family's envelope (HTML from a proxy, truncated JSON, a body
without ``ResponseMetadata``) is a :class:`~chenyu_assets.errors.ResponseFormatError`, or a
``ServerError`` / ``RateLimitError`` when the HTTP status says so. Error classes come from
:func:`~chenyu_assets.errors.api_error_for`; a 429's ``Retry-After`` is parsed here.

Every answer goes through :func:`load_json` first: strict UTF-8, at most
:data:`MAX_DEPTH` levels of nesting (a hostile answer nested 1,000 deep would otherwise
raise ``RecursionError`` here or later), and values of the wrong type are refused with a
``ResponseFormatError`` that is not retried. No parser error is chained (a JSON error holds
the whole body).
"""

from __future__ import annotations

import json
import re
from typing import Any

from chenyu_assets._core.retry import parse_retry_after
from chenyu_assets._core.transport import Response
from chenyu_assets.errors import (
    RateLimitError,
    ResponseFormatError,
    ServerError,
    api_error_for,
    ark_status_for_code,
)

__all__ = [
    "MAX_DEPTH",
    "load_json",
    "parse_chenyu_envelope",
    "parse_flat_envelope",
    "parse_volc_envelope",
]

#: Deepest nesting accepted in an answer. The deepest honest one (a list page: envelope,
#: Result, Items, item, Error) is 6 levels; 32 leaves room for any new field.
MAX_DEPTH = 32

_UNSET: Any = object()

#: A gateway ``status_msg`` that starts with a vendor code: ``"NotFound.asset_id: ..."``.
_MSG_CODE = re.compile(r"([A-Z][A-Za-z]*(?:\.[\w.]+)?):\s*")


def _too_deep(data: Any) -> bool:
    """True when ``data`` nests deeper than MAX_DEPTH (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def load_json(resp: Response) -> Any:
    """The answer's JSON value, or ``_UNSET`` if it is not JSON at all (HTML, truncated).
    A body that is JSON but hostile (not UTF-8, nested too deep) raises a
    ``ResponseFormatError`` that is never retried."""
    problem = None
    data: Any = _UNSET
    try:
        text = resp.body.decode("utf-8")
    except UnicodeDecodeError:
        problem = "answer is not valid UTF-8"
    else:
        try:
            data = json.loads(text)
        except RecursionError:
            problem = f"answer nests deeper than {MAX_DEPTH} levels"
        except ValueError:
            data = _UNSET
    # Nesting is at most the number of containers, at most the number of ``{`` and ``[``
    # in the text (counted at C speed): most answers have too few to need the walk.
    if (
        problem is None
        and data is not _UNSET
        and text.count("{") + text.count("[") > MAX_DEPTH
        and _too_deep(data)
    ):
        problem = f"answer nests deeper than {MAX_DEPTH} levels"
    if problem is not None:  # raised outside the handlers: nothing chained
        raise ResponseFormatError(
            problem, status=resp.status, method=resp.method, path=resp.path, retryable=False
        )
    return data


def _text_id(value: Any) -> str | None:
    """A request id from the answer, if it is a short string (anything else is dropped)."""
    return value if isinstance(value, str) and 0 < len(value) <= 200 else None


def _load_json(resp: Response) -> Any:
    data = load_json(resp)
    if data is not _UNSET:
        return data
    kind = resp.content_type or "unknown content type"
    snippet = resp.body[:60].decode("utf-8", "replace").replace("\n", " ")
    if resp.status == 429:
        raise RateLimitError(
            f"{resp.status} with a non-JSON body",
            status=resp.status,
            method=resp.method,
            path=resp.path,
            retry_after=parse_retry_after(resp.headers),
        )
    raise ResponseFormatError(
        f"answer is not JSON ({kind}): {snippet!r}",
        status=resp.status,
        method=resp.method,
        path=resp.path,
    )


def _raise_for(
    resp: Response,
    code: str | None,
    message: str,
    request_id: str | None,
    *,
    status_hint: int | None = None,
) -> None:
    """Raise the mapped error. The class follows the HTTP status when it is an error, else
    ``status_hint`` (an HTTP-like status from the body), else the vendor code."""
    status = resp.status
    cls = api_error_for(status if status >= 400 else status_hint, code)
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "method": resp.method,
        "path": resp.path,
    }
    if cls is RateLimitError:
        raise RateLimitError(message, retry_after=parse_retry_after(resp.headers), **kwargs)
    raise cls(message, **kwargs)


def parse_volc_envelope(resp: Response) -> tuple[dict[str, Any], str | None]:
    """``(Result, RequestId)`` of a Volcengine-envelope answer, or the mapped error.

    A body without ``ResponseMetadata`` is a ResponseFormatError; an ``Error`` inside an
    HTTP 200 is an error like any other.
    """
    data = _load_json(resp)
    meta = data.get("ResponseMetadata") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        if resp.status >= 400:
            _raise_for(resp, None, f"HTTP {resp.status} without ResponseMetadata", None)
        raise ResponseFormatError(
            "answer has no ResponseMetadata",
            status=resp.status,
            method=resp.method,
            path=resp.path,
        )
    request_id = _text_id(meta.get("RequestId")) or resp.headers.get("X-Tt-Logid")
    error = meta.get("Error")
    if isinstance(error, dict) and (error.get("Code") or error.get("CodeN")):
        _raise_for(
            resp,
            str(error.get("Code") or error.get("CodeN")),
            str(error.get("Message") or "error"),
            request_id,
        )
    if resp.status >= 400:
        _raise_for(resp, None, f"HTTP {resp.status}", request_id)
    result = data.get("Result")
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise ResponseFormatError(
            "Result is not an object",
            status=resp.status,
            request_id=request_id,
            method=resp.method,
            path=resp.path,
        )
    return result, request_id


def parse_flat_envelope(resp: Response) -> tuple[dict[str, Any], str | None]:
    """The gateway's flat answer: fields at top level plus ``base_resp{status_code,...}``."""
    data = _load_json(resp)
    base = data.get("base_resp") if isinstance(data, dict) else None
    if not isinstance(base, dict) or "status_code" not in base:
        if resp.status >= 400:
            _raise_for(resp, None, f"HTTP {resp.status} without base_resp", None)
        raise ResponseFormatError(
            "answer has no base_resp", status=resp.status, method=resp.method, path=resp.path
        )
    request_id = resp.headers.get("X-Request-Id") or _text_id(data.get("request_id"))
    status_code = base.get("status_code")
    if status_code != 0:
        # status_code is HTTP-like (404) or the gateway's own number; a known vendor code
        # leading status_msg ("NotFound.asset_id: ...") is the more precise code.
        message = str(base.get("status_msg") or "error")
        code = str(status_code)
        found = _MSG_CODE.match(message)
        if found and ark_status_for_code(found.group(1)) is not None:
            code, message = found.group(1), message[found.end() :] or message
        hint = status_code if isinstance(status_code, int) and 400 <= status_code < 600 else None
        _raise_for(resp, code, message, request_id, status_hint=hint)
    if resp.status >= 400:
        _raise_for(resp, None, f"HTTP {resp.status}", request_id)
    return {k: v for k, v in data.items() if k != "base_resp"}, request_id


def parse_chenyu_envelope(resp: Response) -> tuple[dict[str, Any], str | None]:
    """``(data, request_id)`` of a ``{code, msg, data}`` answer, or the mapped error.
    ``code != 0`` is an error even under HTTP 200."""
    request_id = resp.headers.get("X-Request-Id")
    body = load_json(resp)
    if not isinstance(body, dict) or "code" not in body:
        if resp.status == 429:
            raise RateLimitError(
                "HTTP 429",
                status=429,
                request_id=request_id,
                method=resp.method,
                path=resp.path,
                retry_after=parse_retry_after(resp.headers),
            )
        if resp.status >= 500:
            raise ServerError(
                f"HTTP {resp.status} with a non-envelope body",
                status=resp.status,
                request_id=request_id,
                method=resp.method,
                path=resp.path,
            )
        raise ResponseFormatError(
            f"answer is not a {{code, msg, data}} envelope ({resp.content_type or 'no type'})",
            status=resp.status,
            request_id=request_id,
            method=resp.method,
            path=resp.path,
        )
    request_id = request_id or _text_id(body.get("request_id")) or _text_id(body.get("trace_id"))
    code = body.get("code")
    if code != 0 or resp.status >= 400:
        cls = api_error_for(resp.status if resp.status >= 400 else None)
        kwargs: dict[str, Any] = {
            "status": resp.status,
            "code": str(code),
            "request_id": request_id,
            "method": resp.method,
            "path": resp.path,
        }
        message = str(body.get("msg") or "error")
        if cls is RateLimitError:
            raise RateLimitError(message, retry_after=parse_retry_after(resp.headers), **kwargs)
        raise cls(message, **kwargs)
    data = body.get("data")
    if not isinstance(data, dict):
        raise ResponseFormatError(
            "envelope has no data object",
            status=resp.status,
            request_id=request_id,
            method=resp.method,
            path=resp.path,
        )
    return data, request_id
