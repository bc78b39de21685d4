"""The path every API request takes, whatever its family, and the state it runs on.

1. authenticate (Bearer key, AK/SK signature, or a signed URL) — failures are answered
   before anything else happens and never count against limits;
2. pick an injected fault (one seeded RNG; how each kind acts is in
   :data:`~chenyu_assets.emulator.faults.FAULTS`): in phase ``before`` a sending fault
   answers now, a delaying one sleeps; the rule is kept on the :class:`Call`;
3. the per-account rate limit of the action (429 ``FlowLimitExceeded`` at once; refusals do
   not consume the window);
4. the handler, which returns the ``Result``/``data`` dict (or an already-sent response);
5. ``phase="after"`` faults, then the family envelope, then one audit record.

Authentication (:func:`bearer_account`, :func:`signed_account`) never logs or echoes a
credential; error messages are the fixed texts of the signing module or of this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from chenyu_assets._core.logs import get_logger, register_secret
from chenyu_assets._core.signing import SignatureError, VerifiedRequest, verify_request
from chenyu_assets.emulator.config import Account, Audit, AuditLog, Clock, EmulatorConfig
from chenyu_assets.emulator.content import SampleMedia, UrlKind, UrlSigner
from chenyu_assets.emulator.faults import FAULTS, FaultEngine, FaultRule, misbehave
from chenyu_assets.emulator.guard import RateLimiter
from chenyu_assets.emulator.processing import Fetcher, Processor
from chenyu_assets.emulator.store import AssetRec, Persistence, Store, UploadRec
from chenyu_assets.emulator.wire import (
    ApiError,
    Meta,
    dumps,
    error_body,
    error_response,
    json_response,
    new_request_id,
    ok_body,
)

__all__ = [
    "STATE",
    "Call",
    "EmulatorState",
    "Sent",
    "bearer",
    "bearer_account",
    "reject",
    "run",
    "signed_account",
]

logger = get_logger("chenyu_assets.emulator")
_SECRET_META = "url_signing_secret"  # noqa: S105 - a metadata key name


@dataclass(eq=False)
class EmulatorState:
    """One store, one limiter, one processing engine, one fault RNG, one audit log."""

    config: EmulatorConfig
    clock: Clock
    store: Store
    limiter: RateLimiter
    faults: FaultEngine
    audit: AuditLog
    signer: UrlSigner
    samples: SampleMedia
    fetcher: Fetcher
    processor: Processor
    blob_dir: Path
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``http://host:port`` of the running server (set once it is bound).
    base_url: str = ""

    @classmethod
    def build(
        cls, cfg: EmulatorConfig, persist: Persistence, blob_dir: Path, clock: Clock | None
    ) -> EmulatorState:
        """Every part of one emulator, wired to the live ``cfg``."""
        for account in cfg.accounts:  # masked in every log record of the package
            register_secret(account.secret_key)
            register_secret(account.api_key)
        store = Store(persist)
        secret_hex = store.meta(_SECRET_META)
        if secret_hex is None:
            secret_hex = secrets.token_hex(32)
            store.set_meta(_SECRET_META, secret_hex)
        signer = UrlSigner(bytes.fromhex(secret_hex))
        clock = clock or Clock(
            scale=lambda: cfg.time_scale, offset=lambda: cfg.clock_offset_seconds
        )
        samples = SampleMedia(
            max_pixels=lambda: cfg.max_sample_pixels, cache_bytes=lambda: cfg.sample_cache_bytes
        )
        audit = AuditLog(cfg.audit_max_requests)
        fetcher = Fetcher(
            store=store,
            signer=signer,
            samples=samples,
            blob_dir=blob_dir,
            now=clock.now,
            allowlist=lambda: cfg.fetch_allowlist,
            timeout=lambda: cfg.fetch_timeout,
        )
        processor = Processor(
            store=store,
            clock=clock,
            config=lambda: cfg,
            fetcher=fetcher,
            audit=audit,
            blob_dir=blob_dir,
            seed=cfg.seed,
        )
        return cls(
            config=cfg,
            clock=clock,
            store=store,
            limiter=RateLimiter(
                rates=lambda: cfg.rates, scale=lambda: cfg.time_scale, strategy=lambda: cfg.window
            ),
            faults=FaultEngine(cfg.seed, cfg.faults),
            audit=audit,
            signer=signer,
            samples=samples,
            fetcher=fetcher,
            processor=processor,
            blob_dir=blob_dir,
        )

    def snapshot(self) -> Audit:
        """An :class:`Audit` of everything so far."""
        groups, assets, uploads = self.store.audit()
        return self.audit.snapshot(groups=groups, assets=assets, uploads=uploads)

    def meta(self, family: str, action: str, **kw: str) -> Meta:
        """A new request's envelope data (a fresh request id)."""
        return Meta(family=family, action=action, request_id=new_request_id(self.clock.now()), **kw)

    def account_named(self, name: str) -> Account | None:
        """The account called ``name`` (None: it is no longer configured)."""
        return next((a for a in self.config.accounts if a.name == name), None)

    def signed_owner(
        self, kind: UrlKind, asset_id: str, query: Mapping[str, str], owner: str | None
    ) -> Account:
        """The account ``owner`` of the asset a signed content URL names: AccessDenied for
        a bad or expired signature, NotFound for an unknown asset or owner."""
        refusal = self.signer.check(kind, asset_id, query, self.clock.now())
        if refusal is not None:
            raise ApiError("AccessDenied", refusal)
        account = None if owner is None else self.account_named(owner)
        if account is None:
            raise ApiError("NotFound", "the asset does not exist", status=404)
        return account

    def chenyu_content_url(self, upload: UploadRec) -> str:
        """The unsigned content address of a Chenyu upload."""
        return f"{self.base_url}/assets/{upload.asset_id}/content"

    def chenyu_signed_url(self, upload: UploadRec) -> str:
        """A signed content URL valid ``signed_url_seconds`` (never past the asset's TTL)."""
        expires = int(min(self.clock.now() + self.config.signed_url_seconds, upload.expires_time))
        query = self.signer.query("chenyu", upload.asset_id, expires)
        return f"{self.chenyu_content_url(upload)}?{query}"

    def ark_signed_url(self, asset: AssetRec) -> str:
        """GetAsset's ``URL``: a signed content URL valid ``signed_url_seconds`` (12 h)."""
        expires = int(self.clock.now() + self.config.signed_url_seconds)
        query = self.signer.query("ark", asset.id, expires)
        return f"{self.base_url}/ark/assets/{asset.id}/content?{query}"


STATE: web.AppKey[EmulatorState] = web.AppKey("chenyu_emulator_state", EmulatorState)

#: Families whose actions share the account's Ark rate limits (Chenyu publishes none).
LIMITED_FAMILIES = frozenset({"ark", "gateway", "avatar"})


@dataclass(slots=True)
class Sent:
    """A handler's answer that is already a response (file download, streamed 413)."""

    response: web.StreamResponse
    status: int
    code: str | None = None


@dataclass(slots=True)
class Call:
    """One authenticated request on its way through a handler."""

    request: web.Request
    state: EmulatorState
    meta: Meta
    account: Account
    t: float
    #: the fault rule that fired for this request, if any
    rule: FaultRule | None = None

    @property
    def list_lag(self) -> float:
        """Seconds a ``list_lag`` fault hides new items for (0: none)."""
        rule = self.rule
        return rule.delay if rule is not None and rule.kind == "list_lag" else 0.0

    @property
    def stuck(self) -> bool:
        """True when a ``stuck`` fault keeps the asset this CreateAsset makes Processing."""
        return self.rule is not None and self.rule.kind == "stuck"

    def refuse_flow(self, message: str) -> ApiError:
        """Undo this request's rate-limit slot and build a 429 for the in-flight cap."""
        self.state.limiter.refund(self.account.name, self.meta.action, self.t)
        self.state.audit.rejected_by_limit(self.meta.action)
        return ApiError("FlowLimitExceeded", message)


Authenticate = Callable[[], Awaitable[Account]]
Handler = Callable[[Call], Awaitable["dict[str, Any] | Sent"]]


async def _sleep(state: EmulatorState, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.shutdown.wait(), timeout=seconds)


async def run(
    request: web.Request,
    state: EmulatorState,
    meta: Meta,
    authenticate: Authenticate,
    handler: Handler,
) -> web.StreamResponse:
    """Run one request through authentication, faults, limits and its handler."""
    t = state.clock.elapsed()
    account: Account | None = None
    after: FaultRule | None = None  # a phase "after" rule: it acts once the effect is committed

    def record(status: int, code: str | None) -> None:
        state.audit.record(
            t=t,
            family=meta.family,
            action=meta.action,
            account=account.name if account else None,
            status=status,
            code=code,
        )

    async def misbehaving(
        rule: FaultRule, committed: tuple[int, bytes] | None = None
    ) -> web.StreamResponse:
        response, status = await misbehave(request, rule, meta, state.shutdown, committed=committed)
        record(status, f"fault:{rule.kind}")
        return response

    try:
        account = await authenticate()
        rule = state.faults.pick(meta.family, meta.action)
        call = Call(request=request, state=state, meta=meta, account=account, t=t, rule=rule)
        if rule is not None and rule.phase == "after":
            after = rule
        elif rule is not None and FAULTS[rule.kind].delays:
            await _sleep(state, rule.delay)
        elif rule is not None and FAULTS[rule.kind].send is not None:
            return await misbehaving(rule)
        t = call.t = state.clock.elapsed()
        limited = state.config.enforce_limits and meta.family in LIMITED_FAMILIES
        if limited and not state.limiter.try_acquire(account.name, meta.action, t):
            state.audit.rejected_by_limit(meta.action)
            raise ApiError("FlowLimitExceeded", f"{meta.action} is over the account's rate limit")
        result = await handler(call)
        if isinstance(result, Sent):
            sends = after is not None and FAULTS[after.kind].send is not None
            if after is not None and sends and not result.response.prepared:
                return await misbehaving(after)
            record(result.status, result.code)
            return result.response
        status, code, headers = 200, None, {}
        body = dumps(ok_body(meta, result))
    except ApiError as err:
        status, code, headers = err.status, err.code, err.headers
        body = dumps(error_body(meta, err))
    except ConnectionError:
        # the client went away mid-request (e.g. during an upload): nobody to answer
        record(0, "client_disconnected")
        return web.Response(status=499)
    except Exception:
        logger.exception("%s %s failed unexpectedly", meta.family, meta.action)
        internal = ApiError("InternalError", "the emulator failed unexpectedly")
        status, code, headers = internal.status, internal.code, {}
        body = dumps(error_body(meta, internal))
    if after is not None and FAULTS[after.kind].send is not None:
        return await misbehaving(after, (status, body))
    if after is not None and FAULTS[after.kind].delays:
        await _sleep(state, after.delay)
    record(status, code)
    return json_response(meta, status, body, headers)


# -- authentication --------------------------------------------------------------------------


def bearer_account(authorization: str | None, accounts: Sequence[Account]) -> Account:
    """The account whose API key is in ``Authorization: Bearer <key>``.

    Missing header: ``MissingAuthenticationToken``; malformed or unknown key:
    ``InvalidAuthorization`` (both 401).
    """
    if not authorization or not authorization.strip():
        raise ApiError("MissingAuthenticationToken", "the request has no Authorization header")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError("InvalidAuthorization", "expected 'Authorization: Bearer <api key>'")
    found: Account | None = None
    for account in accounts:
        # compare every key so timing does not reveal which account almost matched
        if hmac.compare_digest(account.api_key.encode(), key.encode("utf-8", "replace")):
            found = account
    if found is None:
        raise ApiError("InvalidAuthorization", "the API key is not valid")
    return found


def bearer(request: web.Request) -> Authenticate:
    """The ``authenticate`` step of a Bearer family (see :func:`bearer_account`)."""

    async def authenticate() -> Account:
        accounts = request.app[STATE].config.accounts
        return bearer_account(request.headers.get("Authorization"), accounts)

    return authenticate


def signed_account(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    accounts: Sequence[Account],
    now: datetime,
    max_skew_seconds: float,
    allowed_regions: Sequence[str],
) -> tuple[Account, VerifiedRequest]:
    """Verify a SignerV4 request; returns the signing account and what was verified."""
    by_key = {a.access_key: a for a in accounts}

    def lookup(access_key: str) -> str | None:
        account = by_key.get(access_key)
        return None if account is None else account.secret_key

    try:
        verified = verify_request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            lookup_secret=lookup,
            now=now,
            max_skew=timedelta(seconds=max_skew_seconds),
            service="ark",
            allowed_regions=tuple(allowed_regions),
        )
    except SignatureError as exc:
        raise ApiError(exc.code, exc.message) from None
    return by_key[verified.access_key], verified


def reject(state: EmulatorState, meta: Meta, err: ApiError) -> web.Response:
    """Answer (and audit) an error found before authentication."""
    state.audit.record(
        t=state.clock.elapsed(),
        family=meta.family,
        action=meta.action,
        account=None,
        status=err.status,
        code=err.code,
    )
    return error_response(meta, err)
