"""The emulator's public data: its settings (accounts, the one config object), the clock
they scale, and its audit trail (:class:`Audit` snapshots of the live :class:`AuditLog`).

Every knob lives in :class:`EmulatorConfig`. The object is *live*: the running emulator
reads it on every request, so ``emu.config.time_scale = 10`` or
``emu.config.enforce_limits = False`` takes effect at once (assignments are validated).
Fault rules are the exception: change them with ``emu.set_faults(...)`` so the per-rule
fire counters are reset together with the list.

Time: ``time_scale`` speeds the emulated service up. Durations the *service* decides
(processing delay, asset TTLs, signed-URL lifetimes) are divided by it and request rates
are multiplied by it. Request signatures (``X-Date``) are always checked against the real
clock shifted by ``clock_offset_seconds``, so a fast emulator never rejects honest clients.
Fault delays (``latency``, ``list_lag``) are real seconds.

The audit: :class:`AuditLog` records cheaply on the hot path; :class:`Audit` is a snapshot
of it and the store, also served as JSON at ``GET /_emulator/audit``. Its timestamps ``t``
are real seconds since the emulator started.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from chenyu_assets.emulator.faults import FaultRule
from chenyu_assets.limits import Rate
from chenyu_assets.spec import ACTION_RATES, MAX_PROCESSING

__all__ = [
    "DEMO_ACCESS_KEY",
    "DEMO_API_KEY",
    "DEMO_SECRET_KEY",
    "Account",
    "Audit",
    "AuditAsset",
    "AuditGroup",
    "AuditLog",
    "AuditUpload",
    "Clock",
    "EmulatorConfig",
    "RejectedUpload",
    "RequestRecord",
]

#: The demo account's credentials. Fixed and public on purpose: the emulator is a local
#: development server, and tests and docs can rely on these strings.
DEMO_ACCESS_KEY = "AKLTZW11bGF0b3ItZGVtby1hY2Nlc3Mta2V5"
DEMO_SECRET_KEY = "ZW11bGF0b3ItZGVtby1zZWNyZXQta2V5LW5vdC1zZWNyZXQ="  # noqa: S105 - public demo
DEMO_API_KEY = "cy_0123456789abcdef0123456789abcdef"


class Account(BaseModel):
    """One tenant: AK/SK for the official Ark endpoint, an API key for the Bearer families.

    Accounts are isolated: one account's groups, assets and uploads are unknown to another.
    The secret key and API key are left out of ``repr()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "demo"
    access_key: str = DEMO_ACCESS_KEY
    secret_key: str = Field(default=DEMO_SECRET_KEY, repr=False)
    api_key: str = Field(default=DEMO_API_KEY, repr=False)

    @field_validator("name", "access_key", "secret_key", "api_key")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value or value.strip() != value or any(ch in value for ch in "\r\n\0"):
            raise ValueError("must be a non-empty string without surrounding whitespace")
        return value


class EmulatorConfig(BaseModel):
    """All emulator settings; see the module docstring for how time is scaled.

    The last group of fields (after "hardening") bounds what a stranger can make the server
    spend when it is reachable from elsewhere (``chenyu-assets serve --host 0.0.0.0``); each
    default is safe for a shared machine and each is validated (positive, with a ceiling
    where a bigger value would defeat the bound).
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: SQLite metadata + blobs live here; ``None`` keeps everything in memory and a
    #: temporary directory that is removed on exit.
    data_dir: Path | None = None
    time_scale: float = Field(default=1.0, gt=0.0)
    #: Seconds an asset stays Processing: uniform in ``delay ± jitter`` (clipped at 0),
    #: drawn from an RNG seeded with ``seed``, divided by ``time_scale``.
    processing_delay: float = Field(default=2.0, ge=0.0)
    processing_jitter: float = Field(default=0.5, ge=0.0)
    #: The server's rate-limit model (alias ``limit_model``): see ``guard.RateLimiter``.
    window: str = Field(
        default="sliding",
        pattern=r"^(sliding|fixed|bucket(:[1-9][0-9]{0,3})?|token_bucket)$",
        validation_alias=AliasChoices("window", "limit_model"),
    )
    max_skew_seconds: float = Field(default=900.0, ge=0.0)
    clock_offset_seconds: float = 0.0
    accounts: list[Account] = Field(default_factory=lambda: [Account()], min_length=1)
    #: ``host[:port]`` names CreateAsset may fetch over the network. A name without a port
    #: allows only the scheme's default port. Nothing else is ever contacted.
    fetch_allowlist: tuple[str, ...] = ()
    faults: list[FaultRule] = Field(default_factory=list)
    seed: int = 0
    #: Real seconds during which a new asset or group is invisible to the list actions.
    list_lag: float = Field(default=0.0, ge=0.0)
    enforce_limits: bool = True
    validate_media: bool = True
    #: Rates per action (before ``time_scale``): requests per second, or ``"N/s"`` /
    #: ``"N/min"``; a key ``"ACCOUNT/ACTION"`` sets one account's own rate.
    rates: dict[str, float | str] = Field(
        default_factory=lambda: dict[str, float | str](ACTION_RATES)
    )
    max_processing: int = Field(default=MAX_PROCESSING, ge=1)
    #: Misbehaviours a real service may have (api-reference §6): ListAssets ignores
    #: ``SortBy``/``SortOrder`` (each answer's order is a seeded shuffle), and ``UpdateTime``
    #: never moves after create (it always equals ``CreateTime``).
    ignore_sort: bool = False
    freeze_update_time: bool = False
    #: Lifetime of signed content URLs, in emulated seconds (12 h); a Chenyu signed URL
    #: never outlives its asset.
    signed_url_seconds: float = Field(default=43200.0, gt=0.0)
    max_ttl_hours: int = Field(default=720, ge=1)
    allowed_regions: tuple[str, ...] = ("cn-beijing", "ap-southeast-1", "eu-west-1")
    fetch_timeout: float = Field(default=30.0, gt=0.0)
    #: The audit keeps the newest this many request records.
    audit_max_requests: int = Field(default=200_000, ge=1)
    #: Seconds the server waits for open requests when it stops.
    shutdown_timeout: float = Field(default=2.0, ge=0.0)

    # -- hardening: the emulator as a server others can reach (see README, Security) ------
    #: Largest generated *image* sample, in pixels (``width * height``); a bigger one is a
    #: 400 (the memory this bounds: README, Security). Video and audio samples allocate no
    #: pixels; their sides stay within 8192.
    max_sample_pixels: int = Field(default=4096 * 4096, ge=1, le=8192 * 8192)
    #: Bytes of generated samples kept in the LRU cache; a sample bigger than this is
    #: served but not kept. Samples are rendered one at a time.
    sample_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    #: Seconds to send a complete request header block, from the connection's accept (or a
    #: kept-alive request's first byte); past it: 408 and the connection is closed.
    header_timeout: float = Field(default=15.0, gt=0.0, le=3600.0)
    #: Seconds a request body may go without a byte arriving (JSON bodies and uploads);
    #: past it the answer is 408 (uploads: and the connection is closed).
    body_idle_timeout: float = Field(default=60.0, gt=0.0, le=3600.0)
    #: Seconds an idle kept-alive connection stays open (read at start; the rest: live).
    keepalive_timeout: float = Field(default=75.0, gt=0.0, le=3600.0)
    #: Open connections one remote address may hold; the next one gets a 503 and is closed.
    max_connections_per_peer: int = Field(default=64, ge=1)
    #: The same for a loopback address (an SDK client alone pools up to 100 connections).
    max_connections_per_loopback: int = Field(default=2048, ge=1)
    #: Parts one multipart upload may have (the file plus a few small fields); more is 400.
    max_multipart_parts: int = Field(default=16, ge=1, le=10_000)
    #: Bytes of all non-file multipart fields of one upload together; more is 413.
    max_form_field_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        for action, rate in value.items():
            try:
                Rate.parse(rate)
            except ValueError:
                raise ValueError(f"rate for {action} must be positive ('30/s', '3/min')") from None
        return value

    @model_validator(mode="after")
    def _unique_accounts(self) -> EmulatorConfig:
        for field in ("name", "access_key", "api_key"):
            values = [getattr(a, field) for a in self.accounts]
            if len(set(values)) != len(values):
                raise ValueError(f"accounts must have distinct {field} values")
        return self


class Clock:
    """Scaled, shiftable time for one emulator, from one injectable monotonic source and one
    wall source: :meth:`elapsed` (real seconds since start: audit, rate windows, list lag),
    :meth:`now` (emulated Unix time: starts at the wall time, runs ``time_scale`` times faster,
    shifted by ``clock_offset_seconds`` and :meth:`advance`: TTLs, signed URLs, Create/Update
    times) and :meth:`signing_now` (wall time plus the offset, unscaled: the ``X-Date`` skew
    check, so a sped-up emulator still accepts honest clients). ``scale`` and ``offset`` are
    callables that follow the live config; a scale change applies from the previous reading
    on, so emulated time never jumps.
    """

    __slots__ = (
        "_advanced",
        "_anchor_elapsed",
        "_anchor_emulated",
        "_mono",
        "_mono0",
        "_offset",
        "_scale",
        "_wall",
    )

    def __init__(
        self,
        *,
        scale: Callable[[], float] = lambda: 1.0,
        offset: Callable[[], float] = lambda: 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._mono = monotonic
        self._wall = wall
        self._scale = scale
        self._offset = offset
        self._mono0 = monotonic()
        self._anchor_elapsed = 0.0
        self._anchor_emulated = wall()
        self._advanced = 0.0

    def elapsed(self) -> float:
        """Real (unscaled) seconds since the clock was created."""
        return self._mono() - self._mono0

    def now(self) -> float:
        """Emulated Unix time in seconds."""
        elapsed = self.elapsed()
        # Re-anchor at every reading: a scale change applies from the previous reading on,
        # and emulated time never jumps or runs backwards.
        self._anchor_emulated += (elapsed - self._anchor_elapsed) * self._scale()
        self._anchor_elapsed = elapsed
        return self._anchor_emulated + self._advanced + self._offset()

    def signing_now(self) -> datetime:
        """Real wall time plus the configured offset, for request-signature skew checks."""
        return datetime.fromtimestamp(self._wall() + self._offset(), tz=UTC)

    def advance(self, seconds: float) -> None:
        """Jump emulated time forward (tests: expire TTLs and signed URLs at once)."""
        if seconds < 0:
            raise ValueError("the emulated clock only moves forward")
        self._advanced += seconds

    def __repr__(self) -> str:
        return f"Clock(elapsed={self.elapsed():.3f}, scale={self._scale()})"


class RequestRecord(BaseModel):
    """One handled request.

    ``status`` is the HTTP status sent, 0 when no answer was sent (reset, hang, cut off);
    ``code`` is the vendor error code, ``fault:<kind>`` when an injected fault decided the
    outcome, or None on success.
    """

    t: float
    family: str
    action: str
    account: str | None
    status: int
    code: str | None = None


class AuditGroup(BaseModel):
    """An asset group as it is now."""

    id: str
    name: str
    account: str
    project: str
    group_type: str
    created_t: float | None = None


class AuditAsset(BaseModel):
    """An Ark asset as it is now (``created_t`` / ``finished_t`` in audit seconds; None
    for assets restored from a previous run)."""

    id: str
    name: str
    group_id: str
    account: str
    project: str
    status: str
    asset_type: str
    url: str
    error_code: str | None = None
    created_t: float | None = None
    finished_t: float | None = None


class AuditUpload(BaseModel):
    """A stored Chenyu upload."""

    asset_id: str
    account: str
    size: int
    sha256: str
    stored_filename: str
    original_filename: str
    media_type: str


class RejectedUpload(BaseModel):
    """A Chenyu upload refused while streaming, with how much of the file was read."""

    account: str
    bytes_received: int
    reason: str


class Audit(BaseModel):
    """A snapshot of the emulator's audit trail and state."""

    requests: list[RequestRecord] = Field(default_factory=list)
    groups: list[AuditGroup] = Field(default_factory=list)
    assets: list[AuditAsset] = Field(default_factory=list)
    uploads: list[AuditUpload] = Field(default_factory=list)
    rejected_uploads: list[RejectedUpload] = Field(default_factory=list)
    #: Requests refused by the emulator's own limits (rate or in-flight cap), by action.
    rejected_429: dict[str, int] = Field(default_factory=dict)
    #: Peak number of assets Processing at once, by account.
    max_processing: dict[str, int] = Field(default_factory=dict)

    def count(self, action: str, status: int | None = None, *, family: str | None = None) -> int:
        """Requests for ``action`` (optionally with this HTTP status / family)."""
        return sum(
            1
            for r in self.requests
            if r.action == action
            and (status is None or r.status == status)
            and (family is None or r.family == family)
        )

    def max_in_window(self, action: str, window: float = 1.0, account: str | None = None) -> int:
        """Most accepted (2xx) ``action`` requests inside any window of ``window`` seconds."""
        times = sorted(
            r.t
            for r in self.requests
            if r.action == action
            and 200 <= r.status < 300
            and (account is None or r.account == account)
        )
        best = 0
        for i, start in enumerate(times):
            end = bisect.bisect_left(times, start + window, lo=i)
            best = max(best, end - i)
        return best

    def duplicates(self, account: str | None = None) -> dict[str, list[str]]:
        """Asset names used more than once within one group: name -> asset ids."""
        by_group: dict[tuple[str, str], list[str]] = defaultdict(list)
        for asset in self.assets:
            if account is None or asset.account == account:
                by_group[(asset.group_id, asset.name)].append(asset.id)
        result: dict[str, list[str]] = {}
        for (_group, name), ids in by_group.items():
            if len(ids) > 1:
                result.setdefault(name, []).extend(ids)
        return result


class AuditLog:
    """The live recorder behind :class:`Audit` snapshots."""

    __slots__ = ("_processing_peak", "_rejected_429", "_rejected_uploads", "_requests")

    def __init__(self, max_records: int | None = None) -> None:
        #: only the newest ``max_records`` requests are kept (a long-running ``serve``)
        self._requests: deque[RequestRecord] = deque(maxlen=max_records)
        self._rejected_429: Counter[str] = Counter()
        self._processing_peak: dict[str, int] = {}
        self._rejected_uploads: list[RejectedUpload] = []

    def record(
        self,
        *,
        t: float,
        family: str,
        action: str,
        account: str | None,
        status: int,
        code: str | None,
    ) -> None:
        """Append one request outcome."""
        self._requests.append(
            RequestRecord.model_construct(
                t=t, family=family, action=action, account=account, status=status, code=code
            )
        )

    def rejected_by_limit(self, action: str) -> None:
        """Count a 429 the emulator's own limits produced."""
        self._rejected_429[action] += 1

    def processing_level(self, account: str, level: int) -> None:
        """Note how many assets ``account`` has Processing right now (keeps the peak)."""
        if level > self._processing_peak.get(account, 0):
            self._processing_peak[account] = level

    def upload_rejected(self, account: str, bytes_received: int, reason: str) -> None:
        """Note an upload refused while streaming."""
        self._rejected_uploads.append(
            RejectedUpload(account=account, bytes_received=bytes_received, reason=reason)
        )

    def snapshot(
        self,
        *,
        groups: list[AuditGroup],
        assets: list[AuditAsset],
        uploads: list[AuditUpload],
    ) -> Audit:
        """Freeze the current state into an :class:`Audit`."""
        return Audit.model_construct(
            requests=list(self._requests),
            groups=groups,
            assets=assets,
            uploads=uploads,
            rejected_uploads=list(self._rejected_uploads),
            rejected_429=dict(self._rejected_429),
            max_processing=dict(self._processing_peak),
        )
