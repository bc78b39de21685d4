"""Chenyu open API v2 workflow assets: upload, get, and signed content downloads.

* ``POST /api/open/v2/assets`` — multipart, streamed to ``blobs/<random>.bin`` in chunks
  (never buffered whole). The file is capped at ``media.UPLOAD_MAX_BYTES`` while streaming:
  the moment the cap is passed (or at once, when ``Content-Length`` already says so) the
  answer is 413 and the connection is closed after a short bounded drain (≤ 1 MiB, ≤ 0.5 s)
  that lets the client read the answer. The client's filename is metadata only. A form
  with more than ``max_multipart_parts`` parts is 400, non-file fields over
  ``max_form_field_bytes`` together are 413: each is answered at the part that crosses the
  cap and the connection is closed the same way.
* ``GET /api/open/v2/assets/{asset_id}`` — the same fields; unknown, foreign and expired ids
  are 404 (expired: after ``ttl_hours`` of emulated time).
* ``GET /assets/{asset_id}/content`` — needs ``expires`` + ``signature`` (or the owner's
  Bearer key); a bad or expired signature is 403, an expired asset 410.

Error ``code`` values are the HTTP status (401, 400, 404, 413, 429, 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import re
import secrets
import unicodedata
from collections.abc import Awaitable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from chenyu_assets import media
from chenyu_assets.emulator.config import Account
from chenyu_assets.emulator.pipeline import STATE, Call, EmulatorState, Sent, bearer, run
from chenyu_assets.emulator.store import UploadRec
from chenyu_assets.emulator.wire import ApiError, body_timeout, error_response
from chenyu_assets.spec import CHENYU_MEDIA_TYPES, CHENYU_PURPOSES

__all__ = ["clean_filename", "content_handler", "get_handler", "upload_handler"]

_CHUNK = 256 * 1024
_HEAD = 4096
_FIELD_MAX = 1024
_FORM_OVERHEAD = 1024 * 1024
_DRAIN_BYTES = 1024 * 1024
_DRAIN_SECONDS = 0.5
_CST = timezone(timedelta(hours=8))
_T = TypeVar("_T")
_ASSET_ID = re.compile(r"asset_[0-9a-f]{32}")


class _Refusal(Exception):
    """The upload is over a cap (file size, parts, field bytes, idle time): answer ``err``,
    then drop the connection; ``received`` file bytes were read."""

    def __init__(self, err: ApiError, reason: str, received: int = 0) -> None:
        super().__init__(err.code)
        self.err, self.reason, self.received = err, reason, received


def _too_large(received: int) -> _Refusal:
    message = f"the file is larger than {media.UPLOAD_MAX_BYTES} bytes"
    return _Refusal(ApiError("RequestEntityTooLarge", message, status=413), "too_large", received)


async def _idle(step: Awaitable[_T], idle: float) -> _T:
    """``step`` (one read of the upload body), bounded by ``body_idle_timeout``."""
    try:
        async with asyncio.timeout(idle):
            return await step
    except TimeoutError:
        raise _Refusal(body_timeout(idle), "body_timeout") from None


def _bad(message: str) -> ApiError:
    return ApiError("InvalidParameter", message, status=400)


def _not_found() -> ApiError:
    return ApiError("NotFound", "the asset does not exist or has expired", status=404)


def clean_filename(raw: str | None) -> str:
    """A display-safe original filename: last path segment, no controls, ≤ 255 chars."""
    if not raw:
        return "upload"
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    if text in ("", ".", ".."):
        return "upload"
    return text[:255]


def upload_view(state: EmulatorState, u: UploadRec) -> dict[str, Any]:
    """The ``data`` object of upload and get."""
    content = state.chenyu_content_url(u)
    expires_at = datetime.fromtimestamp(u.expires_time, tz=_CST).isoformat(timespec="seconds")
    return {
        "asset_id": u.asset_id,
        "asset_uri": f"asset://{u.asset_id}",
        "url": content,
        "content_url": content,
        "signed_url": state.chenyu_signed_url(u),
        "media_type": u.media_type,
        "mime_type": u.mime_type,
        "size_bytes": u.size,
        "purpose": u.purpose,
        "persistent": False,
        "expires_at": expires_at,
        "status": "confirmed",
        "original_filename": u.original_filename,
    }


def _fields_too_large(budget: int) -> _Refusal:
    err = ApiError(
        "RequestEntityTooLarge",
        f"the non-file form fields are larger than {budget} bytes together",
        status=413,
    )
    return _Refusal(err, "fields_too_large")


async def _small_field(part: BodyPartReader, name: str, budget: int, cap: int, idle: float) -> str:
    """One small text field; ``budget`` is what is left of the ``cap`` non-file bytes."""
    data = bytearray()
    while chunk := await _idle(part.read_chunk(_FIELD_MAX), idle):
        data += chunk
        if len(data) > budget:
            raise _fields_too_large(cap)
        if len(data) > _FIELD_MAX:
            raise _bad(f"the field {name} is too long")
    try:
        return bytes(data).decode()
    except UnicodeDecodeError:
        raise _bad(f"the field {name} is not UTF-8 text") from None


async def _stream_file(part: BodyPartReader, partial: Path, idle: float) -> tuple[int, str, bytes]:
    """Write one file part to ``partial``; (size, sha256, first bytes)."""
    digest = hashlib.sha256()
    head = bytearray()
    size = 0
    with partial.open("wb") as out:
        while chunk := await _idle(part.read_chunk(_CHUNK), idle):
            size += len(chunk)
            if size > media.UPLOAD_MAX_BYTES:
                raise _too_large(size)
            digest.update(chunk)
            if len(head) < _HEAD:
                head += chunk[: _HEAD - len(head)]
            out.write(chunk)
    return size, digest.hexdigest(), bytes(head)


async def _refuse_and_close(call: Call, refusal: _Refusal) -> Sent:
    """Answer now, let the client read it, then drop the connection (the rest of the body
    is never read: at most a short bounded drain)."""
    request, meta, err = call.request, call.meta, refusal.err
    call.state.audit.upload_rejected(call.account.name, refusal.received, refusal.reason)
    resp = error_response(meta, err)
    resp.force_close()
    with contextlib.suppress(ConnectionError):
        await resp.prepare(request)
        await resp.write_eof()
    transport = request.transport
    if transport is not None and not transport.is_closing() and transport.can_write_eof():
        transport.write_eof()
    drained = 0
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while drained < _DRAIN_BYTES:
                chunk = await request.content.readany()
                if not chunk:
                    break
                drained += len(chunk)
    request.protocol.force_close()
    return Sent(resp, err.status, err.code)


async def _upload(call: Call) -> dict[str, Any] | Sent:
    request, state = call.request, call.state
    if request.content_type != "multipart/form-data":
        raise _bad("the body must be multipart/form-data")
    length = request.content_length
    if length is not None and length > media.UPLOAD_MAX_BYTES + _FORM_OVERHEAD:
        return await _refuse_and_close(call, _too_large(0))
    fields: dict[str, str] = {}
    stored = secrets.token_hex(16) + ".bin"
    partial = state.blob_dir / f".partial-{stored}"
    found: tuple[int, str, bytes, str] | None = None
    cfg = state.config
    parts, field_budget = 0, cfg.max_form_field_bytes
    try:
        try:
            reader = await request.multipart()
            while (part := await _idle(reader.next(), cfg.body_idle_timeout)) is not None:
                parts += 1
                if parts > cfg.max_multipart_parts:
                    too_many = _bad(f"the form has more than {cfg.max_multipart_parts} parts")
                    raise _Refusal(too_many, "too_many_parts")
                if not isinstance(part, BodyPartReader):
                    raise _bad("nested multipart bodies are not accepted")
                name = part.name or ""
                field_budget -= len(name.encode())
                if field_budget < 0:
                    raise _fields_too_large(cfg.max_form_field_bytes)
                if name == "file":
                    if found is not None:
                        raise _bad("only one file may be uploaded")
                    size, sha, head = await _stream_file(part, partial, cfg.body_idle_timeout)
                    found = (size, sha, head, clean_filename(part.filename))
                elif name in fields:
                    raise _bad(f"the field {name} is repeated")
                else:
                    value = await _small_field(
                        part, name, field_budget, cfg.max_form_field_bytes, cfg.body_idle_timeout
                    )
                    field_budget -= len(value.encode())
                    fields[name] = value
        except _Refusal as exc:
            return await _refuse_and_close(call, exc)
        except (ValueError, LookupError, AssertionError, HttpProcessingError):
            raise _bad("the multipart body is malformed") from None
        if found is None:
            raise ApiError("MissingParameter.file", "the file field is required", status=400)
        record = _record(call, fields, found, stored)
        os.replace(partial, state.blob_dir / stored)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    state.store.add_upload(record)
    return upload_view(state, record)


def _record(
    call: Call, fields: dict[str, str], found: tuple[int, str, bytes, str], stored: str
) -> UploadRec:
    size, sha, head, filename = found
    if size == 0:
        raise _bad("the file is empty")
    media_type = fields.get("media_type") or media.media_type_for(head, filename)
    if media_type not in CHENYU_MEDIA_TYPES:
        raise _bad(f"media_type must be one of {', '.join(CHENYU_MEDIA_TYPES)}")
    purpose = fields.get("purpose") or CHENYU_PURPOSES[0]
    if purpose not in CHENYU_PURPOSES:
        raise _bad(f"purpose must be {' or '.join(CHENYU_PURPOSES)}")
    ttl_text = fields.get("ttl_hours", "").strip() or "48"
    max_ttl = call.state.config.max_ttl_hours
    if not ttl_text.isascii() or not ttl_text.isdigit() or not 1 <= int(ttl_text) <= max_ttl:
        raise _bad(f"ttl_hours must be an integer from 1 to {max_ttl}")
    sniffed = media.sniff(head)
    mime = sniffed[2] if sniffed else None
    mime = mime or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    state = call.state
    asset_id = "asset_" + secrets.token_hex(16)
    while state.store.upload_id_taken(asset_id):  # pragma: no cover - 128 random bits
        asset_id = "asset_" + secrets.token_hex(16)
    now = state.clock.now()
    return UploadRec(
        asset_id=asset_id,
        account=call.account.name,
        stored_filename=stored,
        original_filename=filename,
        media_type=media_type,
        mime_type=mime,
        size=size,
        sha256=sha,
        purpose=purpose,
        ttl_hours=int(ttl_text),
        create_time=now,
        expires_time=now + int(ttl_text) * 3600,
    )


def _owned_upload(call: Call, asset_id: str) -> UploadRec:
    upload = call.state.store.get_upload(asset_id) if _ASSET_ID.fullmatch(asset_id) else None
    if upload is None or upload.account != call.account.name:
        raise _not_found()
    if upload.expires_time <= call.state.clock.now():
        raise ApiError("NotFound", "the asset has expired", status=404)
    return upload


async def upload_handler(request: web.Request) -> web.StreamResponse:
    """``POST /api/open/v2/assets``."""
    state = request.app[STATE]
    return await run(request, state, state.meta("chenyu", "UploadAsset"), bearer(request), _upload)


async def get_handler(request: web.Request) -> web.StreamResponse:
    """``GET /api/open/v2/assets/{asset_id}``."""
    state = request.app[STATE]
    asset_id = request.match_info["asset_id"]

    async def handler(call: Call) -> dict[str, Any]:
        return upload_view(state, _owned_upload(call, asset_id))

    return await run(request, state, state.meta("chenyu", "GetAsset"), bearer(request), handler)


async def content_handler(request: web.Request) -> web.StreamResponse:
    """``GET /assets/{asset_id}/content?expires=&signature=``."""
    state = request.app[STATE]
    asset_id = request.match_info["asset_id"]

    async def authenticate() -> Account:
        upload = state.store.get_upload(asset_id)
        if "Authorization" in request.headers and "signature" not in request.query:
            account = await bearer(request)()
            if upload is None or upload.account != account.name:
                raise ApiError("NotFound", "the asset does not exist", status=404)
            return account
        owner = None if upload is None else upload.account
        return state.signed_owner("chenyu", asset_id, request.query, owner)

    async def handler(call: Call) -> Sent:
        upload = state.store.get_upload(asset_id)
        if upload is None:
            raise ApiError("NotFound", "the asset does not exist", status=404)
        if upload.expires_time <= state.clock.now():
            raise ApiError("Gone", "the asset has expired", status=410)
        path = state.blob_dir / upload.stored_filename
        if not path.is_file():
            raise ApiError("NotFound", "the asset's content is gone", status=404)
        headers = {"Content-Type": upload.mime_type, "Cache-Control": "private, max-age=0"}
        return Sent(web.FileResponse(path, headers=headers), 200)

    return await run(request, state, state.meta("content", "GetContent"), authenticate, handler)
