"""Staging: how a local file becomes a URL that CreateAsset can fetch.

Two ways (``IngestOptions.stage``): ``None`` — upload it to Chenyu (a signed URL from the
Chenyu upload, see :class:`~.upload.Uploads`) — or an :class:`S3Stage`: put it in the
user's own S3-compatible bucket and hand CreateAsset a SigV4 **presigned GET URL** (never a
public-read ACL).

The S3 way is content-addressed: the object key is ``<prefix>/<sha256 of the bytes>``, and
a HEAD decides whether to upload, so a rerun, a second journal or another machine uploads
nothing twice. A file larger than ``part_size`` goes up as a multipart upload read one part
at a time: memory ≈ ``upload_concurrency × part_size`` (4 × 8 MiB = 32 MiB by default).

The journal keeps ``s3://bucket/key``, never the presigned URL (which carries a signature
and, with temporary credentials, the session token). The URL is presigned in memory after
staging and presigned again right before CreateAsset when less than
``IngestOptions.url_min_validity`` of its lifetime is left (an item that waited long for a
processing slot). ``cleanup=True`` deletes, when the run ends, the objects of the items that
became Active in it (unless an unfinished item of the run shares the bytes); the trade-off:
ingesting the same file again uploads it again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import anyio

from chenyu_assets.batch.journal_thread import JournalFacade
from chenyu_assets.batch.types import IngestOptions, Outcome, StageStats
from chenyu_assets.batch.work import EventSink, Fatal, Work, tried
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    TransportError,
    UploadError,
)
from chenyu_assets.s3 import S3Client, S3Stage

__all__ = ["S3Stage", "S3Staging"]

#: Staging tries of one item per run, and the pause (× the try number) between them; each
#: try is itself a bounded botocore retry loop (``S3Stage.max_attempts``).
STAGE_TRIES = 3
STAGE_PAUSE = 1.0


class StageContext(Protocol):
    """What staging reports to and journals through (the run's upload stage)."""

    journal: JournalFacade
    sink: EventSink
    opt: IngestOptions


class S3Staging:
    """The S3 stage of one run (the pipeline calls :meth:`ensure`, :meth:`refresh`,
    :meth:`finished` and :meth:`cleanup`)."""

    def __init__(
        self, stage: S3Stage, client: S3Client, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.stage = stage
        self.client = client
        self.clock = clock
        self.stats = StageStats()  # also the run's IngestReport.staging
        self._digest: dict[str, bytes] = {}  # key of an unfinished staged item -> sha256
        self._users: dict[bytes, int] = {}  # sha256 -> unfinished items of the run using it
        self._active: set[bytes] = set()  # sha256 of items that became Active

    async def ensure(self, pipe: StageContext, work: Work) -> bool:
        """Stage ``work``'s file and give it a presigned URL; False when the item ended."""
        entry, item = work.entry, work.item
        assert item is not None
        assert item.path is not None
        sha = entry.content_hash
        if not sha or len(sha) != 64:  # pre-flight was off: hash it here
            try:
                sha = await anyio.to_thread.run_sync(_sha256, item.path)
            except OSError as exc:
                await pipe.sink.finish_entry(
                    entry,
                    Outcome.SKIPPED,
                    code="unreadable",
                    message=f"{item.path}: {exc.strerror or exc}",
                )
                return False
        bucket, key = self.stage.bucket, self.stage.key_for(sha)
        path = item.path

        async def put() -> bool:
            try:
                await self._put(path, bucket, key, sha)
            except OSError as exc:  # the file, not the bucket: the item's own fault
                reason = f"{path}: {exc.strerror or exc}"
                raise UploadError(reason, reason="unreadable", path=str(path)) from None
            except ConfigurationError as exc:  # no usable credentials, a bad S3 setting
                raise Fatal(f"S3 staging refused: {exc}") from None
            return True

        def fatal(exc: APIError | TransportError) -> str | None:
            if isinstance(exc, (AuthenticationError, PermissionDeniedError)):
                return f"S3 staging refused: {exc}"
            if isinstance(exc, NotFoundError):  # a HEAD 404 is "absent"; this is the bucket
                return f"S3 staging: bucket {bucket} not found: {exc}"
            return None

        tries, pause = STAGE_TRIES, STAGE_PAUSE
        if not await tried(pipe.sink, entry, "staging", put, tries=tries, pause=pause, fatal=fatal):
            return False
        await self._presign(work, bucket, key)
        raw = bytes.fromhex(sha)
        if self._digest.get(entry.key) != raw:
            self._digest[entry.key] = raw
            self._users[raw] = self._users.get(raw, 0) + 1
        await pipe.journal.mark_uploaded(entry.key, url=f"s3://{bucket}/{key}", expires_at=None)
        work.entry = await pipe.journal.get(entry.key)
        pipe.sink.emit("uploaded", entry.key, size=work.entry.size)
        return True

    async def _put(self, path: Path, bucket: str, key: str, sha: str) -> None:
        self.stats.heads += 1
        size = (await anyio.Path(path).stat()).st_size
        if await self.client.head(bucket, key) == size:
            self.stats.reused += 1
            return

        def part_done() -> None:
            self.stats.parts += 1

        await self.client.put_file(
            path,
            bucket,
            key,
            size=size,
            sha256=sha,
            part_size=self.stage.part_size,
            on_part=part_done,
        )
        self.stats.uploads += 1

    async def _presign(self, work: Work, bucket: str, key: str) -> None:
        ttl = int(self.stage.url_ttl)
        now = self.clock()
        work.url = await self.client.presign_get(bucket, key, ttl)
        work.url_expires = now + ttl
        self.stats.presigned += 1

    async def refresh(self, pipe: StageContext, work: Work) -> None:
        """Presign ``work``'s URL again when less than ``url_min_validity`` of it is left."""
        if work.url is None or work.url_expires is None:
            return
        if work.url_expires - self.clock() >= pipe.opt.url_min_validity:
            return
        parts = urlsplit(work.entry.upload_url or "")
        if parts.scheme != "s3":
            return
        await self._presign(work, parts.netloc, parts.path.lstrip("/"))
        self.stats.refreshed += 1
        pipe.sink.emit("url_refreshed", work.entry.key)

    def finished(self, key: str, active: bool) -> None:
        raw = self._digest.pop(key, None)
        if raw is None:
            return
        self._users[raw] -= 1
        if not self._users[raw]:
            del self._users[raw]
        if active and self.stage.cleanup:
            self._active.add(raw)

    async def cleanup(self, sink: EventSink) -> None:
        """Delete the objects of items that became Active (when ``cleanup``), except
        those an unfinished item of this run still needs."""
        for raw in sorted(self._active - self._users.keys()):
            key = self.stage.key_for(raw.hex())
            try:
                await self.client.delete(self.stage.bucket, key)
            except (APIError, TransportError) as exc:
                sink.emit("cleanup_failed", None, object=key, reason=str(exc))
                continue
            self.stats.deleted += 1
        self._active.clear()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
