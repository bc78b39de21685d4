"""Raw-HTTP helpers for the emulator tests (no SDK client: requests are built by hand).

``ark(...)`` signs with ``chenyu_assets._core.signing.sign_request`` exactly as a client
would; ``bearer(...)`` builds the Bearer header of the other families.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from vclock import emulator_clock
from yarl import URL

from chenyu_assets._core.signing import Credentials, sign_request
from chenyu_assets.emulator import Account, Emulator, EmulatorConfig

GROUP_ID = re.compile(r"group-\d{14}-[a-z0-9]{5}")
ASSET_ID = re.compile(r"asset-\d{14}-[a-z0-9]{5}")
CHENYU_ID = re.compile(r"asset_[0-9a-f]{32}")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
MODEL = "doubao-seedance-2-0-260128"

OTHER = Account(
    name="other",
    access_key="AKLTOTHERACCOUNTKEY0000000000000000",
    secret_key="OTHERsecretKEY000000000000000000000000000==",
    api_key="cy_ffffffffffffffffffffffffffffffff",
)

#: Fast defaults for tests: quick processing, no jitter.
FAST: dict[str, Any] = {"processing_delay": 0.05, "processing_jitter": 0.0}


def config(**overrides: Any) -> EmulatorConfig:
    """A config with two accounts (demo and :data:`OTHER`) and fast processing."""
    return EmulatorConfig(**{"accounts": [Account(), OTHER], **FAST, **overrides})


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A fresh emulator with two accounts and fast processing."""
    async with Emulator(config()) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session."""
    async with aiohttp.ClientSession() as s:
        yield s


def bearer(account: Account) -> dict[str, str]:
    """``Authorization: Bearer <api key>``."""
    return {"Authorization": f"Bearer {account.api_key}"}


async def ark(
    session: aiohttp.ClientSession,
    emu: Emulator,
    action: str,
    body: dict[str, Any] | None = None,
    *,
    account: Account | None = None,
    region: str = "cn-beijing",
    version: str = "2024-01-01",
    now: datetime | None = None,
    raw_body: bytes | None = None,
    sign: bool = True,
    tamper: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """One signed official-style Ark call: ``(HTTP status, JSON body)``."""
    account = account or emu.account
    data = raw_body if raw_body is not None else json.dumps(body or {}).encode()
    url = URL(emu.url).with_query({"Action": action, "Version": version})
    headers = {"Content-Type": "application/json", "Host": url.raw_authority}
    if sign:
        headers.update(
            sign_request(
                method="POST",
                path="/",
                query=list(url.query.items()),
                headers=headers,
                body=data,
                credentials=Credentials(account.access_key, account.secret_key),
                region=region,
                now=now,
            )
        )
    if tamper == "body":
        data = data + b" "
    elif tamper == "signature":
        auth = headers["Authorization"]
        flipped = "0" if auth[-1] != "0" else "1"
        headers["Authorization"] = auth[:-1] + flipped
    async with session.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def ark_get(
    session: aiohttp.ClientSession,
    emu: Emulator,
    query: dict[str, str],
    *,
    account: Account | None = None,
) -> tuple[int, dict[str, Any]]:
    """A signed ``GET /?Action=...`` with flattened query parameters."""
    account = account or emu.account
    url = URL(emu.url).with_query(query)
    headers = {"Host": url.raw_authority}
    headers.update(
        sign_request(
            method="GET",
            path="/",
            query=list(url.query.items()),
            headers=headers,
            body=b"",
            credentials=Credentials(account.access_key, account.secret_key),
            region="cn-beijing",
        )
    )
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


def result(reply: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    """The ``Result`` of a successful Ark reply (fails the test otherwise)."""
    status, body = reply
    assert status == 200, body
    value: dict[str, Any] = body["Result"]
    return value


def error_code(reply: tuple[int, dict[str, Any]]) -> tuple[int, str]:
    """``(HTTP status, ResponseMetadata.Error.Code)`` of an Ark error reply."""
    status, body = reply
    assert "Result" not in body, body
    return status, body["ResponseMetadata"]["Error"]["Code"]


async def new_group(
    session: aiohttp.ClientSession, emu: Emulator, name: str = "g", **extra: Any
) -> str:
    """Create a group and return its id."""
    group_id: str = result(await ark(session, emu, "CreateAssetGroup", {"Name": name, **extra}))[
        "Id"
    ]
    return group_id


async def new_asset(
    session: aiohttp.ClientSession,
    emu: Emulator,
    group_id: str,
    url: str | None = None,
    *,
    asset_type: str = "Image",
    name: str = "a",
    **extra: Any,
) -> str:
    """Create an asset and return its id."""
    body = {
        "GroupId": group_id,
        "URL": url or emu.media_url("png", 800, 1200),
        "AssetType": asset_type,
        "Name": name,
        **extra,
    }
    asset_id: str = result(await ark(session, emu, "CreateAsset", body))["Id"]
    return asset_id


async def wait_status(
    session: aiohttp.ClientSession,
    emu: Emulator,
    asset_id: str,
    *,
    timeout: float = 30.0,
    **extra: Any,
) -> dict[str, Any]:
    """Poll GetAsset until the asset leaves Processing (``timeout`` is a hang guard; on
    virtual time it is virtual seconds)."""
    import anyio

    with anyio.fail_after(timeout):
        while True:
            asset = result(await ark(session, emu, "GetAsset", {"Id": asset_id, **extra}))
            if asset["Status"] != "Processing":
                return asset
            await anyio.sleep(0.02)


def virtual_emulator(cfg: EmulatorConfig) -> tuple[Emulator, VirtualTime]:
    """An emulator on the running virtual loop's clock (build it inside a ``@virtual`` test),
    and a :class:`VirtualTime` that converts its audit seconds to loop time."""
    clock = emulator_clock()
    return Emulator(cfg, clock=clock), VirtualTime(clock)


class VirtualTime:
    """Loop time ⇄ emulator audit seconds (``RequestRecord.t``) for an emulator built by
    :func:`virtual_emulator`; both run on the same virtual clock."""

    def __init__(self, clock: Any) -> None:
        loop = asyncio.get_running_loop()
        self.origin = loop.time() - clock.elapsed()  # loop time of audit t == 0
        self._loop = loop

    def now(self) -> float:
        """The loop's time now."""
        return self._loop.time()

    def audit_now(self) -> float:
        """Now, in audit seconds."""
        return self._loop.time() - self.origin

    def loop_time(self, audit_t: float) -> float:
        """The loop time of an audit timestamp."""
        return audit_t + self.origin
