"""Injected faults: which rule fires for a request, and how a misbehaving answer is sent.

:class:`FaultEngine` draws from one ``random.Random(seed)``: for each request it walks the
rules in order and, for every rule that matches (family, action, kind applicable, fire
count below ``max_count``), draws one number; the first draw under ``probability`` fires.
The same seed and the same request sequence therefore give the same fault sequence.

:func:`misbehave` sends the answer for the connection-level kinds (``http_error``,
``reset``, ``close``, ``truncate``, ``hang``); ``latency``, ``list_lag`` and ``stuck``
change how the request is processed and are handled by the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Sequence

from aiohttp import web

from chenyu_assets.emulator.config import FaultRule
from chenyu_assets.emulator.envelopes import (
    ApiError,
    Meta,
    code_for_status,
    dumps,
    error_body,
    request_id_headers,
)

__all__ = ["CONNECTION_KINDS", "FaultEngine", "misbehave"]

#: Kinds that replace the answer (the rest alter processing).
CONNECTION_KINDS = frozenset({"http_error", "reset", "close", "truncate", "hang"})

_HTML_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _applies(rule: FaultRule, family: str, action: str) -> bool:
    if rule.family is not None and rule.family != family:
        return False
    if rule.action not in ("*", action):
        return False
    if rule.kind == "list_lag":
        return action in ("ListAssets", "ListAssetGroups")
    if rule.kind == "stuck":
        return action == "CreateAsset"
    return True


class FaultEngine:
    """Seeded, ordered fault-rule matching with per-rule fire counters."""

    __slots__ = ("_fired", "_rng", "_rules")

    def __init__(self, seed: int, rules: Sequence[FaultRule] = ()) -> None:
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = list(rules)
        self._fired: list[int] = [0] * len(self._rules)

    @property
    def rules(self) -> list[FaultRule]:
        """The current rules (a copy)."""
        return list(self._rules)

    def set_rules(self, rules: Sequence[FaultRule]) -> None:
        """Replace every rule and reset the fire counters (the RNG keeps its state)."""
        self._rules = list(rules)
        self._fired = [0] * len(self._rules)

    def fired(self) -> list[int]:
        """How many times each rule has fired."""
        return list(self._fired)

    def pick(self, family: str, action: str) -> FaultRule | None:
        """The rule that fires for this request, or None."""
        for index, rule in enumerate(self._rules):
            if not _applies(rule, family, action):
                continue
            if rule.max_count is not None and self._fired[index] >= rule.max_count:
                continue
            if self._rng.random() < rule.probability:
                self._fired[index] += 1
                return rule
        return None

    def __repr__(self) -> str:
        return f"FaultEngine(rules={len(self._rules)}, fired={sum(self._fired)})"


def _abort(request: web.BaseRequest, *, rst: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def _dead_response() -> web.Response:
    # Returned after the connection is gone: aiohttp's attempt to send it fails quietly as
    # a "premature client disconnection".
    return web.Response(status=204)


async def _hang(request: web.BaseRequest, shutdown: asyncio.Event) -> None:
    while not shutdown.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shutdown.wait(), timeout=0.05)
    _abort(request, rst=True)


async def misbehave(
    request: web.BaseRequest,
    rule: FaultRule,
    meta: Meta,
    shutdown: asyncio.Event,
    *,
    committed: tuple[int, bytes] | None = None,
) -> tuple[web.StreamResponse, int]:
    """Send the misbehaving answer of ``rule``; returns (response, audited HTTP status).

    ``committed`` is the real (status, JSON body) when the request's effect was committed
    first (phase ``after``); ``close``/``truncate`` then cut that body.
    """
    kind = rule.kind
    if kind == "http_error":
        headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
        if rule.body == "html":
            reason = web.Response(status=rule.status).reason
            page = _HTML_PAGE.format(status=rule.status, reason=reason)
            return web.Response(
                status=rule.status, text=page, content_type="text/html", headers=headers
            ), rule.status
        err = ApiError(code_for_status(rule.status), "injected fault", status=rule.status)
        body = dumps(error_body(meta, err))
        headers.update(request_id_headers(meta))
        return web.Response(
            status=rule.status, body=body, content_type="application/json", headers=headers
        ), rule.status
    if kind == "reset":
        _abort(request, rst=True)
        return _dead_response(), 0
    if kind == "hang":
        await _hang(request, shutdown)
        return _dead_response(), 0
    # close / truncate: a plausible 200 answer cut short.
    status, body = committed if committed is not None else (200, dumps(error_body(meta, _CUT)))
    resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    resp.content_length = len(body)
    try:
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2] if kind == "truncate" else b"")
    except ConnectionError:
        return _dead_response(), 0
    _abort(request, rst=False)
    return resp, 0


_CUT = ApiError("InternalError", "this answer is cut short by an injected fault")
