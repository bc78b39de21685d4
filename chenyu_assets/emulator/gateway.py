"""The overseas gateway (Agentsflare): ``POST /byteplus/_unstable/open/<Action>`` + Bearer.

Published: ``CreateAsset`` (``{Name?, URL, AssetType}``, no group: each account has one
implicit gateway group, ``gateway-default`` in project ``default``) and ``GetAsset``
(``{Id}`` -> flat ``Id, Status, AssetType, Name, URL, CreateTime, UpdateTime``, plus
``Error`` when Failed). The other eight actions are served in the same path style with the
same flat envelope (their ``Result`` fields beside ``base_resp``), for SDKs that speak the
gateway style throughout; ``CreateAsset`` takes an explicit ``GroupId`` too.

Every answer carries ``base_resp{status_code, status_msg}``: 0 / ``success``, else the HTTP
status and ``"<Code>: <message>"``, and the request id in an ``X-Request-Id`` header.
Limits are the account's Ark limits.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chenyu_assets.emulator import actions
from chenyu_assets.emulator.ark import read_body, reject
from chenyu_assets.emulator.auth import bearer_account
from chenyu_assets.emulator.config import Account
from chenyu_assets.emulator.envelopes import ApiError, Meta, new_request_id
from chenyu_assets.emulator.params import Params, parse_json_body
from chenyu_assets.emulator.pipeline import Call, run
from chenyu_assets.emulator.state import STATE

__all__ = ["PREFIX", "add_routes"]

PREFIX = "/byteplus/_unstable/open"


def _create_asset(call: Call, p: Params) -> dict[str, Any]:
    if p.has("GroupId"):
        return actions.create_asset(call, p)
    return actions.create_asset(call, p, group=actions.gateway_group(call))


def _get_asset(call: Call, p: Params) -> dict[str, Any]:
    view = actions.get_asset(call, p)
    keys = ("Id", "Status", "AssetType", "Name", "URL", "CreateTime", "UpdateTime", "Error")
    return {k: view[k] for k in keys if k in view}


_GATEWAY_ACTIONS: dict[str, actions.Action] = {
    **actions.ACTIONS,
    "CreateAsset": _create_asset,
    "GetAsset": _get_asset,
}


async def gateway_handler(request: web.Request) -> web.StreamResponse:
    """``POST /byteplus/_unstable/open/{action}``."""
    state = request.app[STATE]
    action = request.match_info["action"]
    meta = Meta(family="gateway", action=action, request_id=new_request_id(state.clock.now()))
    if action not in _GATEWAY_ACTIONS:
        return reject(state, meta, ApiError("InvalidActionOrVersion", "unknown action"))

    async def authenticate() -> Account:
        return bearer_account(request.headers.get("Authorization"), state.config.accounts)

    async def handler(call: Call) -> dict[str, Any]:
        params = parse_json_body(await read_body(request))
        return _GATEWAY_ACTIONS[action](call, params)

    return await run(request, state, meta, authenticate, handler)


def add_routes(app: web.Application) -> None:
    """Register the gateway path."""
    app.router.add_post(f"{PREFIX}/{{action}}", gateway_handler)
