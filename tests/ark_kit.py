"""Fixtures for the Ark-family client tests: one open client per transport, and a stub.

``client`` is parametrized over :data:`TRANSPORTS` (official Volcengine, official BytePlus,
gateway path style, private-avatar proxy), each talking to a fresh emulator. ``stub`` is a
tiny aiohttp server on 127.0.0.1 answering whatever the test sets, for answers the
emulator never gives (an ``Error`` inside HTTP 200, a body without ``ResponseMetadata``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from emulator_kit import config

from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets.ark import ArkClient, ArkFamilyClient
from chenyu_assets.avatar import PrivateAvatarClient
from chenyu_assets.emulator import Emulator
from chenyu_assets.limits import ACTION_RATES

__all__ = [
    "FAST",
    "NO_RETRY",
    "SCALE",
    "TRANSPORTS",
    "Stub",
    "client",
    "emu",
    "flat",
    "make_client",
    "rates",
    "stub",
    "transport",
    "volc",
]

TRANSPORTS = ("volcengine", "byteplus", "gateway", "avatar")
#: The emulator runs this much faster (rates × SCALE, processing ÷ SCALE); clients pace to match.
SCALE = 10
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_elapsed=10, rate_limit_wait=0.05)
NO_RETRY = RetryPolicy(max_attempts=1, rate_limit_wait=0.01)


def rates(factor: float = SCALE) -> dict[str, float]:
    """The published per-action rates times ``factor``."""
    return {action: rate * factor for action, rate in ACTION_RATES.items()}


def make_client(transport: str, emu: Emulator, **kw: Any) -> ArkFamilyClient:
    """A client of ``emu`` speaking ``transport`` (not yet opened)."""
    account = emu.account
    opts: dict[str, Any] = {"rate_limits": rates(), "retry": FAST}
    if transport in ("volcengine", "byteplus"):
        opts["region"] = "cn-beijing" if transport == "volcengine" else "ap-southeast-1"
        opts.update(access_key=account.access_key, secret_key=account.secret_key)
        return ArkClient(base_url=emu.url, **{**opts, **kw})
    if transport == "gateway":
        opts.update(api_key=account.api_key, style="gateway")
        return ArkClient(base_url=emu.gateway_url, **{**opts, **kw})
    if transport == "avatar":
        opts["api_key"] = account.api_key
        return PrivateAvatarClient(base_url=emu.avatar_url, **{**opts, **kw})
    raise ValueError(transport)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A fresh emulator (two accounts) running ``SCALE`` times faster than real time."""
    async with Emulator(config(time_scale=SCALE)) as running:
        yield running


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def client(transport: str, emu: Emulator) -> AsyncIterator[ArkFamilyClient]:
    """An open client of ``emu`` for each transport."""
    async with make_client(transport, emu) as opened:
        yield opened


# -- the stub server ---------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Stub:
    """What the stub answers (settable per test) and what it received."""

    url: str = ""
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def official(self, **kw: Any) -> ArkClient:
        opts: dict[str, Any] = {"retry": NO_RETRY, **kw}
        return ArkClient(
            access_key="AKLTSTUBACCESSKEY", secret_key="STUBsecret0000", base_url=self.url, **opts
        )

    def gateway(self, **kw: Any) -> ArkClient:
        opts: dict[str, Any] = {"retry": NO_RETRY, **kw}
        return ArkClient(api_key="stub-key", style="gateway", base_url=self.url, **opts)


def volc(result: Any = None, *, error: str | None = None, request_id: str = "req-stub-1") -> bytes:
    """A Volcengine envelope: ``Result`` or ``ResponseMetadata.Error``."""
    meta: dict[str, Any] = {
        "RequestId": request_id,
        "Action": "X",
        "Version": "2024-01-01",
        "Service": "ark",
        "Region": "cn-beijing",
    }
    if error is not None:
        meta["Error"] = {"Code": error, "Message": f"stub says {error}"}
        return json.dumps({"ResponseMetadata": meta}).encode()
    return json.dumps({"ResponseMetadata": meta, "Result": result or {}}).encode()


def flat(fields: dict[str, Any] | None = None, *, status_code: int = 0, msg: str = "") -> bytes:
    """The gateway's flat envelope."""
    base = {"status_code": status_code, "status_msg": msg or "success"}
    return json.dumps({**(fields or {}), "base_resp": base}).encode()


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    """A one-route aiohttp server on 127.0.0.1 that records requests and answers ``Stub``'s."""
    state = Stub()

    async def handle(request: web.Request) -> web.Response:
        state.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                query=list(request.query.items()),
                headers=dict(request.headers),
                body=await request.read(),
            )
        )
        headers = {"Content-Type": state.content_type, **state.headers}
        return web.Response(status=state.status, body=state.body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()
