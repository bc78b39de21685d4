"""The CLI's help: defaults shown for every argument, each command's examples and the
environment variables it reads (its epilog), and the global flags accepted after the
subcommand too (``chenyu-assets ingest DIR -v`` is ``chenyu-assets -v ingest DIR``)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any, Final

__all__ = ["EPILOGS", "Formatter", "add_global_flags", "finish"]

_ARK = "VOLC_ACCESSKEY, VOLC_SECRETKEY (or BYTEPLUS_*), VOLC_SESSION_TOKEN, ARK_BASE_URL, "
_ARK += "ARK_REGION, ARK_PROJECT_NAME; gateway style: ARK_API_KEY, ARK_STYLE"
_CHENYU = "CHENYU_API_KEY, CHENYU_BASE_URL"
_TLS = "SSL_CERT_FILE (extra CA certificates)"


def _epilog(examples: tuple[str, ...], env: str) -> str:
    lines = ["examples:", *(f"  {e}" for e in examples), "", "environment:"]
    lines += [f"  {part}" for part in env.split("; ")]
    return "\n".join(lines)


EPILOGS: Final = {
    "serve": _epilog(
        (
            "chenyu-assets serve --port 8765",
            "chenyu-assets serve --data-dir ./emu --time-scale 10",
            "eval \"$(chenyu-assets serve --port 8765 | grep '^export ')\"   # in a 2nd shell",
        ),
        "CHENYU_EMULATOR_ACCESS_KEY, CHENYU_EMULATOR_SECRET_KEY, CHENYU_EMULATOR_API_KEY "
        "(the demo account's credentials)",
    ),
    "ingest": _epilog(
        (
            "chenyu-assets ingest photos/ --group product-shots",
            "chenyu-assets ingest list.csv --group-id group-2025 --out results.jsonl --json",
            "chenyu-assets ingest photos/ --group test --dry-run",
            "chenyu-assets ingest photos/ --emulator --stats 5 --log-format json",
            "chenyu-assets ingest /mnt/shared/photos --queue redis://redis:6379/0 --group-id "
            "group-2025   # every machine: enqueue once, then work",
            "chenyu-assets ingest --queue redis://redis:6379/0 --out w1.jsonl   # join the job",
        ),
        f"{_ARK}; {_CHENYU} (local files staged through Chenyu); AWS_* (--stage s3://); {_TLS}",
    ),
    "enqueue": _epilog(
        (
            "chenyu-assets enqueue /mnt/shared/photos --queue redis://redis:6379/0 "
            "--group-id group-2025",
            "chenyu-assets enqueue manifest.csv --queue redis://redis:6379/0 --job batch-7",
        ),
        "none (writes the job to Redis, sends nothing to the service)",
    ),
    "status": _epilog(
        (
            "chenyu-assets status .chenyu/group-2025.db",
            "chenyu-assets status --queue redis://redis:6379/0 --json   # a queued job",
            "chenyu-assets status --group-id group-2025 --json",
            "chenyu-assets status --group product-shots --limit 0",
        ),
        "none (reads the local journal only)",
    ),
    "upload": _epilog(
        ("chenyu-assets upload a.png b.mp4", "chenyu-assets upload a.png --ttl-hours 2 --show-url"),
        f"{_CHENYU}; {_TLS}",
    ),
    "get": _epilog(
        (
            "chenyu-assets get asset-20250101-abc",
            "chenyu-assets get asset://asset-20250101-abc",
            "chenyu-assets get asset_0123456789abcdef0123456789abcdef --show-url",
        ),
        f"{_ARK}; {_CHENYU} (for asset_... ids)",
    ),
    "list": _epilog(
        (
            "chenyu-assets list --group-id group-2025",
            "chenyu-assets list --group-id group-2025 --status failed --limit 10",
        ),
        _ARK,
    ),
    "groups": _epilog(
        ("chenyu-assets groups", "chenyu-assets groups --create product-shots"), _ARK
    ),
    "delete": _epilog(
        (
            "chenyu-assets delete asset-1 asset://asset-2",
            "chenyu-assets delete --group-id group-2025 --dry-run",
            "chenyu-assets delete --group-id group-2025 --yes   # no prompt (scripts)",
        ),
        _ARK,
    ),
}


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; ``(default: X)`` after each help that has a default and
    does not name it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def add_global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v`` and ``--log-format``; on a subcommand they default to SUPPRESS, so a value
    given before the subcommand is kept."""
    verbose: Any = 0 if top else argparse.SUPPRESS
    log_format: Any = "text" if top else argparse.SUPPRESS
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="log more: -v each action and item outcome (INFO), -vv debug with tracebacks",
        default=verbose,
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text, or JSON lines (time, level, logger, message, action, "
        "request id, item key, asset id; always redacted); json logs at INFO at least",
        default=log_format,
    )


def finish(parser: argparse.ArgumentParser, commands: argparse._SubParsersAction[Any]) -> None:
    """Give every subcommand the formatter, its epilog and the global flags."""
    parser.formatter_class = Formatter
    for name, sub in commands.choices.items():
        sub.formatter_class = Formatter
        if sub.description:  # raw text (for the examples): wrapped here instead
            sub.description = textwrap.fill(sub.description, 88)
        sub.epilog = EPILOGS.get(name, sub.epilog)
        add_global_flags(sub, top=False)
