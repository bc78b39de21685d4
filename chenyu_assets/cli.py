"""The ``chenyu-assets`` command line.

Each subcommand lives in a ``_cmd_<name>`` function registered in ``_build_parser``.
Exit codes: 0 success, 2 usage error, 3 some items failed, 4 fatal stop, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chenyu_assets._version import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_ITEMS_FAILED = 3
EXIT_FATAL = 4
EXIT_INTERRUPTED = 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chenyu-assets",
        description="Move media into Chenyu / Volcengine Ark / BytePlus asset libraries.",
    )
    parser.add_argument("--version", action="version", version=f"chenyu-assets {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    result: int = handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
