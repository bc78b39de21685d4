"""``chenyu-assets serve``: run the emulator in the foreground until SIGINT/SIGTERM.

The options are declared in :mod:`chenyu_assets.cli` (so building the parser imports no
server code); this module turns them into a config and runs the server.

Settings, lowest precedence first: :class:`EmulatorConfig` defaults, ``--config FILE``
(a JSON object of config fields), the environment (``CHENYU_EMULATOR_ACCESS_KEY``,
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
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from chenyu_assets.emulator.config import Account, EmulatorConfig
from chenyu_assets.emulator.server import Emulator

__all__ = ["DEFAULT_PORT", "build_config", "main"]

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
