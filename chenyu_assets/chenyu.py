"""``ChenyuClient``: Chenyu open API v2 workflow assets (api-reference.md §1).

``upload`` streams a file from disk as the multipart ``file`` part: ``Content-Length`` is
known up front, and every attempt re-reads the file from a (path, size, mtime) snapshot,
so a retried upload never sends a half-used body and a file edited mid-upload raises
``UploadError``. Each upload in flight holds one chunk (read into a fresh buffer on the
loop's thread, written in 64 KiB slices, let go before the next read), so the client's
memory grows by at most about ``max_concurrent_uploads × (chunk_size + 0.25 MiB)`` plus
about 2 MB; measured: 8 concurrent 100 MiB uploads with 1 MiB chunks grow RSS by about
12 MB (plain aiohttp with an aiofiles generator: 28–30 MB).

An upload is retried after a reset or a 5xx even though it is a create: the worst case is
an orphan *temporary* asset that expires with its TTL, never a duplicate library asset.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Self
from urllib.parse import quote

import aiofiles

from chenyu_assets import media
from chenyu_assets._core.engine import ClientBase, Prepared, check_base_url
from chenyu_assets._core.logs import get_logger, register_secret
from chenyu_assets._core.multipart import (
    DEFAULT_CHUNK_SIZE,
    MultipartFile,
    form_head,
    form_tail,
    snapshot,
)
from chenyu_assets._core.ratelimit import LimiterRegistry
from chenyu_assets._core.retry import RetryBudget, RetryPolicy
from chenyu_assets._core.signing import BearerAuth
from chenyu_assets._core.transport import Body, Response, Timeouts
from chenyu_assets._logctx import logged
from chenyu_assets.envelopes import parse_chenyu_envelope
from chenyu_assets.errors import (
    ConfigurationError,
    ResponseFormatError,
    UploadError,
)
from chenyu_assets.events import Hook
from chenyu_assets.models.chenyu import ChenyuAsset
from chenyu_assets.spec import CHENYU_MEDIA_TYPES as MEDIA_TYPES
from chenyu_assets.spec import CHENYU_PREFIX
from chenyu_assets.spec import CHENYU_PURPOSES as PURPOSES

__all__ = ["CHENYU_RATES", "DEFAULT_BASE_URL", "MEDIA_TYPES", "ChenyuClient"]

log = get_logger("chenyu_assets.chenyu")

DEFAULT_BASE_URL: Final = "https://www.chenyu.cn" + CHENYU_PREFIX
#: Chenyu publishes no rate limits; these client-side defaults mirror the Ark library's
#: (30/s writes, 100/s reads) so uploads never become the bottleneck of an ingest.
CHENYU_RATES: Final[Mapping[str, float]] = {"ChenyuUpload": 30.0, "ChenyuGet": 100.0}


class ChenyuClient(ClientBase):
    """Async client of the Chenyu v2 asset endpoints.

    Environment: ``CHENYU_API_KEY`` (required unless ``api_key=``), ``CHENYU_BASE_URL``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_concurrent_uploads: int = 4,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        rate_limits: Mapping[str, float] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        connection_limit: int = 100,
        ca_bundle: str | None = None,
        hooks: Sequence[Hook] = (),
        session: Any = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("missing API key: pass api_key= or set CHENYU_API_KEY")
        if max_concurrent_uploads < 1:
            raise ConfigurationError("max_concurrent_uploads must be >= 1")
        base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        check_base_url(base)
        self.base_url = base
        self._bearer = BearerAuth(api_key)
        register_secret(api_key)
        self.max_concurrent_uploads = max_concurrent_uploads
        self.chunk_size = chunk_size
        self._upload_slots: asyncio.Semaphore | None = None
        super().__init__(
            limiters=LimiterRegistry(CHENYU_RATES, overrides=rate_limits, headroom=1.0),
            session=session,
            timeouts=timeouts,
            retry=retry,
            retry_budget=retry_budget,
            connection_limit=connection_limit,
            ca_bundle=ca_bundle,
            hooks=hooks,
        )

    def __repr__(self) -> str:
        return f"<ChenyuClient base_url={self.base_url}>"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        kwargs: dict[str, Any] = {
            "api_key": os.environ.get("CHENYU_API_KEY"),
            "base_url": os.environ.get("CHENYU_BASE_URL"),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def _slots(self) -> asyncio.Semaphore:
        if self._upload_slots is None:
            self._upload_slots = asyncio.Semaphore(self.max_concurrent_uploads)
        return self._upload_slots

    async def upload(
        self,
        path: str | os.PathLike[str],
        *,
        media_type: str | None = None,
        ttl_hours: int = 48,
        purpose: str = "temp_input",
        filename: str | None = None,
        on_progress: Callable[[int], None] | None = None,
        deadline: float | None = None,
    ) -> ChenyuAsset:
        """Upload a file (≤ 100 MB), streamed from disk. ``on_progress(delta_bytes)`` is
        called per chunk and with a negative delta when an attempt restarts."""
        _check_options(media_type, ttl_hours, purpose)
        snap = snapshot(path)
        if snap.size == 0:
            raise UploadError(f"{snap.path}: file is empty", reason="empty", path=str(snap.path))
        if snap.size > media.UPLOAD_MAX_BYTES:
            raise UploadError(
                f"{snap.path}: {snap.size} bytes is over the {media.UPLOAD_MAX_BYTES} byte "
                "upload limit",
                reason="too_large",
                path=str(snap.path),
            )
        try:
            async with aiofiles.open(snap.path, "rb") as f:
                head = await f.read(64)
        except OSError as exc:  # gone or unreadable since the snapshot
            raise UploadError(
                f"{snap.path}: cannot read: {exc.strerror}",
                reason="unreadable",
                path=str(snap.path),
            ) from None
        name = filename or snap.path.name
        body = MultipartFile(
            snap,
            filename=name,
            content_type=_mime_for(head, name),
            fields=_fields(media_type or media.media_type_for(head, name), purpose, ttl_hours),
            chunk_size=self.chunk_size,
            on_progress=on_progress,
        )

        return await self._post_upload(body.headers(), body.stream, deadline)

    async def upload_bytes(
        self,
        data: bytes,
        *,
        filename: str,
        media_type: str | None = None,
        ttl_hours: int = 48,
        purpose: str = "temp_input",
        deadline: float | None = None,
    ) -> ChenyuAsset:
        """Upload in-memory ``data`` (≤ 100 MB) as ``filename``."""
        _check_options(media_type, ttl_hours, purpose)
        if not data:
            raise UploadError("no data to upload", reason="empty")
        if len(data) > media.UPLOAD_MAX_BYTES:
            raise UploadError(f"{len(data)} bytes is over the upload limit", reason="too_large")
        fields = _fields(
            media_type or media.media_type_for(data[:64], filename), purpose, ttl_hours
        )
        boundary = secrets.token_hex(16)
        head = form_head(
            boundary,
            fields,
            field_name="file",
            filename=filename,
            content_type=_mime_for(data[:64], filename),
        )
        payload = head + data + form_tail(boundary)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return await self._post_upload(headers, lambda: payload, deadline)

    async def _post_upload(
        self, headers: Mapping[str, str], body: Callable[[], Body], deadline: float | None
    ) -> ChenyuAsset:
        """POST /assets with a fresh ``body()`` per attempt, within the upload slots."""

        async def prepare(attempt: int) -> Prepared:
            return Prepared(
                headers={"Authorization": self._bearer.header(), **headers}, body=body()
            )

        async with self._slots():
            call = self._engine.call(
                "ChenyuUpload",
                "POST",
                f"{self.base_url}/assets",
                prepare=prepare,
                parse=_parse_asset,
                idempotent=True,
                deadline=deadline,
                policy_bound=False,  # bounded by Timeouts.write while it progresses
            )
            return await logged(log, "ChenyuUpload", call, _request_id)

    async def get(self, asset_id: str, *, deadline: float | None = None) -> ChenyuAsset:
        """Status and addresses of an uploaded asset. Expired, foreign or rejected assets
        raise an ``APIError`` subclass (``NotFoundError`` for 404)."""
        if not asset_id or "/" in asset_id:
            raise ValueError(f"not an asset id: {asset_id!r}")

        async def prepare(attempt: int) -> Prepared:
            return Prepared(headers={"Authorization": self._bearer.header()})

        call = self._engine.call(
            "ChenyuGet",
            "GET",
            f"{self.base_url}/assets/{quote(asset_id, safe='')}",
            prepare=prepare,
            parse=_parse_asset,
            deadline=deadline,
        )
        return await logged(log, "ChenyuGet", call, _request_id)


def _request_id(asset: ChenyuAsset) -> str | None:
    return getattr(asset, "request_id", None)


def _check_options(media_type: str | None, ttl_hours: int, purpose: str) -> None:
    if media_type is not None and media_type not in MEDIA_TYPES:
        raise ValueError(f"media_type must be one of {', '.join(MEDIA_TYPES)}, not {media_type!r}")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be 'temp_input', not {purpose!r}")
    if isinstance(ttl_hours, bool) or not isinstance(ttl_hours, int) or ttl_hours < 1:
        raise ValueError(f"ttl_hours must be a positive integer, not {ttl_hours!r}")


def _fields(media_type: str, purpose: str, ttl_hours: int) -> list[tuple[str, str]]:
    return [("media_type", media_type), ("purpose", purpose), ("ttl_hours", str(ttl_hours))]


def _mime_for(head: bytes, filename: str) -> str:
    sniffed = media.sniff(head)
    if sniffed is not None:
        return sniffed[2]
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _parse_asset(resp: Response) -> ChenyuAsset:
    data, request_id = parse_chenyu_envelope(resp)
    problem = None
    try:
        asset = ChenyuAsset.model_validate(data)
    except ValueError as exc:
        problem = f"malformed asset: {exc}"
    if problem is not None:  # raised outside the handler: pydantic's error holds the values
        raise ResponseFormatError(
            problem,
            status=resp.status,
            request_id=request_id,
            method=resp.method,
            path=resp.path,
            retryable=False,
        )
    asset.request_id = request_id
    return asset
