""":class:`Emulator`: start, stop and steer one local emulator of all four API families;
and ``chenyu-assets serve``, which runs one in the foreground until SIGINT/SIGTERM.

The command's options are declared in :mod:`chenyu_assets.cli` (building the parser imports
no server code); :func:`main` turns them into a config and runs the server. Settings, lowest
precedence first: :class:`EmulatorConfig` defaults, ``--config FILE`` (a JSON object of
config fields), the environment (``CHENYU_EMULATOR_ACCESS_KEY``,
``CHENYU_EMULATOR_SECRET_KEY``, ``CHENYU_EMULATOR_API_KEY``: the first account's
credentials), then command-line options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import ssl
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

from aiohttp import web
from pydantic import ValidationError

from chenyu_assets._core.logs import get_logger
from chenyu_assets.emulator.config import Account, Audit, Clock, EmulatorConfig
from chenyu_assets.emulator.content import SampleSpec
from chenyu_assets.emulator.faults import FaultRule
from chenyu_assets.emulator.guard import GuardedSite, PeerCounter, http_logger
from chenyu_assets.emulator.pipeline import EmulatorState
from chenyu_assets.emulator.routes import build_app
from chenyu_assets.emulator.store import Persistence, SqlitePersistence
from chenyu_assets.spec import CHENYU_PREFIX, GATEWAY_PREFIX

__all__ = ["DEFAULT_PORT", "Emulator", "build_config", "main"]

logger = get_logger("chenyu_assets.emulator")

_DB_NAME = "emulator.sqlite3"


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
            self._state = EmulatorState.build(cfg, persist, blob_dir, self._clock_override)
            await self._serve(self._state)
        except BaseException:
            await self._teardown()
            raise

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


# -- chenyu-assets serve -------------------------------------------------------------------


_ENV = {
    "access_key": "CHENYU_EMULATOR_ACCESS_KEY",
    "secret_key": "CHENYU_EMULATOR_SECRET_KEY",
    "api_key": "CHENYU_EMULATOR_API_KEY",
}
DEFAULT_PORT = 8765


def build_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> EmulatorConfig:
    """Merge defaults, ``--config``, the environment and the options into a config."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {"port": DEFAULT_PORT}
    if args.config is not None:
        loaded = json.loads(Path(args.config).read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError("the --config file must hold a JSON object")
        data.update(loaded)
    options = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "time_scale": args.time_scale,
        "processing_delay": args.processing_delay,
    }
    data.update({k: v for k, v in options.items() if v is not None})
    creds = {field: env[name] for field, name in _ENV.items() if env.get(name)}
    creds.update(
        {
            field: value
            for field, value in (
                ("access_key", args.access_key),
                ("secret_key", args.secret_key),
                ("api_key", args.api_key),
            )
            if value
        }
    )
    if creds:
        accounts = [dict(a) for a in data.get("accounts") or [Account().model_dump()]]
        accounts[0].update(creds)
        data["accounts"] = accounts
    return EmulatorConfig.model_validate(data)


def exports(emu: Emulator) -> list[tuple[str, str]]:
    """The variables the clients' ``from_env`` read, pointing at this emulator."""
    account = emu.account
    return [
        ("ARK_BASE_URL", emu.url),
        ("VOLC_ACCESSKEY", account.access_key),
        ("VOLC_SECRETKEY", account.secret_key),
        ("CHENYU_BASE_URL", emu.chenyu_url),
        ("CHENYU_API_KEY", account.api_key),
        ("AVATAR_BASE_URL", emu.avatar_url),
        ("AVATAR_API_KEY", account.api_key),
    ]


def _banner(emu: Emulator, out: TextIO) -> None:
    account = emu.account
    lines = [
        f"chenyu-assets emulator listening on {emu.url}",
        f"  Chenyu v2        {emu.chenyu_url}",
        f"  Ark (AK/SK)      {emu.url}/?Action=<Action>&Version=2024-01-01",
        f"  Gateway          {emu.gateway_url}",
        f"  Private avatar   {emu.avatar_url}/v1/private-avatar/",
        f"  Control          {emu.url}/_emulator/audit | /config | /faults",
        f"Account '{account.name}' (local development credentials, printed on purpose):",
        f"  access key  {account.access_key}",
        f"  secret key  {account.secret_key}",
        f"  api key     {account.api_key}",
        "In another shell (or: eval \"$(... | grep '^export ')\"):",
        *(f"export {name}={shlex.quote(value)}" for name, value in exports(emu)),
        "# the Ark gateway style instead of AK/SK: "
        f"export ARK_BASE_URL={shlex.quote(emu.gateway_url)} "
        f"ARK_API_KEY={shlex.quote(account.api_key)} ARK_STYLE=gateway",
        "Press Ctrl+C to stop.",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


async def _run(config: EmulatorConfig, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(config) as emu:
            _banner(emu, out)
            await stop.wait()
        out.write("emulator stopped\n")
        out.flush()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the emulator; exit status 0 on a clean stop, 2 for bad settings."""
    out = out or sys.stdout
    try:
        config = build_config(args)
    except ValidationError as exc:  # never echo input values: they may be secrets
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        sys.stderr.write(f"chenyu-assets serve: invalid settings: {problems}\n")
        return 2
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"chenyu-assets serve: invalid settings: {exc}\n")
        return 2
    try:
        asyncio.run(_run(config, out))
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it
        return 130
    except OSError as exc:
        sys.stderr.write(f"chenyu-assets serve: cannot start: {exc}\n")
        return 4
    return 0
