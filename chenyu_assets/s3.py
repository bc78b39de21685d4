"""A small async S3 client for staging local files in the user's own bucket.

Why aiobotocore (the ``chenyu-assets[s3]`` extra): it is botocore — the code behind the AWS
CLI and boto3 — driven by aiohttp, which this package already depends on. So it reads
credentials the way every S3 user expects (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws``, SSO, instance roles),
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION``, it signs SigV4 and presigns
exactly as S3 and the S3-compatible stores (Volcengine TOS, MinIO, R2...) accept, and it has
multipart upload and bounded, standard-mode retries. The lighter async S3 libraries either
wrap aiobotocore anyway or re-implement the credential chain partially.

aiobotocore is imported only when an :class:`S3Client` is opened, so the package works
without the extra; a missing extra is a :class:`ConfigurationError` naming it.

Errors are mapped to :mod:`chenyu_assets.errors` types and raised ``from None``: botocore's
exceptions can carry request dicts with signed URLs and headers, so only safe facts (the
operation, HTTP status, S3 error code, bucket and key) survive. The secret key and the
session token are registered with the log redaction as soon as the credentials are known.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from chenyu_assets._core.logs import get_logger, redact_text, register_secret
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    UploadError,
)

__all__ = ["MAX_PRESIGN_SECONDS", "MIN_PART_SIZE", "S3Client", "S3Stage", "StagedObject"]

log = get_logger("chenyu_assets.s3")

#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: S3's smallest multipart part (all but the last); at most 10,000 parts per object.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000

_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidSecretKey",
    }
)
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests"})


@dataclass(frozen=True, slots=True)
class StagedObject:
    """Where a file now is: ``s3://bucket/key``; ``uploaded`` False when a HEAD found it."""

    bucket: str
    key: str
    size: int
    uploaded: bool
    parts: int

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class S3Client:
    """One aiobotocore S3 client (``async with``); every method maps errors (see module)."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        addressing_style: str = "auto",
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 10,
        deadline: float = 300.0,
    ) -> None:
        self._deadline = deadline
        self._endpoint = endpoint_url
        self._region = region
        self._profile = profile
        self._addressing = addressing_style
        self._attempts = max_attempts
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool = max_pool_connections
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def __aenter__(self) -> S3Client:
        try:
            from aiobotocore.session import AioSession
            from botocore.config import Config
        except ImportError:
            raise ConfigurationError(
                "S3 staging needs the 's3' extra: pip install 'chenyu-assets[s3]'"
            ) from None
        try:
            session = AioSession(profile=self._profile)
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": self._addressing},
                retries={"total_max_attempts": self._attempts, "mode": "standard"},
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                max_pool_connections=self._pool,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            creds = await session.get_credentials()
        except Exception as exc:  # botocore's profile/config errors name files, not secrets
            raise ConfigurationError(f"S3 configuration: {type(exc).__name__}") from None
        if creds is None:
            raise ConfigurationError(
                "S3 staging found no AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or ~/.aws/credentials)"
            )
        frozen = await creds.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3", region_name=self._region, endpoint_url=self._endpoint, config=config
                )
            )
        except Exception as exc:
            await stack.aclose()
            raise ConfigurationError(f"S3 client: {type(exc).__name__}: {_safe(exc)}") from None
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def _c(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Client is not open (use 'async with')")
        return self._client

    async def _call(self, op: str, bucket: str, key: str, **params: Any) -> Any:
        """One S3 operation: botocore's bounded retries inside one overall deadline."""
        try:
            with anyio.fail_after(self._deadline):
                return await getattr(self._c, op)(Bucket=bucket, Key=key, **params)
        except TimeoutError:
            error: Exception = RequestTimeoutError(
                f"S3 {op} s3://{bucket}/{key}: no answer within {self._deadline:g} s"
            )
        except Exception as exc:
            error = map_error(exc, op, bucket, key)
        raise error  # outside the handler: no __context__ pointing at botocore's exception

    # -- operations ---------------------------------------------------------------------
    async def head(self, bucket: str, key: str) -> int | None:
        """The object's size, or None when it does not exist."""
        try:
            answer = await self._call("head_object", bucket, key)
        except NotFoundError:
            return None
        return int(answer.get("ContentLength", 0))

    async def delete(self, bucket: str, key: str) -> None:
        await self._call("delete_object", bucket, key)

    async def presign_get(self, bucket: str, key: str, expires_in: int) -> str:
        """A SigV4 presigned GET URL valid ``expires_in`` seconds (local; no request)."""
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise ConfigurationError("S3 presigned URL lifetime must be 1 s .. 7 days")
        try:
            url = await self._c.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
            )
            return str(url)
        except Exception as exc:
            error = map_error(exc, "presign", bucket, key)
        raise error

    async def put_file(
        self,
        path: Path,
        bucket: str,
        key: str,
        *,
        size: int,
        sha256: str,
        part_size: int,
        on_part: Callable[[], None] | None = None,
    ) -> int:
        """Upload ``path`` (``size`` bytes) to ``key``: one PUT when it fits in one part,
        else a multipart upload that reads one part at a time (memory: one part). The
        bytes are hashed as they are read; other bytes than ``sha256`` (the file changed
        since it was hashed) abort the upload with UploadError ``source_changed``.
        Returns the number of parts sent (1 for a single PUT)."""
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        part_size = max(part_size, MIN_PART_SIZE, -(-size // MAX_PARTS))
        digest = hashlib.sha256()
        async with await anyio.open_file(path, "rb") as f:
            if size <= part_size:
                body = await f.read()
                digest.update(body)
                _same(digest, sha256, path)
                await self._call("put_object", bucket, key, Body=body, ContentType=ctype)
                if on_part is not None:
                    on_part()
                return 1
            started = await self._call("create_multipart_upload", bucket, key, ContentType=ctype)
            upload_id = started["UploadId"]
            parts: list[dict[str, Any]] = []
            try:
                number = 1
                while chunk := await f.read(part_size):
                    digest.update(chunk)
                    answer = await self._call(
                        "upload_part",
                        bucket,
                        key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    del chunk
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    if on_part is not None:
                        on_part()
                    number += 1
                _same(digest, sha256, path)
                await self._call(
                    "complete_multipart_upload",
                    bucket,
                    key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    try:
                        await self._call("abort_multipart_upload", bucket, key, UploadId=upload_id)
                    except (APIError, TransportError):
                        log.warning("could not abort the multipart upload of %s", key)
                raise
            return len(parts)


def _same(digest: Any, sha256: str, path: Path) -> None:
    if digest.hexdigest() != sha256:
        raise UploadError(
            f"{path}: the file changed while it was staged", reason="source_changed", path=str(path)
        )


def _safe(exc: BaseException) -> str:
    return redact_text(str(exc))[:300]


def map_error(exc: BaseException, op: str, bucket: str, key: str) -> Exception:
    """A :mod:`chenyu_assets.errors` exception for a botocore/aiobotocore failure, holding
    only safe facts (raise it ``from None``)."""
    from botocore import exceptions as bx

    where = f"S3 {op} s3://{bucket}/{key}"
    if isinstance(exc, bx.ClientError):
        response = getattr(exc, "response", {}) or {}
        err = response.get("Error", {}) or {}
        meta = response.get("ResponseMetadata", {}) or {}
        status = meta.get("HTTPStatusCode")
        code = str(err.get("Code") or status or "")
        message = redact_text(str(err.get("Message") or code))[:300]
        kw: dict[str, Any] = {
            "status": status,
            "code": code,
            "request_id": meta.get("RequestId") or None,
            "method": op,
            "path": f"s3://{bucket}/{key}",
        }
        text = f"S3 {message}"
        if code in _AUTH_CODES or status == 401:
            return AuthenticationError(text, **kw)
        if code in _THROTTLE_CODES or status == 429:
            return RateLimitError(text, **kw)
        if status == 403:
            return PermissionDeniedError(text, **kw)
        if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NoSuchUpload", "404"):
            return NotFoundError(text, **kw)
        if status is not None and status >= 500:
            return ServerError(text, **kw)
        return APIError(text, **kw)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ConfigurationError(f"{where}: no usable AWS credentials")
    if isinstance(exc, bx.ConnectTimeoutError):
        return RequestTimeoutError(f"{where}: connect timed out", sent=False)
    if isinstance(exc, bx.ReadTimeoutError | TimeoutError):
        return RequestTimeoutError(f"{where}: read timed out")
    if isinstance(exc, bx.EndpointConnectionError):
        return ConnectError(f"{where}: could not connect to the endpoint")
    if isinstance(exc, bx.BotoCoreError | OSError):
        return TransportError(f"{where}: {type(exc).__name__}")
    if isinstance(exc, APIError | TransportError | ConfigurationError | UploadError):
        return exc
    return TransportError(f"{where}: {type(exc).__name__}")


def env_endpoint() -> str | None:
    """The endpoint the AWS tools would use for S3 (``AWS_ENDPOINT_URL_S3`` first)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def env_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


@dataclass(frozen=True, slots=True)
class S3Stage:
    """Stage local files in ``s3://bucket/prefix`` (see the module docstring).

    ``endpoint_url`` / ``region`` None: the AWS chain decides (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile). Credentials
    always come from the AWS chain (environment, ``profile`` / ``AWS_PROFILE``, ~/.aws, roles).
    ``url_ttl``: seconds a presigned URL lives (at most 7 days; it must cover the service's
    queue and processing time). ``addressing_style``: ``virtual`` for Volcengine TOS.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    url_ttl: float = 12 * 3600.0
    part_size: int = 8 * 1024 * 1024
    cleanup: bool = False
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: seconds one S3 operation (a HEAD, a PUT, one part, with botocore's retries) may take
    deadline: float = 300.0

    @classmethod
    def from_uri(cls, uri: str, **kw: Any) -> S3Stage:
        """``s3://bucket/prefix`` (the prefix may be empty)."""
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError("--stage must look like s3://bucket/prefix")
        return cls(bucket=parts.netloc, prefix=parts.path.strip("/"), **kw)

    def __post_init__(self) -> None:
        if not 1 <= self.url_ttl <= MAX_PRESIGN_SECONDS:
            raise ConfigurationError("S3Stage.url_ttl must be 1 s .. 7 days (SigV4's maximum)")
        if self.part_size < MIN_PART_SIZE:
            raise ConfigurationError("S3Stage.part_size must be at least 5 MiB")
        if self.addressing_style not in ("auto", "virtual", "path"):
            raise ConfigurationError("S3Stage.addressing_style must be auto, virtual or path")
        if self.deadline <= 0:
            raise ConfigurationError("S3Stage.deadline must be positive")
        if self.max_attempts < 1:
            raise ConfigurationError("S3Stage.max_attempts must be at least 1")

    def key_for(self, sha256: str) -> str:
        return f"{self.prefix}/{sha256}" if self.prefix else sha256

    def client(self, *, pool: int = 10) -> S3Client:
        return S3Client(
            endpoint_url=self.endpoint_url,
            region=self.region,
            profile=self.profile,
            addressing_style=self.addressing_style,
            max_attempts=self.max_attempts,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=pool,
            deadline=self.deadline,
        )
