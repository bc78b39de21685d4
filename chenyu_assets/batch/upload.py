"""The upload stage: a local file becomes a URL that CreateAsset can fetch.

:class:`Uploads` is the run's :class:`~.work.UrlProvider`: a file is uploaded to Chenyu
(a signed URL, journaled with its expiry and reused while it stays valid for
``url_min_validity``) or, with ``IngestOptions.stage``, staged in your own S3 bucket (see
:mod:`.staging`). A transient upload failure (the host unreachable or misconfigured, the
retry budget spent) is tried ``UPLOAD_TRIES`` times, then reported ``failed`` /
``upload_failed`` and left resumable: it is *retryable*, and a plain rerun sends it again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from anyio.abc import ObjectReceiveStream, ObjectSendStream

from chenyu_assets.batch.journal_thread import JournalFacade
from chenyu_assets.batch.staging import S3Staging
from chenyu_assets.batch.types import IngestOptions, Outcome
from chenyu_assets.batch.work import EventSink, Fatal, Work, tried
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import (
    APIError,
    AuthenticationError,
    PermissionDeniedError,
    TransportError,
)

__all__ = ["UPLOAD_PAUSE", "UPLOAD_TRIES", "Uploads"]

#: Uploads of one item per run (each a whole client call with its own retries), and the
#: pause before the next one (× the try number) while the client's retry budget refills.
UPLOAD_TRIES = 3
UPLOAD_PAUSE = 1.0


class Uploads:
    """URLs for local files, through Chenyu (``chenyu``) or an S3 stage (``staging``)."""

    def __init__(
        self,
        journal: JournalFacade,
        sink: EventSink,
        *,
        options: IngestOptions,
        chenyu: ChenyuClient | None,
        staging: S3Staging | None,
        pace: Callable[[Path], Awaitable[None]] | None = None,
    ) -> None:
        self.journal = journal
        self.sink = sink
        self.opt = options
        self.chenyu = chenyu
        self.staging = staging
        self.pace = pace  # awaited before a file is uploaded or staged (a worker's bandwidth)

    async def run(self, inbox: ObjectReceiveStream[Work], out: ObjectSendStream[Work]) -> None:
        """The upload stage (one of ``upload_concurrency`` tasks)."""
        async with inbox, out:
            async for work in inbox:
                if await self.ensure(work):
                    await out.send(work)

    async def refresh(self, work: Work) -> None:
        if self.staging is not None:
            await self.staging.refresh(self, work)

    async def ensure(self, work: Work) -> bool:
        item = work.item
        if item is None or item.url is not None:
            return True
        if self.staging is not None:
            if self.pace is not None and item.path is not None:
                await self.pace(item.path)
            return await self.staging.ensure(self, work)
        entry = work.entry
        fresh_until = time.time() + self.opt.url_min_validity
        if entry.upload_url and (entry.upload_expires_at or 0) > fresh_until:
            return True
        if self.chenyu is None:
            raise Fatal(
                "local files need a stage: a Chenyu client (chenyu=...) or an S3 bucket "
                "(IngestOptions(stage=S3Stage(...)), --stage s3://bucket/prefix)"
            )
        if item.path is None:  # pragma: no cover - URL items returned above
            raise Fatal(f"item {entry.key!r} has no path")
        if self.pace is not None:
            await self.pace(item.path)
        path, chenyu = item.path, self.chenyu
        up = await tried(
            self.sink,
            entry,
            "upload",
            lambda: chenyu.upload(path, ttl_hours=self.opt.upload_ttl_hours),
            tries=UPLOAD_TRIES,
            pause=UPLOAD_PAUSE,
            fatal=_refused,
        )
        if up is None:
            return False
        url = up.signed_url or up.url or up.content_url
        if not url:
            await self.sink.finish_entry(
                entry, Outcome.FAILED, code="upload_failed", message="upload answer has no URL"
            )
            return False
        expires = up.signed_url_expires()
        if expires is None and up.expires_at is not None:
            expires = int(up.expires_at.timestamp())
        await self.journal.mark_uploaded(entry.key, url=url, expires_at=expires)
        work.entry = await self.journal.get(entry.key)
        self.sink.emit("uploaded", entry.key, size=up.size_bytes)
        return True


def _refused(exc: APIError | TransportError) -> str | None:
    if isinstance(exc, (AuthenticationError, PermissionDeniedError)):
        return f"upload refused: {exc}"
    return None
