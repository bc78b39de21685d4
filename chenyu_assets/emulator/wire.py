"""What travels on the wire: errors, the four families' envelopes, request bodies and
parameters.

Handlers raise :class:`ApiError` with an Ark-style code (``InvalidParameter.Name``,
``NotFound.asset_id``, ``FlowLimitExceeded`` ...); the HTTP status comes from
:data:`chenyu_assets.spec.ARK_ERROR_STATUS`. Each family renders it its own way:

* ``ark`` / ``avatar``: ``{"ResponseMetadata": {RequestId, Action, Version, Service, Region,
  Error{Code, Message}}}`` (no ``Result``); the request id also in ``X-Tt-Logid``;
* ``gateway``: ``{"base_resp": {"status_code": <HTTP status>, "status_msg": "<Code>: <msg>"}}``
  (success: ``status_code`` 0, ``status_msg`` ``"success"``, fields flat beside it);
* ``chenyu``: ``{"code": <HTTP status>, "msg": "<message>", "data": null}`` (success: code 0);
* ``content`` (signed downloads): a small JSON ``{"error": code, "message": ...}``.

:class:`Params` reads Ark parameters strictly (PascalCase JSON, or flattened GET queries):
``MissingParameter.<Field>`` when a required field is absent (or null),
``InvalidParameter.<Field>`` when it has the wrong type or value; nested fields are named
with dots (``InvalidParameter.Filter.Statuses``); unknown fields are ignored.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from chenyu_assets.errors import ark_status_for_code
from chenyu_assets.spec import ARK_ERROR_STATUS, ARK_VERSION

__all__ = [
    "MAX_DEPTH",
    "ApiError",
    "Family",
    "Meta",
    "Params",
    "body_timeout",
    "code_for_status",
    "dumps",
    "error_body",
    "error_response",
    "invalid",
    "json_response",
    "load_json",
    "missing",
    "new_request_id",
    "ok_body",
    "parse_json_body",
    "read_body",
    "request_id_headers",
    "unflatten_query",
]

#: The request families the emulator records (``content`` is a signed-URL download).
Family = Literal["chenyu", "ark", "gateway", "avatar", "content"]
#: Families with the Volcengine envelope.
_VOLC = ("ark", "avatar")

#: Chenyu success messages by action (as the vendor pages show them).
_CHENYU_OK_MSG = {"UploadAsset": "上传成功", "GetAsset": "查询成功"}


class ApiError(Exception):
    """A refusal the emulator answers with an error envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = status or ark_status_for_code(code) or 500
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def missing(field: str) -> ApiError:
    """``MissingParameter.<field>``."""
    return ApiError(f"MissingParameter.{field}", f"the required parameter {field} is missing")


def invalid(field: str, why: str) -> ApiError:
    """``InvalidParameter.<field>``."""
    return ApiError(f"InvalidParameter.{field}", f"the parameter {field} is invalid: {why}")


def code_for_status(status: int) -> str:
    """A plausible vendor code for an injected HTTP status (reverse of ARK_ERROR_STATUS)."""
    preferred = {400: "InvalidParameter", 413: "RequestEntityTooLarge", 502: "BadGateway"}
    if status in preferred:
        return preferred[status]
    for code, code_status in ARK_ERROR_STATUS.items():
        if code_status == status:
            return code
    return "InternalError" if status >= 500 else "RequestRefused"


def new_request_id(now: float) -> str:
    """``YYYYMMDDhhmmss`` + 20 upper-case hex digits, like the vendor's request ids."""
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d%H%M%S")
    return stamp + secrets.token_hex(10).upper()


@dataclass(slots=True)
class Meta:
    """What every envelope echoes about the request."""

    family: str
    action: str
    request_id: str
    region: str = "cn-beijing"
    version: str = ARK_VERSION


def request_id_headers(meta: Meta) -> dict[str, str]:
    """The header that carries the request id: ``X-Tt-Logid`` on the Volcengine-envelope
    families (whose body has it too), ``X-Request-Id`` on the gateway and Chenyu."""
    if meta.family in _VOLC:
        return {"X-Tt-Logid": meta.request_id}
    if meta.family in ("gateway", "chenyu"):
        return {"X-Request-Id": meta.request_id}
    return {}


def _response_metadata(meta: Meta) -> dict[str, Any]:
    return {
        "RequestId": meta.request_id,
        "Action": meta.action,
        "Version": meta.version,
        "Service": "ark",
        "Region": meta.region,
    }


def ok_body(meta: Meta, result: dict[str, Any]) -> dict[str, Any]:
    """The success envelope of ``meta.family`` around ``result``."""
    if meta.family in _VOLC:
        return {"ResponseMetadata": _response_metadata(meta), "Result": result}
    if meta.family == "gateway":
        return {**result, "base_resp": {"status_code": 0, "status_msg": "success"}}
    if meta.family == "chenyu":
        return {"code": 0, "msg": _CHENYU_OK_MSG.get(meta.action, "success"), "data": result}
    return result


def error_body(meta: Meta, err: ApiError) -> dict[str, Any]:
    """The error envelope of ``meta.family`` for ``err``."""
    if meta.family in _VOLC:
        md = _response_metadata(meta)
        md["Error"] = {"Code": err.code, "Message": err.message}
        return {"ResponseMetadata": md}
    if meta.family == "gateway":
        return {
            "base_resp": {"status_code": err.status, "status_msg": f"{err.code}: {err.message}"}
        }
    if meta.family == "chenyu":
        return {"code": err.status, "msg": err.message, "data": None}
    return {"error": err.code, "message": err.message}


def dumps(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


_BODY_MAX = 1024 * 1024
_CHUNK = 64 * 1024


def body_timeout(seconds: float) -> ApiError:
    """408: no byte of the request body arrived for ``seconds``."""
    return ApiError(
        "RequestTimeout", f"no byte of the request body arrived for {seconds:g} s", status=408
    )


async def read_body(request: web.Request, idle: float) -> bytes:
    """The request body, refused past 1 MiB (413) or after ``idle`` seconds without a
    byte (408)."""
    too_large = ApiError("RequestEntityTooLarge", "the request body is too large", status=413)
    length = request.content_length
    if length is not None and length > _BODY_MAX:
        raise too_large
    data = bytearray()
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await request.content.read(_CHUNK)
        except TimeoutError:
            raise body_timeout(idle) from None
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > _BODY_MAX:
            raise too_large


def json_response(meta: Meta, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    """A JSON answer with the family's extra headers."""
    out = {"Content-Type": "application/json; charset=utf-8", **request_id_headers(meta), **headers}
    return web.Response(status=status, body=body, headers=out)


def error_response(meta: Meta, err: ApiError) -> web.Response:
    """The family's error answer for ``err``."""
    return json_response(meta, err.status, dumps(error_body(meta, err)), err.headers)


# -- parameters ------------------------------------------------------------------------------

#: Fields a flattened query carries as numbers.
_INT_FIELDS = frozenset({"PageNumber", "PageSize", "MaxResults"})


#: Deepest nesting of objects/arrays a request body (or a dotted query key) may have.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (iterative: a deep value cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(body: bytes) -> Any:
    """``body`` parsed as JSON; ValueError (with a message safe to answer) otherwise.

    Invalid UTF-8 or JSON, nesting past :data:`MAX_DEPTH` (including the parser's own
    recursion limit) and integers too long to convert are all a ValueError, never a
    RecursionError that would become a 500.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not valid JSON") from None
    if _depth(data) > MAX_DEPTH:
        raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels")
    return data


def parse_json_body(body: bytes) -> Params:
    """A JSON object body (an empty body is ``{}``)."""
    if not body.strip():
        return Params({})
    try:
        data = load_json(body)
    except ValueError as exc:
        message = str(exc).replace("the body", "the request body")
        raise ApiError("InvalidParameter", message) from None
    if not isinstance(data, dict):
        raise ApiError("InvalidParameter", "the request body must be a JSON object")
    return Params(data)


def unflatten_query(pairs: Iterable[tuple[str, str]]) -> Params:
    """Turn ``Filter.Name=x&Filter.GroupIds.1=a&PageSize=10`` into nested parameters."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        if key in ("Action", "Version"):
            continue
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise ApiError("InvalidParameter", f"the query parameter {key[:64]} nests too deeply")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ApiError("InvalidParameter", f"conflicting query parameter {key}")
            node = child
        leaf: Any = value
        if parts[-1] in _INT_FIELDS and _is_index(value.removeprefix("-")):
            leaf = int(value)
        node[parts[-1]] = leaf
    return Params(_lists(root))


def _is_index(text: str) -> bool:
    """ASCII digits short enough for ``int()`` (``"²"`` and 5,000-digit keys are not)."""
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


def _lists(node: dict[str, Any]) -> dict[str, Any]:
    """``{"1": a, "2": b}`` children become lists (``GroupIds.1``, ``GroupIds.2``)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            if value and all(_is_index(k) for k in value):
                out[key] = [value[k] for k in sorted(value, key=int)]
            else:
                out[key] = _lists(value)
        else:
            out[key] = value
    return out


class Params:
    """Typed, validating access to one parameter object."""

    __slots__ = ("_data", "_prefix")

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self._data = data
        self._prefix = prefix

    def _name(self, field: str) -> str:
        return f"{self._prefix}{field}"

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of the raw parameters."""
        return dict(self._data)

    def has(self, field: str) -> bool:
        """True when the field is present and not null."""
        return self._data.get(field) is not None

    def text(
        self,
        field: str,
        *,
        required: bool = False,
        max_len: int | None = None,
        default: str | None = None,
        allow_empty: bool = True,
    ) -> str | None:
        """A string field."""
        value = self._data.get(field)
        if value is None:
            if required:
                raise missing(self._name(field))
            return default
        if not isinstance(value, str):
            raise invalid(self._name(field), "must be a string")
        if not allow_empty and not value.strip():
            raise invalid(self._name(field), "must not be empty")
        if max_len is not None and len(value) > max_len:
            raise invalid(self._name(field), f"must be at most {max_len} characters")
        if "\0" in value:
            raise invalid(self._name(field), "must not contain NUL")
        return value

    def need_text(self, field: str, *, max_len: int | None = None) -> str:
        """A required, non-empty string field."""
        return self.text(field, required=True, max_len=max_len, allow_empty=False) or ""

    def enum(
        self, field: str, choices: Sequence[str], *, required: bool = False, default: str | None
    ) -> str | None:
        """A string field limited to ``choices`` (exact case)."""
        value = self.text(field, required=required, default=default)
        if value is not None and value not in choices:
            raise invalid(self._name(field), f"must be one of {', '.join(choices)}")
        return value

    def integer(self, field: str, *, default: int, lo: int, hi: int) -> int:
        """An integer field within ``[lo, hi]``."""
        value = self._data.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(self._name(field), "must be an integer")
        if not lo <= value <= hi:
            raise invalid(self._name(field), f"must be between {lo} and {hi}")
        return value

    def text_list(self, field: str, *, max_items: int = 100) -> list[str] | None:
        """A list of strings (None when absent)."""
        value = self._data.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(self._name(field), "must be a list of strings")
        if len(value) > max_items:
            raise invalid(self._name(field), f"must have at most {max_items} items")
        return list(value)

    def obj(self, field: str) -> Params:
        """A nested object (empty when absent)."""
        value = self._data.get(field)
        if value is None:
            return Params({}, f"{self._name(field)}.")
        if not isinstance(value, dict):
            raise invalid(self._name(field), "must be an object")
        return Params(value, f"{self._name(field)}.")

    def __repr__(self) -> str:
        return f"Params({sorted(self._data)})"
