"""``chenyu-assets serve`` in its own process, for tests that drive real subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import NamedTuple

from chenyu_assets.emulator import DEMO_ACCESS_KEY, DEMO_API_KEY, DEMO_SECRET_KEY


class Served(NamedTuple):
    url: str
    #: the environment a CLI process needs to reach the server as the demo account
    env: dict[str, str]


def demo_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "VOLC_ACCESSKEY": DEMO_ACCESS_KEY,
        "VOLC_SECRETKEY": DEMO_SECRET_KEY,
        "ARK_BASE_URL": url,
        "CHENYU_API_KEY": DEMO_API_KEY,
        "CHENYU_BASE_URL": url + "/api/open/v2",
    }


@contextlib.contextmanager
def serve(*args: str) -> Iterator[Served]:
    """Run ``chenyu-assets serve --port 0 ARGS``; stop it (SIGTERM, then kill) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chenyu_assets.cli", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), first
        yield Served(url, demo_env(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``chenyu-assets ARGS`` started in its own process (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "chenyu_assets.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
