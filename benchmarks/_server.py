"""The emulator as a separate process (``chenyu-assets serve --port 0``), for benchmarks.

A benchmark's client and the server must not share one event loop (nor, on a 2-core machine,
one core), so the scripts start the emulator in its own process, read the URL from the
first line it prints, and steer it over its loopback control endpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from chenyu_assets.emulator import Audit
from chenyu_assets.emulator.config import DEMO_ACCESS_KEY, DEMO_API_KEY, DEMO_SECRET_KEY

_START_TIMEOUT = 20.0
_REPO = Path(__file__).resolve().parent.parent


def revision() -> str:
    """The commit measured, ``+dirty`` when ``chenyu_assets/`` has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "chenyu_assets"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def account(n: int) -> dict[str, str]:
    """A distinct emulator account (one per benchmark row keeps rows' limits apart)."""
    if n == 0:
        return {
            "name": "demo",
            "access_key": DEMO_ACCESS_KEY,
            "secret_key": DEMO_SECRET_KEY,
            "api_key": DEMO_API_KEY,
        }
    return {
        "name": f"bench{n}",
        "access_key": f"AKLTYmVuY2gtYWNjZXNzLWtleS0{n:04d}",
        "secret_key": f"YmVuY2gtc2VjcmV0LWtleS1ub3Qtc2VjcmV0-{n:04d}",
        "api_key": f"cy_bench{n:024x}",
    }


class ServerProcess:
    """``with ServerProcess(config) as server:`` a running emulator subprocess bound to
    127.0.0.1; ``server.url`` is its base URL, ``server.pid`` its process id. ``config`` is
    a dict of :class:`EmulatorConfig` fields (passed with ``--config``). Stopped with
    SIGTERM (then SIGKILL after 10 s); its temporary files are removed."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = {"host": "127.0.0.1", **(config or {})}
        self.url = ""
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> ServerProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="chenyu-bench-")
        cfg_path = Path(self._tmp.name) / "emulator.json"
        cfg_path.write_text(json.dumps(self.config), encoding="utf-8")
        cmd = [sys.executable, "-m", "chenyu_assets.cli", "serve", "--port", "0"]
        cmd += ["--host", "127.0.0.1", "--config", str(cfg_path)]
        # The accounts come from the config only: the environment's would override them.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("ACCESS_KEY", "SECRET_KEY", "API_KEY"):
            env.pop(f"CHENYU_EMULATOR_{name}", None)
        out_path = Path(self._tmp.name) / "stdout.txt"
        with out_path.open("w", encoding="utf-8") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env
            )
        self.pid = self._proc.pid
        deadline = time.monotonic() + _START_TIMEOUT
        first = ""
        while time.monotonic() < deadline and self._proc.poll() is None:
            text = out_path.read_text(encoding="utf-8", errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                break
            time.sleep(0.05)
        if "listening on " not in first:
            text = out_path.read_text(encoding="utf-8", errors="replace")
            self.stop()
            raise RuntimeError(f"the emulator did not start: {text.strip()[-500:]!r}")
        # The first line is "chenyu-assets emulator listening on http://127.0.0.1:PORT".
        self.url = first.rsplit("listening on ", 1)[1].strip()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            tmp.cleanup()

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            body: bytes = resp.read()
            return body

    def audit(self) -> Audit:
        return Audit.model_validate_json(self._get("/_emulator/audit"))

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()
