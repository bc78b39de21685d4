"""The official Ark endpoint: ``POST /?Action=<A>&Version=2024-01-01`` with AK/SK signing.

The JSON body carries the PascalCase parameters. ``GET /?Action=...`` with flattened query
parameters (``Filter.Name=...``, ``Filter.GroupIds.1=...``) is accepted too. An unknown
action or version is ``InvalidActionOrVersion`` (404) before authentication; everything
else is authenticated with :func:`~chenyu_assets._core.signing.verify_request`
(``X-Date`` within ``max_skew_seconds`` of the emulator's clock, region in
``allowed_regions``, service ``ark``). The envelope's ``Region`` is the signed region.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from chenyu_assets.emulator.actions import ACTIONS
from chenyu_assets.emulator.auth import signed_account
from chenyu_assets.emulator.config import Account
from chenyu_assets.emulator.envelopes import ApiError, Meta, dumps, error_body, new_request_id
from chenyu_assets.emulator.params import Params, parse_json_body, unflatten_query
from chenyu_assets.emulator.pipeline import Call, json_response, run
from chenyu_assets.emulator.state import STATE, EmulatorState
from chenyu_assets.limits import ARK_VERSION

__all__ = ["add_routes", "body_timeout", "read_body", "reject"]

BODY_MAX = 1024 * 1024
_CHUNK = 64 * 1024


def body_timeout(seconds: float) -> ApiError:
    """408: no byte of the request body arrived for ``seconds``."""
    return ApiError(
        "RequestTimeout", f"no byte of the request body arrived for {seconds:g} s", status=408
    )


async def read_body(request: web.Request) -> bytes:
    """The request body, refused past 1 MiB (413) or after ``body_idle_timeout`` without
    a byte (408)."""
    length = request.content_length
    if length is not None and length > BODY_MAX:
        raise ApiError("RequestEntityTooLarge", "the request body is too large", status=413)
    idle = request.app[STATE].config.body_idle_timeout
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
        if len(data) > BODY_MAX:
            raise ApiError("RequestEntityTooLarge", "the request body is too large", status=413)


def reject(state: EmulatorState, meta: Meta, err: ApiError) -> web.Response:
    """Answer (and audit) an error found before authentication."""
    state.audit.record(
        t=state.clock.elapsed(),
        family=meta.family,
        action=meta.action,
        account=None,
        status=err.status,
        code=err.code,
    )
    return json_response(meta, err.status, dumps(error_body(meta, err)), {})


async def ark_handler(request: web.Request) -> web.StreamResponse:
    """``POST|GET /?Action=...&Version=...``."""
    state = request.app[STATE]
    action = request.query.get("Action", "")
    version = request.query.get("Version", "")
    meta = Meta(
        family="ark",
        action=action,
        request_id=new_request_id(state.clock.now()),
        version=version or ARK_VERSION,
    )
    if action not in ACTIONS or version != ARK_VERSION:
        what = "Version" if action in ACTIONS else "Action"
        err = ApiError("InvalidActionOrVersion", f"the {what} is not supported")
        return reject(state, meta, err)
    body = b""

    async def authenticate() -> Account:
        nonlocal body
        body = await read_body(request)
        cfg = state.config
        account, verified = signed_account(
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            headers=request.headers,
            body=body,
            accounts=cfg.accounts,
            now=state.clock.signing_now(),
            max_skew_seconds=cfg.max_skew_seconds,
            allowed_regions=cfg.allowed_regions,
        )
        meta.region = verified.region
        return account

    async def handler(call: Call) -> dict[str, Any]:
        params: Params
        if request.method == "GET":
            params = unflatten_query(request.query.items())
        else:
            params = parse_json_body(body)
        return ACTIONS[action](call, params)

    return await run(request, state, meta, authenticate, handler)


def add_routes(app: web.Application) -> None:
    """Register ``/`` for GET and POST."""
    app.router.add_post("/", ark_handler)
    app.router.add_get("/", ark_handler)
