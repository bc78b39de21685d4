"""The ``chenyu-assets`` command line.

Each subcommand lives in a ``_cmd_<name>`` function registered in ``_build_parser``.
Exit codes: 0 success, 2 usage error (a flag, a source, a journal or an --out path; ranges
are checked while parsing), 3 some items failed, 4 fatal stop, 130 interrupted. Every
failure is one ``error:`` line on stderr (see ``_cli_common``); ``-vv`` adds the traceback.
"""

from __future__ import annotations

import argparse
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
    register_environment_secrets,
    report_failure,
)
from chenyu_assets._cli_help import add_global_flags, finish
from chenyu_assets._cli_ingest import add_ingest
from chenyu_assets._cli_progress import configure_logging
from chenyu_assets._cli_queue import add_enqueue
from chenyu_assets._cli_status import add_status
from chenyu_assets._version import __version__

__all__ = ["EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_ITEMS_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chenyu-assets",
        description="Move media into Chenyu / Volcengine Ark / BytePlus asset libraries.",
    )
    parser.add_argument("--version", action="version", version=f"chenyu-assets {__version__}")
    add_global_flags(parser, top=True)
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND"),
    )
    _add_serve(commands)
    add_ingest(commands)
    add_enqueue(commands)
    add_status(commands)
    add_commands(commands)
    finish(parser, commands)
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
    serve.add_argument(
        "--data-dir", type=Path, help="keep state here across restarts (default: in memory)"
    )
    serve.add_argument(
        "--config", type=Path, help="JSON file of emulator config fields (default: none)"
    )
    serve.add_argument("--access-key", help="the demo account's access key (default: the demo's)")
    serve.add_argument("--secret-key", help="the demo account's secret key (default: the demo's)")
    serve.add_argument("--api-key", help="the demo account's Bearer API key (default: the demo's)")
    # the emulator's own config checks the values (exit 2, naming the field)
    serve.add_argument(
        "--time-scale", type=float, help="run the service N times faster (default 1)"
    )
    serve.add_argument(
        "--processing-delay",
        type=float,
        help="seconds an asset stays Processing (default: the emulator config's)",
    )
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from chenyu_assets.emulator.serve import main as serve_main

    return serve_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    register_environment_secrets()
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a usage mistake (already printed), --help or --version
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    configure_logging(args.verbose, args.log_format)
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
