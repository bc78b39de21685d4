""":class:`Emulator`: start, stop and steer one local emulator of all four API families."""

from __future__ import annotations

import secrets
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from chenyu_assets._core.logs import get_logger, register_secret
from chenyu_assets.emulator.audit import Audit, AuditLog
from chenyu_assets.emulator.config import Account, Clock, EmulatorConfig, RateLimiter
from chenyu_assets.emulator.content import SampleMedia, SampleSpec, UrlSigner
from chenyu_assets.emulator.faults import FaultEngine, FaultRule
from chenyu_assets.emulator.guard import GuardedSite, PeerCounter, http_logger
from chenyu_assets.emulator.pipeline import EmulatorState
from chenyu_assets.emulator.processing import Fetcher, Processor
from chenyu_assets.emulator.routes import build_app
from chenyu_assets.emulator.store import Persistence, SqlitePersistence, Store
from chenyu_assets.spec import CHENYU_PREFIX, GATEWAY_PREFIX

__all__ = ["Emulator"]

logger = get_logger("chenyu_assets.emulator")

_DB_NAME = "emulator.sqlite3"
_SECRET_META = "url_signing_secret"  # noqa: S105 - a metadata key name


class Emulator:
    """A local, strict aiohttp server of the Chenyu, Ark, gateway and private-avatar APIs.

    ::

        async with Emulator(time_scale=10) as emu:
            emu.url, emu.chenyu_url, emu.gateway_url, emu.avatar_url, emu.account
            emu.set_faults([FaultRule(action="GetAsset", kind="http_error", status=503)])
            audit = emu.audit()

    Pass an :class:`EmulatorConfig`, keyword overrides of its fields, or both.
    ``clock`` injects a custom :class:`Clock` (tests); ``ssl_context`` serves HTTPS
    (``emu.url`` is then ``https://...``), e.g. with a self-signed certificate to test
    that clients verify TLS.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **overrides: Any,
    ) -> None:
        if config is None:
            config = EmulatorConfig(**overrides)
        elif overrides:
            config = EmulatorConfig.model_validate({**config.model_dump(), **overrides})
        self._config = config
        self._clock_override = clock
        self._ssl_context = ssl_context
        self._state: EmulatorState | None = None
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._port = 0
        self._final_audit: Audit | None = None
        self._root: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the server and start processing (idempotent)."""
        if self._state is not None:
            return
        cfg = self._config
        if cfg.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="chenyu-emulator-")
            root = Path(self._tmp.name)
            persist = Persistence()
        else:
            root = Path(cfg.data_dir)
            root.mkdir(parents=True, exist_ok=True)
            persist = SqlitePersistence(root / _DB_NAME)
        self._root = root
        blob_dir = root / "blobs"
        blob_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._state = self._build_state(cfg, persist, blob_dir)
            await self._serve(self._state)
        except BaseException:
            await self._teardown()
            raise

    def _build_state(
        self, cfg: EmulatorConfig, persist: Persistence, blob_dir: Path
    ) -> EmulatorState:
        for account in cfg.accounts:  # masked in every log record of the package
            register_secret(account.secret_key)
            register_secret(account.api_key)
        store = Store(persist)
        secret_hex = store.meta(_SECRET_META)
        if secret_hex is None:
            secret_hex = secrets.token_hex(32)
            store.set_meta(_SECRET_META, secret_hex)
        signer = UrlSigner(bytes.fromhex(secret_hex))
        clock = self._clock_override or Clock(
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
        return EmulatorState(
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

    async def _serve(self, state: EmulatorState) -> None:
        cfg = state.config
        # no access log; aiohttp's own messages go to a quiet, redacting logger (guard.py)
        handler_args: dict[str, Any] = {
            "access_log": None,
            "logger": http_logger(),
            "keepalive_timeout": cfg.keepalive_timeout,
        }
        self._runner = web.AppRunner(
            build_app(state), shutdown_timeout=cfg.shutdown_timeout, **handler_args
        )
        await self._runner.setup()
        site = GuardedSite(
            self._runner,
            cfg.host,
            cfg.port,
            peers=PeerCounter(
                lambda: cfg.max_connections_per_peer, lambda: cfg.max_connections_per_loopback
            ),
            header_timeout=lambda: cfg.header_timeout,
            handler_args=handler_args,
            ssl_context=self._ssl_context,
        )
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        host = cfg.host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - we only build a URL here
            host = "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        scheme = "http" if self._ssl_context is None else "https"
        state.base_url = f"{scheme}://{shown}:{self._port}"
        state.fetcher.local_authorities = {
            f"{name}:{self._port}".lower() for name in {shown, "127.0.0.1", "localhost", "[::1]"}
        }
        state.processor.start()
        logger.info("emulator listening on %s", state.base_url)

    async def stop(self) -> None:
        """Stop serving, cancel processing, close storage (idempotent)."""
        await self._teardown()

    async def _teardown(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.shutdown.set()
            await state.processor.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if state is not None:
            self._final_audit = state.snapshot()
            state.store.close()
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            tmp.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses and accounts ---------------------------------------------------------------

    def _running(self) -> EmulatorState:
        if self._state is None:
            raise RuntimeError("the emulator is not running: use 'async with Emulator()'")
        return self._state

    @property
    def url(self) -> str:
        """``http://host:port`` (``https`` with an ``ssl_context``): the official Ark
        endpoint (``POST {url}/?Action=...``)."""
        return self._running().base_url

    @property
    def port(self) -> int:
        """The bound TCP port."""
        self._running()
        return self._port

    @property
    def data_dir(self) -> Path:
        """Where state lives: ``config.data_dir``, or the temporary directory in use."""
        self._running()
        if self._root is None:  # pragma: no cover - set by start()
            raise RuntimeError("the emulator is not running")
        return self._root

    @property
    def chenyu_url(self) -> str:
        """Base URL of the Chenyu open API v2."""
        return self.url + CHENYU_PREFIX

    @property
    def gateway_url(self) -> str:
        """Base URL of the overseas gateway (``{gateway_url}/CreateAsset``)."""
        return self.url + GATEWAY_PREFIX

    @property
    def avatar_url(self) -> str:
        """Base URL of the private-avatar proxy (paths ``/v1/private-avatar/...``)."""
        return self.url

    @property
    def account(self) -> Account:
        """The first (default) account."""
        return self._config.accounts[0]

    @property
    def accounts(self) -> list[Account]:
        """Every account."""
        return list(self._config.accounts)

    @property
    def config(self) -> EmulatorConfig:
        """The live config (assignments take effect at once)."""
        return self._config

    # -- steering --------------------------------------------------------------------------

    def audit(self) -> Audit:
        """A snapshot of requests, state and counters (after :meth:`stop`: the final one)."""
        if self._state is None and self._final_audit is not None:
            return self._final_audit
        return self._running().snapshot()

    def set_faults(self, rules: list[FaultRule]) -> None:
        """Replace the fault rules (fire counters restart)."""
        state = self._running()
        state.faults.set_rules(rules)
        self._config.faults = list(rules)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.set_faults([])

    def advance_time(self, seconds: float) -> None:
        """Jump emulated time forward (asset TTLs, signed URLs, timestamps)."""
        self._running().clock.advance(seconds)

    def media_url(
        self,
        kind: Literal[
            "png", "jpeg", "webp", "gif", "bmp", "tiff", "mp4", "mov", "wav", "html", "txt"
        ] = "png",
        width: int = 800,
        height: int = 1200,
        *,
        duration: float = 5.0,
        fps: float = 30.0,
    ) -> str:
        """A URL on the emulator serving generated media; CreateAsset resolves it locally."""
        spec = SampleSpec(kind=kind, width=width, height=height, duration=duration, fps=fps)
        self._running().samples.check(spec)
        return self.url + spec.path()

    def __repr__(self) -> str:
        where = self._state.base_url if self._state else "stopped"
        return f"Emulator({where})"
