"""The API action a task is performing, for log lines written below the client (the
transport's ``POST / -> 200`` line names no action: the CLI's log handlers read this)."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["CURRENT_ACTION"]

#: set by the clients around each logical call (``CreateAsset``, ``ListAssets``...)
CURRENT_ACTION: ContextVar[str | None] = ContextVar("chenyu_assets_action", default=None)
