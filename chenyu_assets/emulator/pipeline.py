"""The path every API request takes, whatever its family.

1. authenticate (Bearer key, AK/SK signature, or a signed URL) — failures are answered
   before anything else happens and never count against limits;
2. pick an injected fault (one seeded RNG); ``phase="before"`` connection faults answer now,
   ``latency`` sleeps, ``list_lag`` / ``stuck`` are noted on the :class:`Call`;
3. the per-account rate limit of the action (429 ``FlowLimitExceeded`` at once; refusals do
   not consume the window);
4. the handler, which returns the ``Result``/``data`` dict (or an already-sent response);
5. ``phase="after"`` faults, then the family envelope, then one audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from chenyu_assets._core.logs import get_logger
from chenyu_assets.emulator.config import Account, FaultRule
from chenyu_assets.emulator.envelopes import (
    ApiError,
    Meta,
    dumps,
    error_body,
    ok_body,
    request_id_headers,
)
from chenyu_assets.emulator.faults import CONNECTION_KINDS, misbehave
from chenyu_assets.emulator.state import EmulatorState

__all__ = ["Call", "Sent", "json_response", "run"]

logger = get_logger("chenyu_assets.emulator")

#: Families whose actions share the account's Ark rate limits (Chenyu publishes none).
LIMITED_FAMILIES = frozenset({"ark", "gateway", "avatar"})


@dataclass(slots=True)
class Sent:
    """A handler's answer that is already a response (file download, streamed 413)."""

    response: web.StreamResponse
    status: int
    code: str | None = None


@dataclass(slots=True)
class Call:
    """One authenticated request on its way through a handler."""

    request: web.Request
    state: EmulatorState
    meta: Meta
    account: Account
    t: float
    list_lag: float = 0.0
    stuck: bool = False

    def refuse_flow(self, message: str) -> ApiError:
        """Undo this request's rate-limit slot and build a 429 for the in-flight cap."""
        self.state.limiter.refund(self.account.name, self.meta.action, self.t)
        self.state.audit.rejected_by_limit(self.meta.action)
        return ApiError("FlowLimitExceeded", message)


Authenticate = Callable[[], Awaitable[Account]]
Handler = Callable[[Call], Awaitable["dict[str, Any] | Sent"]]


def json_response(meta: Meta, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    """A JSON answer with the family's extra headers."""
    out = {"Content-Type": "application/json; charset=utf-8", **request_id_headers(meta), **headers}
    return web.Response(status=status, body=body, headers=out)


async def _sleep(state: EmulatorState, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.shutdown.wait(), timeout=seconds)


async def run(
    request: web.Request,
    state: EmulatorState,
    meta: Meta,
    authenticate: Authenticate,
    handler: Handler,
) -> web.StreamResponse:
    """Run one request through authentication, faults, limits and its handler."""
    t = state.clock.elapsed()
    account: Account | None = None
    rule: FaultRule | None = None

    def record(status: int, code: str | None) -> None:
        state.audit.record(
            t=t,
            family=meta.family,
            action=meta.action,
            account=account.name if account else None,
            status=status,
            code=code,
        )

    try:
        account = await authenticate()
        rule = state.faults.pick(meta.family, meta.action)
        call = Call(request=request, state=state, meta=meta, account=account, t=t)
        if rule is not None:
            if rule.kind == "list_lag":
                call.list_lag = rule.delay
            elif rule.kind == "stuck":
                call.stuck = True
            elif rule.kind == "latency" and rule.phase == "before":
                await _sleep(state, rule.delay)
            elif rule.kind in CONNECTION_KINDS and rule.phase == "before":
                response, status = await misbehave(request, rule, meta, state.shutdown)
                record(status, f"fault:{rule.kind}")
                return response
        t = call.t = state.clock.elapsed()
        limited = state.config.enforce_limits and meta.family in LIMITED_FAMILIES
        if limited and not state.limiter.try_acquire(account.name, meta.action, t):
            state.audit.rejected_by_limit(meta.action)
            raise ApiError("FlowLimitExceeded", f"{meta.action} is over the account's rate limit")
        result = await handler(call)
        if isinstance(result, Sent):
            after = rule is not None and rule.phase == "after" and rule.kind in CONNECTION_KINDS
            if rule is not None and after and not result.response.prepared:
                response, fault_status = await misbehave(request, rule, meta, state.shutdown)
                record(fault_status, f"fault:{rule.kind}")
                return response
            record(result.status, result.code)
            return result.response
        status, code, headers = 200, None, {}
        body = dumps(ok_body(meta, result))
    except ApiError as err:
        status, code, headers = err.status, err.code, err.headers
        body = dumps(error_body(meta, err))
    except ConnectionError:
        # the client went away mid-request (e.g. during an upload): nobody to answer
        record(0, "client_disconnected")
        return web.Response(status=499)
    except Exception:
        logger.exception("%s %s failed unexpectedly", meta.family, meta.action)
        internal = ApiError("InternalError", "the emulator failed unexpectedly")
        status, code, headers = internal.status, internal.code, {}
        body = dumps(error_body(meta, internal))
    if rule is not None and rule.phase == "after":
        if rule.kind in CONNECTION_KINDS:
            response, fault_status = await misbehave(
                request, rule, meta, state.shutdown, committed=(status, body)
            )
            record(fault_status, f"fault:{rule.kind}")
            return response
        if rule.kind == "latency":
            await _sleep(state, rule.delay)
    record(status, code)
    return json_response(meta, status, body, headers)
