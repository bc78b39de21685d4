"""Emulator settings: accounts, fault rules and the one config object.

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

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from chenyu_assets.limits import ACTION_RATES, MAX_PROCESSING, Rate

__all__ = [
    "DEMO_ACCESS_KEY",
    "DEMO_API_KEY",
    "DEMO_SECRET_KEY",
    "FAMILIES",
    "FAULT_KINDS",
    "Account",
    "EmulatorConfig",
    "Family",
    "FaultKind",
    "FaultRule",
]

#: The demo account's credentials. Fixed and public on purpose: the emulator is a local
#: development server, and tests and docs can rely on these strings.
DEMO_ACCESS_KEY = "AKLTZW11bGF0b3ItZGVtby1hY2Nlc3Mta2V5"
DEMO_SECRET_KEY = "ZW11bGF0b3ItZGVtby1zZWNyZXQta2V5LW5vdC1zZWNyZXQ="  # noqa: S105 - public demo
DEMO_API_KEY = "cy_0123456789abcdef0123456789abcdef"

Family = Literal["chenyu", "ark", "gateway", "avatar", "content"]
#: The request families the emulator records (``content`` is a signed-URL download).
FAMILIES: tuple[Family, ...] = ("chenyu", "ark", "gateway", "avatar", "content")

FaultKind = Literal[
    "http_error", "reset", "close", "truncate", "hang", "latency", "list_lag", "stuck"
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "http_error",
    "reset",
    "close",
    "truncate",
    "hang",
    "latency",
    "list_lag",
    "stuck",
)


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


class FaultRule(BaseModel):
    """One injected misbehaviour, matched per request after authentication.

    ``kind``:
      * ``http_error`` answer ``status`` with a family error envelope (``body="json"``) or an
        HTML page (``body="html"``), plus ``Retry-After: retry_after`` when set;
      * ``reset`` abort the TCP connection (RST) without an answer;
      * ``close`` send the status line and headers (full ``Content-Length``) then close;
      * ``truncate`` send the headers and half of the JSON body, then close;
      * ``hang`` never answer (until the client goes away or the emulator stops);
      * ``latency`` sleep ``delay`` seconds, then answer normally;
      * ``list_lag`` ListAssets / ListAssetGroups hide items created in the last ``delay`` s;
      * ``stuck`` the asset created by this CreateAsset stays ``Processing`` forever.

    ``phase="after"`` commits the request's effect first and then misbehaves (for
    http_error, reset, close, truncate, hang, latency). ``max_count`` bounds how often the
    rule fires; ``probability`` is drawn from the emulator's one seeded RNG.
    """

    model_config = ConfigDict(extra="forbid")

    action: str = "*"
    kind: FaultKind = "http_error"
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    phase: Literal["before", "after"] = "before"
    status: int = Field(default=503, ge=100, le=599)
    body: Literal["json", "html"] = "json"
    retry_after: str | None = None
    delay: float = Field(default=0.0, ge=0.0)
    max_count: int | None = Field(default=None, ge=0)
    family: Family | None = None

    @field_validator("retry_after")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and any(ch in value for ch in "\r\n\0"):
            raise ValueError("retry_after must be a single header line")
        return value


def _default_accounts() -> list[Account]:
    return [Account()]


def _default_rates() -> dict[str, float | str]:
    return dict(ACTION_RATES)


class EmulatorConfig(BaseModel):
    """All emulator settings; see the module docstring for how time is scaled.

    The last group of fields bounds what a stranger can make the server spend when it is
    reachable from elsewhere (``chenyu-assets serve --host 0.0.0.0``). Each default is safe
    for a shared machine; each is validated (positive, with a ceiling where a bigger value
    would defeat the bound):

    * ``max_sample_pixels`` (4096 x 4096): a bigger generated image is a 400;
    * ``sample_cache_bytes`` (64 MiB): the generated-media cache, LRU, in bytes;
    * ``header_timeout`` (15 s): time to send a complete request header block, else 408;
    * ``body_idle_timeout`` (60 s): longest wait for the next byte of a request body, else
      408;
    * ``keepalive_timeout`` (75 s): an idle kept-alive connection is closed after it;
    * ``max_connections_per_peer`` (64) / ``max_connections_per_loopback`` (2048): open
      connections per remote address (IPv6: per ``/64``), else 503 and closed;
    * ``max_multipart_parts`` (16): parts of one upload form, else 400;
    * ``max_form_field_bytes`` (16 KiB): non-file bytes of one upload form, else 413.

    In a ``serve --config FILE`` they are plain JSON fields.
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
    #: The server's rate-limit model (alias ``limit_model``): ``sliding`` (strict, default),
    #: ``fixed`` (windows aligned to the emulator clock), ``bucket`` / ``bucket:B`` (token
    #: bucket of B tokens, default 2), ``token_bucket`` (a bucket of ``limit`` tokens).
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
