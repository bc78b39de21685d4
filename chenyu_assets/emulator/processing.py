"""Processing: every new asset goes ``Processing`` -> ``Active`` or ``Failed``, and how
CreateAsset gets the bytes behind its URL without becoming an open proxy.

Each asset gets one ``loop.call_later`` timer (no task sleeps per asset). The delay is
``processing_delay ± processing_jitter`` (uniform, clipped at 0, from an RNG seeded with
``seed``), divided by ``time_scale``. When it fires:

* ``validate_media=False``: the asset becomes Active at once (fast mode for benchmarks);
* otherwise a task (at most 8 at a time) fetches the URL (:class:`Fetcher`) and checks the
  bytes with :func:`chenyu_assets.media.check_bytes` for the asset type: Active, or Failed
  with ``Error.Code`` = ``vendor_code(reason)`` / ``InvalidParameter.DownloadFailed``.

Fetched content (other than generated samples) is kept content-addressed under
``blobs/ark/<sha256>`` so GetAsset's signed URL can serve it. Assets marked *stuck* by a
fault are never scheduled. :meth:`Processor.close` cancels every timer and task.

Fetching (:class:`Fetcher`):

* The emulator's own URLs resolve locally, without a socket: generated samples
  (``/_emulator/media/...``), Chenyu content URLs (signature and expiry checked, as a
  download would be) and Ark asset content URLs.
* Any other ``http(s)`` URL is fetched only when its ``host[:port]`` is in
  ``fetch_allowlist`` (a bare host allows only the scheme's default port). Hostnames that
  resolve to loopback, private, link-local or otherwise non-global addresses are refused
  unless the allow-list names that literal IP address (or ``localhost``). Redirects are
  followed by hand, at most 3, and only to allow-listed URLs; bodies are capped at the
  asset type's ``max_bytes``.
* Everything else (``file:``, ``data:``, other hosts) fails with
  :class:`FetchError`, which processing turns into ``InvalidParameter.DownloadFailed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import random
import secrets
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from chenyu_assets import media
from chenyu_assets._core.logs import get_logger
from chenyu_assets.emulator.config import AuditLog, Clock, EmulatorConfig
from chenyu_assets.emulator.content import SampleMedia, UrlSigner, parse_sample_path
from chenyu_assets.emulator.store import AssetRec, Store
from chenyu_assets.errors import MediaCheckError

__all__ = ["DOWNLOAD_FAILED", "FetchError", "Fetcher", "Processor"]

logger = get_logger("chenyu_assets.emulator")


_MAX_REDIRECTS = 3
_CHUNK = 64 * 1024


class FetchError(Exception):
    """The URL could not be fetched; the message is safe to show."""


def _authority(url: URL) -> str:
    host = url.host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port}" if url.port is not None else host


class _AllowList:
    def __init__(self, entries: Collection[str]) -> None:
        self.entries = {e.strip().lower() for e in entries if e.strip()}

    def allows(self, url: URL) -> bool:
        host = (url.host or "").lower()
        if not host:
            return False
        shown = f"[{host}]" if ":" in host else host
        if f"{shown}:{url.port}" in self.entries:
            return True
        return shown in self.entries and url.is_default_port()

    def names_literal(self, host: str) -> bool:
        """True when ``host`` is an IP literal or ``localhost`` named by the allow-list."""
        host = host.lower().strip("[]")
        if host != "localhost" and _literal_ip(host) is None:
            return False
        shown = f"[{host}]" if ":" in host else host
        return any(e == shown or e.startswith(shown + ":") for e in self.entries)


class _GuardedResolver(AbstractResolver):
    """Resolves names but refuses non-global addresses unless the allow-list names them."""

    def __init__(self, allow: _AllowList) -> None:
        self._inner = DefaultResolver()
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        explicit = self._allow.names_literal(host)
        for item in results:
            address = ipaddress.ip_address(item["host"])
            if not address.is_global and not explicit:
                raise FetchError(f"{host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(eq=False, kw_only=True)
class Fetcher:
    """Resolves CreateAsset URLs to bytes (see the module docstring for the rules)."""

    store: Store
    signer: UrlSigner
    samples: SampleMedia
    blob_dir: Path
    now: Callable[[], float]
    allowlist: Callable[[], Collection[str]]
    timeout: Callable[[], float]
    #: ``host:port`` names of this emulator (set once it is bound)
    local_authorities: set[str] = field(default_factory=set)

    async def fetch(self, url_text: str, max_bytes: int) -> bytes:
        """The body behind ``url_text`` (at most ``max_bytes``), or FetchError."""
        try:
            url = URL(url_text)
        except (ValueError, TypeError):
            raise FetchError("the URL is malformed") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise FetchError(f"the URL scheme {url.scheme or '(none)'!r} is not fetchable")
        if self.is_local(url):
            return await self._local(url, max_bytes)
        return await self._remote(url, max_bytes)

    def is_local(self, url: URL) -> bool:
        """True when ``url`` points at this emulator."""
        return _authority(url).lower() in self.local_authorities

    # -- local ------------------------------------------------------------------------------

    async def _local(self, url: URL, max_bytes: int) -> bytes:
        path = url.path
        spec = parse_sample_path(path, url.query)
        if spec is not None:
            try:
                data, _mime = await asyncio.to_thread(self.samples.get, spec)
            except ValueError as exc:  # over the emulator's sample pixel cap
                raise FetchError(f"the sample is refused: {exc}") from None
            return self._capped(data, max_bytes)
        file = self.local_file(url)
        if file is None:
            raise FetchError("the URL names nothing on this server (HTTP 404)")
        size = file.stat().st_size
        if size > max_bytes:
            raise FetchError(f"the content is larger than {max_bytes} bytes")
        return await asyncio.to_thread(file.read_bytes)

    def local_file(self, url: URL) -> Path | None:
        """The blob behind one of our signed content URLs, if the URL is valid now."""
        parts = url.path.split("/")
        query = url.query  # a multidict: a repeated parameter stays visible to the check
        now = self.now()
        if len(parts) == 4 and parts[1] == "assets" and parts[3] == "content":
            upload = self.store.get_upload(parts[2])
            if upload is None or self.signer.check("chenyu", parts[2], query, now):
                return None
            if upload.expires_time <= now:
                return None
            return self.blob_dir / upload.stored_filename
        if len(parts) == 5 and parts[1:3] == ["ark", "assets"] and parts[4] == "content":
            asset = self.store.asset_by_id(parts[3])
            if asset is None or asset.blob is None:
                return None
            if self.signer.check("ark", parts[3], query, now):
                return None
            return self.blob_dir / asset.blob
        return None

    @staticmethod
    def _capped(data: bytes, max_bytes: int) -> bytes:
        if len(data) > max_bytes:
            raise FetchError(f"the content is larger than {max_bytes} bytes")
        return data

    # -- remote -----------------------------------------------------------------------------

    async def _remote(self, url: URL, max_bytes: int) -> bytes:
        allow = _AllowList(self.allowlist())
        if not allow.allows(url):
            raise FetchError(f"the host {_authority(url)} is not reachable from the service")
        literal = _literal_ip(url.host or "")
        if (
            literal is not None
            and not literal.is_global
            and not allow.names_literal(url.host or "")
        ):
            raise FetchError("the URL points at a non-public address")
        connector = aiohttp.TCPConnector(resolver=_GuardedResolver(allow), limit=4)
        timeout = aiohttp.ClientTimeout(total=self.timeout())
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                for _hop in range(_MAX_REDIRECTS + 1):
                    async with session.get(url, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308):
                            location = resp.headers.get("Location")
                            if not location:
                                raise FetchError(f"HTTP {resp.status} without a Location")
                            url = url.join(URL(location))
                            if url.scheme not in ("http", "https") or not allow.allows(url):
                                raise FetchError("redirected to a host that is not allowed")
                            continue
                        if resp.status != 200:
                            raise FetchError(f"the server answered HTTP {resp.status}")
                        return await _read_capped(resp, max_bytes)
                raise FetchError("too many redirects")
        except FetchError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise FetchError(f"download failed: {type(exc).__name__}") from None


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    length = resp.content_length
    if length is not None and length > max_bytes:
        raise FetchError(f"the content is larger than {max_bytes} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            raise FetchError(f"the content is larger than {max_bytes} bytes")
    return bytes(buf)


DOWNLOAD_FAILED = "InvalidParameter.DownloadFailed"
_CONCURRENCY = 8


class Processor:
    """Schedules and runs the Processing -> Active/Failed transition of assets."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        config: Callable[[], EmulatorConfig],
        fetcher: Fetcher,
        audit: AuditLog,
        blob_dir: Path,
        seed: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._fetcher = fetcher
        self._audit = audit
        self._blob_dir = blob_dir
        self._rng = random.Random(f"processing-{seed}")
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._closed = False

    def start(self) -> None:
        """Reschedule assets left Processing by a previous run (call inside the loop)."""
        self._sem = asyncio.Semaphore(_CONCURRENCY)
        for asset in self._store.processing_assets():
            self.schedule(asset)

    def delay(self) -> float:
        """The next processing delay in real seconds."""
        cfg = self._config()
        seconds = cfg.processing_delay
        if cfg.processing_jitter:
            seconds += self._rng.uniform(-cfg.processing_jitter, cfg.processing_jitter)
        return max(0.0, seconds) / cfg.time_scale

    def schedule(self, asset: AssetRec, *, stuck: bool = False) -> None:
        """Start the timer of a new Processing asset (none when ``stuck``)."""
        self._audit.processing_level(asset.account, self._store.processing_count(asset.account))
        if stuck or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._handles[asset.id] = loop.call_later(self.delay(), self._due, asset.id)

    def forget(self, asset_id: str) -> None:
        """Stop processing an asset (it was deleted)."""
        handle = self._handles.pop(asset_id, None)
        if handle is not None:
            handle.cancel()

    def _due(self, asset_id: str) -> None:
        self._handles.pop(asset_id, None)
        asset = self._store.asset_by_id(asset_id)
        if asset is None or asset.status != "Processing" or self._closed:
            return
        if not self._config().validate_media:
            self._finish(asset, "Active")
            return
        task = asyncio.get_running_loop().create_task(self._validate(asset_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(
        self,
        asset: AssetRec,
        status: str,
        code: str | None = None,
        message: str | None = None,
        blob: str | None = None,
    ) -> None:
        self._store.finish_asset(
            asset,
            status=status,
            now=self._clock.now(),
            t=self._clock.elapsed(),
            error_code=code,
            error_message=message,
            blob=blob,
        )

    async def _validate(self, asset_id: str) -> None:
        if self._sem is None:  # start() not called: behave as if it had been
            self._sem = asyncio.Semaphore(_CONCURRENCY)
        async with self._sem:
            asset = self._store.asset_by_id(asset_id)
            if asset is None or asset.status != "Processing":
                return
            try:
                outcome = await self._check(asset)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("processing asset %s failed unexpectedly", asset_id)
                outcome = ("Failed", "InternalError", "the emulator could not process it", None)
            status, code, message, blob = outcome
            current = self._store.asset_by_id(asset_id)
            if current is asset and asset.status == "Processing":
                self._finish(asset, status, code, message, blob)

    async def _check(self, asset: AssetRec) -> tuple[str, str | None, str | None, str | None]:
        limits = media.LIMITS.get(asset.asset_type)
        if limits is None:
            return "Failed", "InvalidParameter.AssetType", "unknown asset type", None
        try:
            data = await self._fetcher.fetch(asset.source_url, limits.max_bytes)
        except FetchError as exc:
            return "Failed", DOWNLOAD_FAILED, str(exc), None
        try:
            await asyncio.to_thread(media.check_bytes, data, asset.asset_type)
        except MediaCheckError as exc:
            return "Failed", media.vendor_code(exc.reason), str(exc), None
        url = URL(asset.source_url)
        if parse_sample_path(url.path, url.query) is not None:
            return "Active", None, None, None  # regenerated on demand, nothing to keep
        blob = await asyncio.to_thread(self._retain, data)
        return "Active", None, None, blob

    def _retain(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        name = f"ark/{digest}"
        target = self._blob_dir / name
        if target.exists():
            return name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{digest}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        return name

    async def close(self) -> None:
        """Cancel every timer and task; no processing outlives the emulator."""
        self._closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return f"Processor(timers={len(self._handles)}, tasks={len(self._tasks)})"
