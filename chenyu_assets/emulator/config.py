"""Emulator settings (accounts, the one config object), the clock they scale and the
rate limiter they parametrize.

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
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
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
    "LIVE_FIELDS",
    "Account",
    "Clock",
    "EmulatorConfig",
    "FaultRule",
    "RateLimiter",
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


def _default_accounts() -> list[Account]:
    return [Account()]


def _default_rates() -> dict[str, float | str]:
    return dict(ACTION_RATES)


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
    #: The server's rate-limit model (alias ``limit_model``); see :class:`RateLimiter`.
    window: str = Field(
        default="sliding",
        pattern=r"^(sliding|fixed|bucket(:[1-9][0-9]{0,3})?|token_bucket)$",
        validation_alias=AliasChoices("window", "limit_model"),
    )
    max_skew_seconds: float = Field(default=900.0, ge=0.0)
    clock_offset_seconds: float = 0.0
    accounts: list[Account] = Field(default_factory=_default_accounts, min_length=1)
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
    rates: dict[str, float | str] = Field(default_factory=_default_rates)
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
    #: 400. 4096 x 4096 costs about +120 MB of peak memory (BMP/TIFF: a 48 MiB canvas plus a
    #: 48 MiB file) instead of +460 MB at 8192 x 8192, and still allows every vendor edge
    #: case (a 6000 x 2401 image at the side limit is 14.4 MP). Video and audio samples
    #: allocate no pixels; their sides stay within 8192.
    max_sample_pixels: int = Field(default=4096 * 4096, ge=1, le=8192 * 8192)
    #: Bytes of generated samples kept in the LRU cache; a sample bigger than this is
    #: served but not kept. Samples are rendered one at a time.
    sample_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    #: Seconds a connection may take to send a complete request header block, counted from
    #: the moment it is accepted and from the first byte of each later request on a
    #: kept-alive connection. Past it the emulator answers 408 and closes the connection.
    header_timeout: float = Field(default=15.0, gt=0.0, le=3600.0)
    #: Seconds a request body may go without a byte arriving (JSON bodies and uploads);
    #: past it the answer is 408 (uploads: and the connection is closed).
    body_idle_timeout: float = Field(default=60.0, gt=0.0, le=3600.0)
    #: Seconds an idle kept-alive connection (no request under way) stays open (read when
    #: the server starts; the other bounds here are read live).
    keepalive_timeout: float = Field(default=75.0, gt=0.0, le=3600.0)
    #: Open connections one remote (non-loopback) address may hold; the next one gets a 503
    #: and is closed before anything is read, so one peer cannot take every socket.
    max_connections_per_peer: int = Field(default=64, ge=1)
    #: The same cap for a loopback address (this machine's own clients: an SDK client pools
    #: up to 100 connections, and tests and benchmarks run several clients at once).
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


#: Settings ``POST /_emulator/config`` may change.
LIVE_FIELDS = frozenset(
    {
        "time_scale",
        "processing_delay",
        "processing_jitter",
        "window",
        "max_skew_seconds",
        "clock_offset_seconds",
        "list_lag",
        "enforce_limits",
        "validate_media",
        "rates",
        "max_processing",
        "signed_url_seconds",
    }
)


class Clock:
    """Scaled, shiftable time for one emulator.

    Three readings, all derived from one injectable monotonic source and one wall source:

    * :meth:`Clock.elapsed` — real seconds since the emulator started (audit timestamps,
      rate-limit windows, list lag);
    * :meth:`Clock.now` — emulated Unix time: starts at the real wall time, runs
      ``time_scale`` times faster, is shifted by ``clock_offset_seconds`` and by
      :meth:`Clock.advance` (asset TTLs, signed-URL expiry, CreateTime/UpdateTime);
    * :meth:`Clock.signing_now` — real wall time plus ``clock_offset_seconds`` (the ``X-Date``
      skew check; not scaled, so a sped-up emulator still accepts honest clients).

    ``scale`` and ``offset`` are callables so the clock follows the live config; a change of
    scale applies from the previous reading on, so emulated time never jumps.
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


# -- the server's rate limits ---------------------------------------------------------------


_DEFAULT_BURST = 2


class _Sliding:
    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def try_take(self, now: float, limit: int, window: float) -> bool:
        times = self.times
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    def give_back(self) -> None:
        if self.times:
            self.times.pop()


class _Fixed:
    __slots__ = ("count", "index")

    def __init__(self) -> None:
        self.index = -1
        self.count = 0

    def try_take(self, now: float, limit: int, window: float) -> bool:
        index = math.floor(now / window)
        if index != self.index:
            self.index, self.count = index, 0
        if self.count >= limit:
            return False
        self.count += 1
        return True

    def give_back(self) -> None:
        self.count = max(0, self.count - 1)


class _Bucket:
    __slots__ = ("burst", "last", "tokens")

    def __init__(self, burst: int | None) -> None:
        self.burst = burst
        self.tokens = math.inf  # full, whatever the capacity turns out to be
        self.last = -math.inf

    def try_take(self, now: float, limit: int, window: float) -> bool:
        capacity = float(self.burst or limit)
        elapsed = max(0.0, now - self.last) if self.last > -math.inf else 0.0
        self.tokens = min(capacity, self.tokens + elapsed * limit / window)
        self.last = now
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        self.tokens += 1.0


def parse_model(text: str) -> tuple[str, int | None]:
    """``"bucket:3"`` -> ("bucket", 3); ``"token_bucket"`` -> ("bucket", None: burst = limit)."""
    name, _, burst = text.partition(":")
    if name == "token_bucket":
        return "bucket", None
    if name == "bucket":
        return "bucket", int(burst) if burst else _DEFAULT_BURST
    return name, None


class RateLimiter:
    """Accept-or-refuse decisions per ``(account, action)``.

    ``EmulatorConfig.window`` (alias ``limit_model``) picks how a real service might count:

    * ``sliding`` (default, strict): accepted only if fewer than ``limit`` requests were
      accepted in the trailing window, i.e. no window ``(t - W, t]`` ever holds more;
    * ``fixed``: at most ``limit`` per fixed window ``[k·W, (k+1)·W)`` of the emulator's clock
      (so two windows' worth can pass within ``W`` across a boundary);
    * ``bucket[:B]``: a token bucket of ``B`` tokens (default 2), refilled at ``limit / W``
      per second, starting full; ``token_bucket`` (the old name) is a bucket of ``limit`` tokens.

    A rate is ``EmulatorConfig.rates[action]``: requests per second, or ``"N/s"`` /
    ``"N/min"``; a key ``"ACCOUNT/ACTION"`` gives that account its own rate. ``time_scale``
    multiplies every limit. A refused request never consumes capacity, and nothing is queued:
    the caller answers 429 at once. :meth:`RateLimiter.refund` gives back an acceptance the
    handler later turned into a 429 (the in-flight cap, which the store counts).

    ``rates``, ``scale`` and ``strategy`` (the model) are read on every call so the limiter
    follows the live config. Actions absent from ``rates`` are not limited.
    """

    __slots__ = ("_rates", "_scale", "_states", "_strategy")

    def __init__(
        self,
        *,
        rates: Callable[[], Mapping[str, float | str]],
        scale: Callable[[], float],
        strategy: Callable[[], str],
    ) -> None:
        self._rates = rates
        self._scale = scale
        self._strategy = strategy
        self._states: dict[tuple[str, str, str], _Sliding | _Fixed | _Bucket] = {}

    def rate(self, action: str, account: str | None = None) -> Rate | None:
        """``action``'s rate for ``account`` now (scaled), or None when unlimited."""
        rates = self._rates()
        spec = rates.get(f"{account}/{action}") if account is not None else None
        if spec is None:
            spec = rates.get(action)
        if spec is None:
            return None
        rate = Rate.parse(spec)
        return Rate(max(1, math.floor(rate.limit * self._scale() + 1e-9)), rate.window)

    def capacity(self, action: str, account: str | None = None) -> int | None:
        """Requests per window for ``action`` now, or None when unlimited."""
        rate = self.rate(action, account)
        return None if rate is None else rate.limit

    def try_acquire(self, account: str, action: str, now: float) -> bool:
        """Take one place at emulator time ``now`` (seconds); False means answer 429."""
        rate = self.rate(action, account)
        if rate is None:
            return True
        model = self._strategy()
        key = (model, account, action)
        state = self._states.get(key)
        if state is None:
            name, burst = parse_model(model)
            if name == "sliding":
                state = _Sliding()
            elif name == "fixed":
                state = _Fixed()
            else:
                state = _Bucket(burst)
            self._states[key] = state
        return state.try_take(now, rate.limit, rate.window)

    def refund(self, account: str, action: str, now: float) -> None:
        """Give back the most recent acceptance (the request was refused after all)."""
        state = self._states.get((self._strategy(), account, action))
        if state is not None:
            state.give_back()

    def __repr__(self) -> str:
        return f"RateLimiter(model={self._strategy()!r}, states={len(self._states)})"
