"""The route table: every path the emulator serves, and the handlers of the Ark-shaped
families (official Ark, overseas gateway, private avatar) and of the emulator's own
endpoints. Chenyu's handlers are in :mod:`.chenyu`; every API handler runs through
:func:`~chenyu_assets.emulator.pipeline.run`. Paths, actions and avatar routes come from
:mod:`chenyu_assets.spec`, which the SDK's clients read too.

* Official Ark: ``POST|GET /?Action=<A>&Version=2024-01-01``, AK/SK signed (``X-Date``
  within ``max_skew_seconds``, region in ``allowed_regions``, service ``ark``); the JSON
  body, or flattened query parameters (``Filter.GroupIds.1=...``) on GET. An unknown action
  or version is ``InvalidActionOrVersion`` (404) before authentication. The envelope's
  ``Region`` is the signed region.
* Overseas gateway: ``POST /byteplus/_unstable/open/<Action>`` + Bearer, flat answers with
  ``base_resp``; ``CreateAsset`` without ``GroupId`` uses the account's implicit
  ``gateway-default`` group and ``GetAsset`` shows the published fields only
  (:data:`~chenyu_assets.emulator.actions.GATEWAY_ACTIONS`). Limits are the Ark ones.
* Private avatar: :data:`~chenyu_assets.spec.AVATAR_ROUTES` + Bearer, Volcengine envelope.
  ``model`` (body, or query for DELETE/GET) is required (``MissingParameter.model``) and must
  be one of :data:`~chenyu_assets.spec.AVATAR_MODELS`; a body ``Id`` must equal the path's.
  Anything else under the prefix is ``InvalidActionOrVersion`` (404).

Emulator endpoints (no authentication). The control ones (audit, config, faults, advance)
answer only a loopback client that names a loopback ``Host`` and sends no ``Origin``
header (403 otherwise: a web page cannot steer the emulator, even through DNS rebinding);
their POSTs need ``Content-Type: application/json`` (415) and a JSON body (400):

* ``GET /_emulator/audit`` — the :class:`~chenyu_assets.emulator.audit.Audit` as JSON;
* ``GET /_emulator/config`` — the live config (account secrets and API keys left out);
* ``POST /_emulator/config`` — change the live settings of
  :data:`LIVE_FIELDS`; answers the new config;
* ``GET|POST /_emulator/faults`` — read, or replace with a JSON list of fault rules;
* ``POST /_emulator/advance`` — ``{"seconds": n}`` jumps emulated time forward;
* ``GET /_emulator/media/<kind>/<W>x<H>.<ext>`` — generated sample media (open to anyone;
  an image over ``max_sample_pixels`` is a 400);
* ``GET /ark/assets/<id>/content?expires=&signature=`` — an Ark asset's content (GetAsset's
  signed ``URL``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError
from yarl import URL

from chenyu_assets import media
from chenyu_assets.emulator.actions import ACTIONS, GATEWAY_ACTIONS, Action
from chenyu_assets.emulator.chenyu import content_handler, get_handler, upload_handler
from chenyu_assets.emulator.config import Account
from chenyu_assets.emulator.content import SampleTooLarge, parse_sample_path
from chenyu_assets.emulator.faults import FaultRule
from chenyu_assets.emulator.guard import is_loopback
from chenyu_assets.emulator.pipeline import (
    STATE,
    Call,
    EmulatorState,
    Sent,
    bearer,
    reject,
    run,
    signed_account,
)
from chenyu_assets.emulator.wire import (
    ApiError,
    Params,
    invalid,
    load_json,
    missing,
    parse_json_body,
    read_body,
    unflatten_query,
)
from chenyu_assets.spec import (
    ARK_ACTIONS,
    ARK_VERSION,
    AVATAR_MODELS,
    AVATAR_PREFIX,
    AVATAR_ROUTES,
    CHENYU_PREFIX,
    GATEWAY_PREFIX,
)

__all__ = ["LIVE_FIELDS", "ROUTES", "build_app", "public_config"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RULES = TypeAdapter(list[FaultRule])
#: Settings ``POST /_emulator/config`` may change.
LIVE_FIELDS = frozenset(
    {
        "time_scale",
        "processing_delay",
        "processing_jitter",
        "window",
        "max_skew_seconds",
        "clock_offset_seconds",
        "list_lag",
        "enforce_limits",
        "validate_media",
        "rates",
        "max_processing",
        "signed_url_seconds",
    }
)
_SEND_CHUNK = 256 * 1024


# -- the Ark-shaped families ----------------------------------------------------------------


async def _ark(request: web.Request) -> web.StreamResponse:
    """``POST|GET /?Action=...&Version=...``."""
    state = request.app[STATE]
    action = request.query.get("Action", "")
    version = request.query.get("Version", "")
    meta = state.meta("ark", action, version=version or ARK_VERSION)
    if action not in ARK_ACTIONS or version != ARK_VERSION:
        what = "Version" if action in ARK_ACTIONS else "Action"
        return reject(
            state, meta, ApiError("InvalidActionOrVersion", f"the {what} is not supported")
        )
    body = b""

    async def authenticate() -> Account:
        nonlocal body
        cfg = state.config
        body = await read_body(request, cfg.body_idle_timeout)
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
        if request.method == "GET":
            return ACTIONS[action](call, unflatten_query(request.query.items()))
        return ACTIONS[action](call, parse_json_body(body))

    return await run(request, state, meta, authenticate, handler)


async def _gateway(request: web.Request) -> web.StreamResponse:
    """``POST /byteplus/_unstable/open/{action}``."""
    state = request.app[STATE]
    action = request.match_info["action"]
    meta = state.meta("gateway", action)
    if action not in GATEWAY_ACTIONS:
        return reject(state, meta, ApiError("InvalidActionOrVersion", "unknown action"))

    async def handler(call: Call) -> dict[str, Any]:
        params = parse_json_body(await read_body(request, state.config.body_idle_timeout))
        return GATEWAY_ACTIONS[action](call, params)

    return await run(request, state, meta, bearer(request), handler)


def _avatar(action: Action, name: str) -> Handler:
    """The handler of one private-avatar route."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        path_id = request.match_info.get("Id")

        async def handler(call: Call) -> dict[str, Any]:
            data: dict[str, Any]
            if request.method in ("GET", "DELETE"):
                data = dict(request.query.items())
            else:
                idle = state.config.body_idle_timeout
                data = parse_json_body(await read_body(request, idle)).as_dict()
            model = data.get("model")
            if model is None or model == "":
                raise missing("model")
            if model not in AVATAR_MODELS:
                raise invalid("model", f"must be one of {', '.join(AVATAR_MODELS)}")
            if path_id is not None:
                if "Id" in data and data["Id"] != path_id:
                    raise invalid("Id", "does not match the id in the path")
                data["Id"] = path_id
            return action(call, Params(data))

        return await run(request, state, state.meta("avatar", name), bearer(request), handler)

    return handle


async def _avatar_unknown(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    err = ApiError("InvalidActionOrVersion", "unknown private-avatar route")
    return reject(state, state.meta("avatar", "Unknown"), err)


# -- content --------------------------------------------------------------------------------


async def _send_bytes(request: web.Request, data: bytes, mime: str) -> web.StreamResponse:
    """Stream ``data`` in chunks, waiting for the peer to take each: a client that does
    not read holds about one chunk of buffer, not a copy of a 48 MiB sample."""
    resp = web.StreamResponse(headers={"Content-Type": mime})
    resp.content_length = len(data)
    await resp.prepare(request)
    view = memoryview(data)
    for start in range(0, len(view), _SEND_CHUNK):
        await resp.write(view[start : start + _SEND_CHUNK])
    await resp.write_eof()
    return resp


async def _media(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    spec = parse_sample_path(request.path, request.query)
    if spec is None:
        raise web.HTTPNotFound(text="no such sample")
    try:
        state.samples.check(spec)
    except SampleTooLarge as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    data, mime = await asyncio.to_thread(state.samples.get, spec)
    return await _send_bytes(request, data, mime)


def _content_type(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        kind = media.sniff(f.read(64))
    return {"Content-Type": kind[2] if kind else "application/octet-stream"}


async def _ark_content(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    asset_id = request.match_info["asset_id"]

    async def authenticate() -> Account:
        asset = state.store.asset_by_id(asset_id)
        owner = None if asset is None else asset.account
        return state.signed_owner("ark", asset_id, request.query, owner)

    async def handler(call: Call) -> Sent:
        asset = state.store.asset_by_id(asset_id)
        if asset is None or asset.status != "Active":
            raise ApiError("NotFound", "the asset has no content", status=404)
        if asset.blob is not None:
            path = state.blob_dir / asset.blob
            if path.is_file():
                return Sent(web.FileResponse(path, headers=_content_type(path)), 200)
        source = URL(asset.source_url)
        spec = parse_sample_path(source.path, source.query)
        if spec is not None and state.fetcher.is_local(source):
            try:
                data, mime = await asyncio.to_thread(state.samples.get, spec)
            except ValueError:  # the pixel cap was lowered since the asset was made
                msg = "the asset's content is over the sample cap"
                raise ApiError("NotFound", msg, status=404) from None
            return Sent(await _send_bytes(request, data, mime), 200)
        file = state.fetcher.local_file(source) if state.fetcher.is_local(source) else None
        if file is not None and file.is_file():
            return Sent(web.FileResponse(file), 200)
        raise ApiError("NotFound", "the asset's content is not kept by the emulator", status=404)

    meta = state.meta("content", "GetContent")
    return await run(request, state, meta, authenticate, handler)


# -- control --------------------------------------------------------------------------------


def public_config(state: EmulatorState) -> dict[str, Any]:
    """The config as JSON-able data, without secret keys or API keys."""
    data = state.config.model_dump(mode="json", exclude={"accounts", "faults"})
    data["accounts"] = [{"name": a.name, "access_key": a.access_key} for a in state.config.accounts]
    data["faults"] = [r.model_dump(mode="json") for r in state.faults.rules]
    data["base_url"] = state.base_url
    return data


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, ensure_ascii=False).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


def _host_name(header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8765`` -> ``::1``), or ``""``."""
    try:
        return URL.build(scheme="http", authority=header).host or ""
    except ValueError:
        return ""


def _control(handler: Callable[[web.Request, EmulatorState], Awaitable[web.Response]]) -> Handler:
    """Refuse a control request a browser page or a remote peer could have sent (403)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if "Origin" in request.headers:
            raise web.HTTPForbidden(text="emulator control refuses requests with an Origin header")
        if not _is_loopback(request.remote or ""):
            raise web.HTTPForbidden(text="emulator control is only available from loopback")
        if not _is_loopback(_host_name(request.headers.get("Host", ""))):
            raise web.HTTPForbidden(text="emulator control needs a loopback Host header")
        return await handler(request, request.app[STATE])

    return guarded


async def _json_body(request: web.Request) -> Any:
    """The JSON body of a control POST (415 without ``application/json``, 400 if invalid)."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": "Content-Type must be application/json"}),
            content_type="application/json",
        )
    try:
        return load_json(await request.read())
    except ValueError as exc:
        text = json.dumps({"error": str(exc)})
        raise web.HTTPBadRequest(text=text, content_type="application/json") from None


async def _audit(request: web.Request, state: EmulatorState) -> web.Response:
    return web.Response(body=state.snapshot().model_dump_json(), content_type="application/json")


async def _config(request: web.Request, state: EmulatorState) -> web.Response:
    if request.method == "POST":
        changes = await _json_body(request)
        if not isinstance(changes, dict) or not set(changes) <= LIVE_FIELDS:
            return _json({"error": f"only these fields may change: {sorted(LIVE_FIELDS)}"}, 400)
        try:
            merged = state.config.model_validate({**state.config.model_dump(), **changes})
        except ValidationError as exc:
            return _json({"error": exc.errors(include_url=False, include_input=False)}, 400)
        for key in changes:
            setattr(state.config, key, getattr(merged, key))
    return _json(public_config(state))


async def _faults(request: web.Request, state: EmulatorState) -> web.Response:
    if request.method == "POST":
        try:
            rules = _RULES.validate_python(await _json_body(request))
        except ValidationError as exc:
            return _json({"error": exc.errors(include_url=False, include_input=False)}, 400)
        state.faults.set_rules(rules)
        state.config.faults = rules
    rules_json = [r.model_dump(mode="json") for r in state.faults.rules]
    return _json({"rules": rules_json, "fired": state.faults.fired()})


async def _advance(request: web.Request, state: EmulatorState) -> web.Response:
    body = await _json_body(request)
    try:
        seconds = float(body["seconds"])
        if not math.isfinite(seconds):
            raise ValueError("not finite")
        state.clock.advance(seconds)
    except (ValueError, KeyError, TypeError, OverflowError):
        return _json({"error": 'expected {"seconds": <non-negative number>}'}, 400)
    return _json({"now": state.clock.now()})


async def _health(request: web.Request) -> web.Response:
    return _json({"ok": True, "base_url": request.app[STATE].base_url})


def _get(path: str, handler: Handler) -> list[tuple[str, str, Handler]]:
    return [("HEAD", path, handler), ("GET", path, handler)]  # aiohttp's add_get


#: Every route: (method, path, handler), registered in this order.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/", _ark),
    *_get("/", _ark),
    ("POST", f"{GATEWAY_PREFIX}/{{action}}", _gateway),
    *((m, AVATAR_PREFIX + p, _avatar(ACTIONS[a], a)) for a, (m, p) in AVATAR_ROUTES.items()),
    ("*", AVATAR_PREFIX + "/{tail:.*}", _avatar_unknown),
    ("POST", f"{CHENYU_PREFIX}/assets", upload_handler),
    *_get(f"{CHENYU_PREFIX}/assets/{{asset_id}}", get_handler),
    *_get("/assets/{asset_id}/content", content_handler),
    *_get("/ark/assets/{asset_id}/content", _ark_content),
    *_get("/_emulator/audit", _control(_audit)),
    ("GET", "/_emulator/config", _control(_config)),
    ("POST", "/_emulator/config", _control(_config)),
    ("GET", "/_emulator/faults", _control(_faults)),
    ("POST", "/_emulator/faults", _control(_faults)),
    ("POST", "/_emulator/advance", _control(_advance)),
    *_get("/_emulator/health", _health),
    *_get("/_emulator/media/{kind}/{name}", _media),
)


def build_app(state: EmulatorState) -> web.Application:
    """The application serving all four families from one state."""
    app = web.Application(client_max_size=1024 * 1024)
    app[STATE] = state
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
