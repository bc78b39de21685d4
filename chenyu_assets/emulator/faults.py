"""Injected faults: the one registry of fault kinds, the rules that pick them, and the
misbehaving answers.

:data:`FAULTS` names every kind and says how it acts; the config parser (``FaultRule.kind``),
the request pipeline (:func:`chenyu_assets.emulator.pipeline.run`) and the docs (the
``FaultRule`` docstring) all read it. A kind either *sends* the answer itself (in phase
``before`` instead of the handler, in phase ``after`` once the request's effect is
committed), *delays* the normal answer, or is *read by the handler* it applies to
(``list_lag`` by the list actions, ``stuck`` by CreateAsset: ``Call.list_lag`` / ``Call.stuck``).

:class:`FaultEngine` draws from one ``random.Random(seed)``: for each request it walks the
rules in order and, for every rule that matches (family, action, kind applicable, fire
count below ``max_count``), draws one number; the first draw under ``probability`` fires.
The same seed and the same request sequence therefore give the same fault sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chenyu_assets.emulator.wire import (
    ApiError,
    Family,
    Meta,
    code_for_status,
    dumps,
    error_body,
    request_id_headers,
)
from chenyu_assets.spec import LIST_ACTIONS

__all__ = [
    "CONNECTION_KINDS",
    "FAULTS",
    "FAULT_KINDS",
    "Fault",
    "FaultEngine",
    "FaultRule",
    "Scene",
    "misbehave",
]


@dataclass(frozen=True, slots=True)
class Scene:
    """What a sending fault acts on; ``committed`` is the real (status, JSON body) when the
    request's effect was committed first (phase ``after``)."""

    request: web.BaseRequest
    rule: FaultRule
    meta: Meta
    shutdown: asyncio.Event
    committed: tuple[int, bytes] | None = None


#: Sends the misbehaving answer; returns it and the HTTP status to audit (0: none sent).
Sender = Callable[[Scene], Awaitable["tuple[web.StreamResponse, int]"]]


@dataclass(frozen=True, slots=True)
class Fault:
    """How one kind of fault acts (see the module docstring)."""

    doc: str
    send: Sender | None = None
    delays: bool = False
    #: the actions it applies to (None: every action)
    actions: frozenset[str] | None = None


_HTML_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


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


async def _http_error(s: Scene) -> tuple[web.StreamResponse, int]:
    rule, meta = s.rule, s.meta
    headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
    if rule.body == "html":
        reason = web.Response(status=rule.status).reason
        page = _HTML_PAGE.format(status=rule.status, reason=reason)
        resp = web.Response(
            status=rule.status, text=page, content_type="text/html", headers=headers
        )
        return resp, rule.status
    err = ApiError(code_for_status(rule.status), "injected fault", status=rule.status)
    headers.update(request_id_headers(meta))
    body = dumps(error_body(meta, err))
    resp = web.Response(
        status=rule.status, body=body, content_type="application/json", headers=headers
    )
    return resp, rule.status


async def _reset(s: Scene) -> tuple[web.StreamResponse, int]:
    _abort(s.request, rst=True)
    return _dead_response(), 0


async def _hang(s: Scene) -> tuple[web.StreamResponse, int]:
    while not s.shutdown.is_set():
        transport = s.request.transport
        if transport is None or transport.is_closing():
            return _dead_response(), 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.shutdown.wait(), timeout=0.05)
    _abort(s.request, rst=True)
    return _dead_response(), 0


_CUT = ApiError("InternalError", "this answer is cut short by an injected fault")


async def _cut(s: Scene) -> tuple[web.StreamResponse, int]:
    """A plausible answer (the committed one, or a 200) cut short: no body (``close``) or
    half of it (``truncate``), then the connection closes."""
    cut = (200, dumps(error_body(s.meta, _CUT)))
    status, body = s.committed if s.committed is not None else cut
    resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    resp.content_length = len(body)
    try:
        await resp.prepare(s.request)
        await resp.write(body[: len(body) // 2] if s.rule.kind == "truncate" else b"")
    except ConnectionError:
        return _dead_response(), 0
    _abort(s.request, rst=False)
    return resp, 0


#: Every fault kind: name -> how it acts. A new kind is one entry here (plus, for a kind
#: the handler reads, the line in the handler that reads it).
FAULTS: Mapping[str, Fault] = MappingProxyType(
    {
        "http_error": Fault(
            'answer ``status`` with a family error envelope (``body="json"``) or an HTML '
            'page (``body="html"``), plus ``Retry-After: retry_after`` when set',
            send=_http_error,
        ),
        "reset": Fault("abort the TCP connection (RST) without an answer", send=_reset),
        "close": Fault(
            "send the status line and headers (full ``Content-Length``) then close", send=_cut
        ),
        "truncate": Fault("send the headers and half of the JSON body, then close", send=_cut),
        "hang": Fault(
            "never answer (until the client goes away or the emulator stops)", send=_hang
        ),
        "latency": Fault("sleep ``delay`` seconds, then answer normally", delays=True),
        "list_lag": Fault(
            "ListAssets / ListAssetGroups hide items created in the last ``delay`` s",
            actions=LIST_ACTIONS,
        ),
        "stuck": Fault(
            "the asset created by this CreateAsset stays ``Processing`` forever",
            actions=frozenset({"CreateAsset"}),
        ),
    }
)
FAULT_KINDS: tuple[str, ...] = tuple(FAULTS)
#: Kinds that replace the answer (the rest alter processing).
CONNECTION_KINDS = frozenset(name for name, fault in FAULTS.items() if fault.send is not None)
if TYPE_CHECKING:
    FaultKind = str
else:  # the registry's names, validated (and shown in the JSON schema) as a Literal
    FaultKind = Literal[FAULT_KINDS]
_PHASED = [name for name, fault in FAULTS.items() if fault.send is not None or fault.delays]


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = "*"
    kind: FaultKind = "http_error"
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    phase: Literal["before", "after"] = "before"
    status: int = Field(default=503, ge=100, le=599)
    body: Literal["json", "html"] = "json"
    retry_after: str | None = None
    delay: float = Field(default=0.0, ge=0.0)
    max_count: int | None = Field(default=None, ge=0)
    family: Family | None = None

    @field_validator("retry_after")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and any(ch in value for ch in "\r\n\0"):
            raise ValueError("retry_after must be a single header line")
        return value


FaultRule.__doc__ = (
    "One injected misbehaviour, matched per request after authentication.\n\n"
    "``kind``:\n\n"
    + "".join(f"* ``{name}`` {fault.doc};\n" for name, fault in FAULTS.items())
    + f'\n``phase="after"`` commits the request\'s effect first and then misbehaves (for '
    f"{', '.join(_PHASED)}). ``max_count`` bounds how often the rule fires; "
    "``probability`` is drawn from the emulator's one seeded RNG."
)


def _applies(rule: FaultRule, family: str, action: str) -> bool:
    if rule.family is not None and rule.family != family:
        return False
    if rule.action not in ("*", action):
        return False
    actions = FAULTS[rule.kind].actions
    return actions is None or action in actions


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


async def misbehave(
    request: web.BaseRequest,
    rule: FaultRule,
    meta: Meta,
    shutdown: asyncio.Event,
    *,
    committed: tuple[int, bytes] | None = None,
) -> tuple[web.StreamResponse, int]:
    """Send the misbehaving answer of ``rule`` (a kind that sends); returns (response,
    audited HTTP status). ``committed`` is the real (status, JSON body) when the request's
    effect was committed first (phase ``after``); ``close``/``truncate`` then cut that body."""
    send = FAULTS[rule.kind].send
    if send is None:
        raise ValueError(f"the fault kind {rule.kind} does not send an answer")
    return await send(Scene(request, rule, meta, shutdown, committed))
