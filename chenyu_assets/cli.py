"""The ``chenyu-assets`` command line.

Each subcommand lives in a ``_cmd_<name>`` function registered in ``_build_parser``.
Exit codes: 0 success, 2 usage error (a flag, a source, a journal or an --out path; ranges
are checked while parsing), 3 some items failed, 4 fatal stop, 130 interrupted. Every
failure is one ``error:`` line on stderr (see ``_cli_common``); ``-vv`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from chenyu_assets._cli_commands import add_commands
from chenyu_assets._cli_common import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    plain,
    register_environment_secrets,
    report_failure,
)
from chenyu_assets._cli_ingest import add_ingest
from chenyu_assets._core.logs import RedactingFilter
from chenyu_assets._version import __version__

__all__ = ["EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_ITEMS_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chenyu-assets",
        description="Move media into Chenyu / Volcengine Ark / BytePlus asset libraries.",
    )
    parser.add_argument("--version", action="version", version=f"chenyu-assets {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND"),
    )
    _add_serve(commands)
    add_ingest(commands)
    add_commands(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the local emulator of all four APIs",
        description="Run the local emulator in the foreground until Ctrl+C / SIGTERM. "
        "Credentials also come from CHENYU_EMULATOR_ACCESS_KEY / _SECRET_KEY / _API_KEY.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8765; 0 picks one)")
    serve.add_argument("--data-dir", type=Path, help="keep state here across restarts")
    serve.add_argument("--config", type=Path, help="JSON file of emulator config fields")
    serve.add_argument("--access-key", help="the demo account's access key")
    serve.add_argument("--secret-key", help="the demo account's secret key")
    serve.add_argument("--api-key", help="the demo account's Bearer API key")
    # the emulator's own config checks the values (exit 2, naming the field)
    serve.add_argument("--time-scale", type=float, help="run the service N times faster")
    serve.add_argument("--processing-delay", type=float, help="seconds an asset stays Processing")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from chenyu_assets.emulator.serve import main as serve_main

    return serve_main(args)


def _configure_logging(verbosity: int) -> None:
    """``-v``: INFO, ``-vv``: DEBUG of the ``chenyu_assets`` loggers, on stderr. The
    handler redacts too (the loggers already do), so nothing that reaches it shows a
    credential, a signature or a signed URL's query values."""
    if verbosity <= 0:
        return
    logger = logging.getLogger("chenyu_assets")
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    if any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return  # main() called again in this process
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The ``-v`` handler (its own class, so a second ``main()`` does not add another);
    lines are shown as plain text (no terminal escapes from a server's message)."""

    def format(self, record: logging.LogRecord) -> str:
        return plain(super().format(record), multiline=True)


def main(argv: Sequence[str] | None = None) -> int:
    register_environment_secrets()
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a usage mistake (already printed), --help or --version
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    _configure_logging(args.verbose)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        result: int = handler(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line per mistake; the traceback only with -vv
        return report_failure(exc, args.verbose)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
