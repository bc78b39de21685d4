"""Error values and the four families' response envelopes.

Handlers raise :class:`ApiError` with an Ark-style code (``InvalidParameter.Name``,
``NotFound.asset_id``, ``FlowLimitExceeded`` ...); the HTTP status comes from
:data:`chenyu_assets.errors.ARK_ERROR_STATUS`. Each family renders it its own way:

* ``ark`` / ``avatar``: ``{"ResponseMetadata": {RequestId, Action, Version, Service, Region,
  Error{Code, Message}}}`` (no ``Result``);
* ``gateway``: ``{"base_resp": {"status_code": <HTTP status>, "status_msg": "<Code>: <msg>"}}``
  (success: ``status_code`` 0, ``status_msg`` ``"success"``, fields flat beside it);
* ``chenyu``: ``{"code": <HTTP status>, "msg": "<message>", "data": null}`` (success: code 0);
* ``content`` (signed downloads): a small JSON ``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chenyu_assets.errors import ARK_ERROR_STATUS, ark_status_for_code
from chenyu_assets.limits import ARK_VERSION

__all__ = [
    "ApiError",
    "Meta",
    "code_for_status",
    "dumps",
    "error_body",
    "invalid",
    "missing",
    "new_request_id",
    "ok_body",
    "request_id_headers",
]

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
    if meta.family in ("ark", "avatar"):
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
    if meta.family in ("ark", "avatar"):
        return {"ResponseMetadata": _response_metadata(meta), "Result": result}
    if meta.family == "gateway":
        return {**result, "base_resp": {"status_code": 0, "status_msg": "success"}}
    if meta.family == "chenyu":
        return {"code": 0, "msg": _CHENYU_OK_MSG.get(meta.action, "success"), "data": result}
    return result


def error_body(meta: Meta, err: ApiError) -> dict[str, Any]:
    """The error envelope of ``meta.family`` for ``err``."""
    if meta.family in ("ark", "avatar"):
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
