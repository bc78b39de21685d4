"""The private-avatar proxy: ``/v1/private-avatar/...`` + Bearer, Volcengine envelope.

| # | route | action |
|---|---|---|
| ① | ``POST /v1/private-avatar/groups`` | CreateAssetGroup |
| ② | ``POST /v1/private-avatar/groups/list`` | ListAssetGroups |
| ⑤ | ``DELETE /v1/private-avatar/groups/{id}?model=`` | DeleteAssetGroup |
| ⑥ | ``POST /v1/private-avatar/assets`` | CreateAsset |
| ⑦ | ``POST /v1/private-avatar/assets/list`` | ListAssets |
| ⑧ | ``GET /v1/private-avatar/assets/{id}?model=`` | GetAsset |
| ⑨ | ``PATCH /v1/private-avatar/assets/{id}`` | UpdateAsset |

``model`` (body, or query for DELETE/GET) is required (``MissingParameter.model``) and must
be one of :data:`MODELS` (``InvalidParameter.model``). A body ``Id`` on ⑨ must equal the
path's. Anything else under the prefix is ``InvalidActionOrVersion`` (404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chenyu_assets.emulator.actions import ACTIONS
from chenyu_assets.emulator.ark import read_body, reject
from chenyu_assets.emulator.auth import bearer_account
from chenyu_assets.emulator.config import Account
from chenyu_assets.emulator.envelopes import ApiError, Meta, invalid, missing, new_request_id
from chenyu_assets.emulator.params import Params, parse_json_body
from chenyu_assets.emulator.pipeline import Call, run
from chenyu_assets.emulator.state import STATE

__all__ = ["MODELS", "PREFIX", "add_routes"]

PREFIX = "/v1/private-avatar"
MODELS = ("doubao-seedance-2-0-260128", "doubao-seedance-2-0-fast-260128")

#: (method, path pattern) -> action; ``{id}`` routes take the id from the path.
_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/groups", "CreateAssetGroup"),
    ("POST", "/groups/list", "ListAssetGroups"),
    ("DELETE", "/groups/{id}", "DeleteAssetGroup"),
    ("POST", "/assets", "CreateAsset"),
    ("POST", "/assets/list", "ListAssets"),
    ("GET", "/assets/{id}", "GetAsset"),
    ("PATCH", "/assets/{id}", "UpdateAsset"),
)


def _check_model(value: Any) -> None:
    if value is None or value == "":
        raise missing("model")
    if value not in MODELS:
        raise invalid("model", f"must be one of {', '.join(MODELS)}")


def _make_handler(action: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        meta = Meta(family="avatar", action=action, request_id=new_request_id(state.clock.now()))
        path_id = request.match_info.get("id")

        async def authenticate() -> Account:
            return bearer_account(request.headers.get("Authorization"), state.config.accounts)

        async def handler(call: Call) -> dict[str, Any]:
            data: dict[str, Any]
            if request.method in ("GET", "DELETE"):
                data = dict(request.query.items())
            else:
                data = parse_json_body(await read_body(request)).as_dict()
            _check_model(data.get("model"))
            if path_id is not None:
                if "Id" in data and data["Id"] != path_id:
                    raise invalid("Id", "does not match the id in the path")
                data["Id"] = path_id
            return ACTIONS[action](call, Params(data))

        return await run(request, state, meta, authenticate, handler)

    return handle


async def _unknown(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    meta = Meta(family="avatar", action="Unknown", request_id=new_request_id(state.clock.now()))
    return reject(state, meta, ApiError("InvalidActionOrVersion", "unknown private-avatar route"))


def add_routes(app: web.Application) -> None:
    """Register the proxy's routes and a catch-all 404."""
    for method, path, action in _ROUTES:
        app.router.add_route(method, PREFIX + path, _make_handler(action))
    app.router.add_route("*", PREFIX + "/{tail:.*}", _unknown)
