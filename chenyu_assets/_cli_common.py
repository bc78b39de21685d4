"""What every ``chenyu-assets`` command shares: argument types that check ranges while
parsing (a mistake is exit 2 before anything is sent), and the one-line report of a failure.

A failure is one line on stderr, ``error: ...``, naming the flag, file or variable; the
traceback only with ``-vv``. Text that may come from a server is shown as plain text (never
rich markup), with registered secrets and credential-shaped values masked and control
characters and terminal escapes (CSI, OSC window titles and clipboard writes) removed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Final, NoReturn, TextIO

from chenyu_assets._core.logs import redact_text, register_secret
from chenyu_assets.batch.items import SourceError
from chenyu_assets.errors import (
    ChenyuAssetsError,
    InvalidReferenceError,
    JournalError,
    JournalLockedError,
)
from chenyu_assets.refs import parse_asset_reference

__all__ = [
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_ITEMS_FAILED",
    "EXIT_OK",
    "EXIT_RETRYABLE",
    "EXIT_USAGE",
    "Parser",
    "UsageError",
    "at_least",
    "out_file",
    "plain",
    "positive_float",
    "readable_file",
    "register_environment_secrets",
    "report_failure",
]

EXIT_OK, EXIT_USAGE, EXIT_ITEMS_FAILED, EXIT_FATAL, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
#: an ingest whose only failures are retryable: rerunning the same command finishes it
EXIT_RETRYABLE = 5

# ESC-introduced sequences (7-bit and their 8-bit C1 forms): OSC/DCS/APC/PM/SOS strings up
# to BEL or ST, CSI with its parameters, and any other two-character escape.
_ESCAPES: Final = re.compile(
    r"(?:\x1b[\]P^_X]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b.?",
    re.DOTALL,
)


#: the environment variables that hold credentials (the clients' ``from_env`` read them)
CREDENTIAL_VARIABLES: Final = (
    "VOLC_ACCESSKEY",
    "VOLC_SECRETKEY",
    "VOLC_SESSION_TOKEN",
    "BYTEPLUS_ACCESSKEY",
    "BYTEPLUS_SECRETKEY",
    "BYTEPLUS_SESSION_TOKEN",
    "ARK_API_KEY",
    "CHENYU_API_KEY",
    "AVATAR_API_KEY",
    "CHENYU_EMULATOR_ACCESS_KEY",
    "CHENYU_EMULATOR_SECRET_KEY",
    "CHENYU_EMULATOR_API_KEY",
)


def register_environment_secrets() -> None:
    """Mask every credential of the environment in this process's output, including the
    ones the command at hand never sends (a server may echo any of them)."""
    for name in CREDENTIAL_VARIABLES:
        register_secret(os.environ.get(name))


class UsageError(Exception):
    """A mistake in the command line or in a file it names (exit 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line: ``error: ...`` and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {plain(message)} (see {self.prog} --help)\n")


def plain(text: str, *, multiline: bool = False) -> str:
    """``text`` safe for a terminal: secrets masked, escape sequences removed, other
    control and invisible format characters (bidi overrides...) shown as ``?``, line
    breaks kept only when ``multiline``."""
    text = redact_text(_ESCAPES.sub("", text))  # escapes first: one may split a secret
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (ch == "\n" and multiline):
            out.append(ch)
        elif ch.isspace():
            out.append(" ")
        else:
            out.append("?")
    return "".join(out)


# --- argument types (ranges checked while parsing) --------------------------------------------


def at_least(low: int) -> Callable[[str], int]:
    """An int argument type that refuses values below ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def asset_id_of(text: str) -> str:
    """An asset id, or the id of an ``asset://`` reference (UsageError if malformed)."""
    if text[:8].lower() != "asset://":
        return text
    try:
        return parse_asset_reference(text)
    except InvalidReferenceError as exc:
        raise UsageError(str(exc)) from None


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def out_file(text: str) -> Path:
    """A file to write: its folder must exist and the path must not be a folder."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: the folder {folder} is not writable")
    return path


def readable_file(text: str) -> Path:
    """An existing regular file this process can open (never blocks on a FIFO)."""
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc.strerror or 'cannot open'}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    finally:
        os.close(fd)
    return Path(text)


# --- the report of a failure -------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The first real failure inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _exit_code(exc: BaseException) -> tuple[int, str]:
    """The exit code for ``exc`` and the line to print (without ``error: ``)."""
    if isinstance(exc, UsageError | SourceError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, JournalError) and not isinstance(exc, JournalLockedError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ChenyuAssetsError):
        return EXIT_FATAL, str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_FATAL, f"{where}{exc.strerror or exc}"
    kind = type(exc).__name__
    return EXIT_FATAL, f"internal error ({kind}: {exc}); rerun with -vv for the traceback"


def report_failure(exc: BaseException, verbose: int, stream: TextIO | None = None) -> int:
    """Print the one ``error:`` line for ``exc`` (and the traceback with ``-vv``) and
    return the exit code."""
    stream = stream or sys.stderr
    leaf = _leaf(exc)
    code, line = _exit_code(leaf)
    if verbose >= 2:
        trace = "".join(traceback.format_exception(exc))
        stream.write(plain(trace, multiline=True))
    stream.write(f"error: {plain(line)}\n")
    stream.flush()
    return code
