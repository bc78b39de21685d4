"""The API action a task is performing, for log lines written below the client (the
transport's ``POST / -> 200`` line names no action: the CLI's log handlers read this), and
the INFO line each logical call leaves (``-v``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

__all__ = ["CURRENT_ACTION", "logged"]

T = TypeVar("T")

#: set by the clients around each logical call (``CreateAsset``, ``ListAssets``...)
CURRENT_ACTION: ContextVar[str | None] = ContextVar("chenyu_assets_action", default=None)


async def logged(
    log: logging.Logger,
    action: str,
    call: Awaitable[T],
    request_id: Callable[[T], str | None],
) -> T:
    """Await ``call`` with ``action`` as the current action; one INFO line at its end."""
    token = CURRENT_ACTION.set(action)
    try:
        result = await call
    except Exception as exc:
        rid = getattr(exc, "request_id", None)
        extra = {"action": action, "request_id": rid}
        log.info("%s failed: %s", action, type(exc).__name__, extra=extra)
        raise
    finally:
        CURRENT_ACTION.reset(token)
    rid = request_id(result)
    log.info("%s ok (request id %s)", action, rid, extra={"action": action, "request_id": rid})
    return result
