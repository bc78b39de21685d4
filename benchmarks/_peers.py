"""What a user writes without this library: the peers the ingest and polling benchmarks
measure against. Written from the vendor pages' own examples (``seeds/``), on the overseas
gateway's Bearer style so no request signing has to be hand-written:

* :func:`sequential` — the seeds' ``create_asset`` + ``poll_asset_active``: ``requests``,
  one item at a time, GetAsset at once and then every ``interval`` seconds;
* :func:`gather_naive` — ``asyncio.gather`` over every item, an ``aiolimiter`` at the
  published rate per action, per-asset GetAsset every ``interval`` seconds, and "sleep a
  second and try again" on a 429;
* :func:`poll_workers` — ``concurrency`` workers (the 30-Processing cap, so no 429s get in
  the way), each creating an asset and polling it with GetAsset every ``interval`` seconds:
  the polling cost and detection latency of the per-asset pattern alone.

Every loop is bounded (attempts and a deadline). Times are real seconds: pass the service's
scaled intervals.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import requests
from aiolimiter import AsyncLimiter

MAX_ATTEMPTS = 10_000


class PeerError(RuntimeError):
    pass


@dataclass(slots=True)
class PeerStats:
    creates: int = 0
    status_calls: int = 0
    http_429: int = 0
    active: int = 0
    failed: int = 0
    timed_out: int = 0
    #: asset id -> time.monotonic() when the client saw it terminal
    seen_done: dict[str, float] = field(default_factory=dict)


def _headers(api_key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}


# -- the seeds' pattern: synchronous requests, one item at a time -----------------------


def sequential(
    base_url: str,
    api_key: str,
    items: list[tuple[str, str]],
    *,
    group_id: str,
    interval: float,
    timeout: float,
) -> PeerStats:
    """Create each (name, url) and poll it until terminal before the next one."""
    stats = PeerStats()
    headers = _headers(api_key)

    def post(action: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(f"{base_url}/{action}", headers=headers, json=body, timeout=30)
        if resp.status_code == 429:
            stats.http_429 += 1
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        if data.get("base_resp", {}).get("status_code") != 0:
            raise PeerError(f"{action} failed: {data}")
        return data

    for name, url in items:
        data = post(
            "CreateAsset", {"GroupId": group_id, "Name": name, "URL": url, "AssetType": "Image"}
        )
        stats.creates += 1
        asset_id = data["Id"]
        deadline = time.monotonic() + timeout
        while True:
            data = post("GetAsset", {"Id": asset_id})
            stats.status_calls += 1
            status = data.get("Status", "")
            if status in ("Active", "Failed"):
                stats.seen_done[asset_id] = time.monotonic()
                stats.active += status == "Active"
                stats.failed += status == "Failed"
                break
            if time.monotonic() >= deadline:
                stats.timed_out += 1
                break
            time.sleep(interval)
    return stats


# -- asyncio, aiohttp and aiolimiter -------------------------------------------------------


class _Gateway:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, stats: PeerStats) -> None:
        self.session = session
        self.base_url = base_url
        self.stats = stats

    async def post(self, action: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The answer's JSON, or None for a 429 (the caller retries)."""
        async with self.session.post(f"{self.base_url}/{action}", json=body) as resp:
            if resp.status == 429:
                self.stats.http_429 += 1
                await resp.read()
                return None
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 200 or data.get("base_resp", {}).get("status_code") != 0:
                raise PeerError(f"{action}: HTTP {resp.status} {data}")
            return data


async def _create(
    gw: _Gateway,
    limiter: AsyncLimiter,
    body: dict[str, Any],
    retry_sleep: float,
    deadline: float,
) -> str:
    for _ in range(MAX_ATTEMPTS):
        if time.monotonic() >= deadline:
            break
        async with limiter:
            data = await gw.post("CreateAsset", body)
        if data is not None:
            gw.stats.creates += 1
            return str(data["Id"])
        await asyncio.sleep(retry_sleep)  # 429: wait a second and try again
    raise PeerError("CreateAsset: still 429 at the deadline")


async def _poll(
    gw: _Gateway,
    limiter: AsyncLimiter,
    asset_id: str,
    *,
    interval: float,
    retry_sleep: float,
    deadline: float,
) -> None:
    stats = gw.stats
    while time.monotonic() < deadline:
        async with limiter:
            data = await gw.post("GetAsset", {"Id": asset_id})
        stats.status_calls += 1
        if data is None:
            await asyncio.sleep(retry_sleep)
            continue
        status = data.get("Status", "")
        if status in ("Active", "Failed"):
            stats.seen_done[asset_id] = time.monotonic()
            stats.active += status == "Active"
            stats.failed += status == "Failed"
            return
        await asyncio.sleep(interval)
    stats.timed_out += 1


def _session(api_key: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers=_headers(api_key),
        timeout=aiohttp.ClientTimeout(total=60),
        connector=aiohttp.TCPConnector(limit=100),
    )


async def gather_naive(
    base_url: str,
    api_key: str,
    items: list[tuple[str, str]],
    *,
    group_id: str,
    interval: float,
    create_rate: float,
    get_rate: float,
    retry_sleep: float,
    timeout: float,
) -> PeerStats:
    """Every item at once; the aiolimiters hold the request rates, nothing holds the
    30-Processing cap, so creates beyond it come back 429 and are retried."""
    stats = PeerStats()
    create_limit = AsyncLimiter(create_rate, 1.0)
    get_limit = AsyncLimiter(get_rate, 1.0)
    deadline = time.monotonic() + timeout
    async with _session(api_key) as session:
        gw = _Gateway(session, base_url, stats)

        async def one(name: str, url: str) -> None:
            body = {"GroupId": group_id, "Name": name, "URL": url, "AssetType": "Image"}
            asset_id = await _create(gw, create_limit, body, retry_sleep, deadline)
            await _poll(
                gw,
                get_limit,
                asset_id,
                interval=interval,
                retry_sleep=retry_sleep,
                deadline=deadline,
            )

        await asyncio.gather(*(one(name, url) for name, url in items))
    return stats


async def poll_workers(
    base_url: str,
    api_key: str,
    items: list[tuple[str, str]],
    *,
    group_id: str,
    interval: float,
    concurrency: int,
    create_rate: float,
    get_rate: float,
    retry_sleep: float,
    timeout: float,
) -> PeerStats:
    """``concurrency`` workers, each: create one asset, poll it to the end, take the next."""
    stats = PeerStats()
    create_limit = AsyncLimiter(create_rate, 1.0)
    get_limit = AsyncLimiter(get_rate, 1.0)
    deadline = time.monotonic() + timeout
    queue = list(reversed(items))
    async with _session(api_key) as session:
        gw = _Gateway(session, base_url, stats)

        async def worker() -> None:
            while queue:
                name, url = queue.pop()
                body = {"GroupId": group_id, "Name": name, "URL": url, "AssetType": "Image"}
                asset_id = await _create(gw, create_limit, body, retry_sleep, deadline)
                await _poll(
                    gw,
                    get_limit,
                    asset_id,
                    interval=interval,
                    retry_sleep=retry_sleep,
                    deadline=deadline,
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats
