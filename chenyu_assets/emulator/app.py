"""The aiohttp application: every family's routes plus the emulator's own endpoints.

Emulator endpoints (no authentication). The control ones (audit, config, faults, advance)
answer only a loopback client that names a loopback ``Host`` and sends no ``Origin``
header (403 otherwise: a web page cannot steer the emulator, even through DNS rebinding);
their POSTs need ``Content-Type: application/json`` (415) and a JSON body (400):

* ``GET /_emulator/audit`` — the :class:`~chenyu_assets.emulator.audit.Audit` as JSON;
* ``GET /_emulator/config`` — the live config (account secrets and API keys left out);
* ``POST /_emulator/config`` — change live settings (JSON object of the fields in
  :data:`LIVE_FIELDS`); answers the new config;
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
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError
from yarl import URL

from chenyu_assets import media
from chenyu_assets.emulator import ark, avatar, chenyu, gateway
from chenyu_assets.emulator.config import Account, FaultRule
from chenyu_assets.emulator.envelopes import ApiError, Meta, new_request_id
from chenyu_assets.emulator.fetch import parse_sample_path
from chenyu_assets.emulator.guard import is_loopback
from chenyu_assets.emulator.params import load_json
from chenyu_assets.emulator.pipeline import Call, Sent, run
from chenyu_assets.emulator.samples import SampleTooLarge
from chenyu_assets.emulator.state import STATE, EmulatorState

__all__ = ["LIVE_FIELDS", "build_app", "public_config"]

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
_RULES = TypeAdapter(list[FaultRule])


def public_config(state: EmulatorState) -> dict[str, Any]:
    """The config as JSON-able data, without secret keys or API keys."""
    data = state.config.model_dump(mode="json", exclude={"accounts", "faults"})
    data["accounts"] = [{"name": a.name, "access_key": a.access_key} for a in state.config.accounts]
    data["faults"] = [r.model_dump(mode="json") for r in state.faults.rules]
    data["base_url"] = state.base_url
    return data


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, ensure_ascii=False).encode(),
        content_type="application/json",
    )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


def _host_name(header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8765`` -> ``::1``), or ``""``."""
    try:
        return URL.build(scheme="http", authority=header).host or ""
    except ValueError:
        return ""


def _control(request: web.Request) -> None:
    """Refuse a control request a browser page or a remote peer could have sent (403)."""
    if "Origin" in request.headers:
        raise web.HTTPForbidden(text="emulator control refuses requests with an Origin header")
    if not _is_loopback(request.remote or ""):
        raise web.HTTPForbidden(text="emulator control is only available from loopback")
    if not _is_loopback(_host_name(request.headers.get("Host", ""))):
        raise web.HTTPForbidden(text="emulator control needs a loopback Host header")


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
        raise web.HTTPBadRequest(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None


async def _audit(request: web.Request) -> web.Response:
    _control(request)
    state = request.app[STATE]
    return web.Response(body=state.snapshot().model_dump_json(), content_type="application/json")


async def _config(request: web.Request) -> web.Response:
    _control(request)
    state = request.app[STATE]
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


async def _faults(request: web.Request) -> web.Response:
    _control(request)
    state = request.app[STATE]
    if request.method == "POST":
        try:
            rules = _RULES.validate_python(await _json_body(request))
        except ValidationError as exc:
            return _json({"error": exc.errors(include_url=False, include_input=False)}, 400)
        state.faults.set_rules(rules)
        state.config.faults = rules
    rules_json = [r.model_dump(mode="json") for r in state.faults.rules]
    return _json({"rules": rules_json, "fired": state.faults.fired()})


async def _advance(request: web.Request) -> web.Response:
    _control(request)
    state = request.app[STATE]
    body = await _json_body(request)
    try:
        seconds = float(body["seconds"])
        if not math.isfinite(seconds):
            raise ValueError("not finite")
        state.clock.advance(seconds)
    except (ValueError, KeyError, TypeError, OverflowError):
        return _json({"error": 'expected {"seconds": <non-negative number>}'}, 400)
    return _json({"now": state.clock.now()})


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


_SEND_CHUNK = 256 * 1024


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


async def _ark_content(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    asset_id = request.match_info["asset_id"]
    meta = Meta(family="content", action="GetContent", request_id=new_request_id(state.clock.now()))

    async def authenticate() -> Account:
        refusal = state.signer.check("ark", asset_id, request.query, state.clock.now())
        if refusal is not None:
            raise ApiError("AccessDenied", refusal)
        asset = state.store.asset_by_id(asset_id)
        owner = None
        if asset is not None:
            owner = next((a for a in state.config.accounts if a.name == asset.account), None)
        if owner is None:
            raise ApiError("NotFound", "the asset does not exist", status=404)
        return owner

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

    return await run(request, state, meta, authenticate, handler)


def _content_type(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        kind = media.sniff(f.read(64))
    return {"Content-Type": kind[2] if kind else "application/octet-stream"}


async def _health(request: web.Request) -> web.Response:
    return _json({"ok": True, "base_url": request.app[STATE].base_url})


def build_app(state: EmulatorState) -> web.Application:
    """The application serving all four families from one state."""
    app = web.Application(client_max_size=1024 * 1024)
    app[STATE] = state
    ark.add_routes(app)
    chenyu.add_routes(app)
    gateway.add_routes(app)
    avatar.add_routes(app)
    app.router.add_get("/ark/assets/{asset_id}/content", _ark_content)
    app.router.add_get("/_emulator/audit", _audit)
    app.router.add_route("GET", "/_emulator/config", _config)
    app.router.add_route("POST", "/_emulator/config", _config)
    app.router.add_route("GET", "/_emulator/faults", _faults)
    app.router.add_route("POST", "/_emulator/faults", _faults)
    app.router.add_post("/_emulator/advance", _advance)
    app.router.add_get("/_emulator/health", _health)
    app.router.add_get("/_emulator/media/{kind}/{name}", _media)
    return app
