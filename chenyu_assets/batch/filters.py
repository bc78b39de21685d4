"""``--include`` / ``--exclude`` for directory walks, with rclone-like glob semantics.

A pattern is matched against the file's path relative to the walked root, with ``/``
separators (``2024/trip/a.jpg``):

- ``*`` matches any run of characters except ``/``; ``**`` matches anything, ``/`` included;
  ``?`` one character except ``/``; ``[abc]`` / ``[!abc]`` / ``[a-z]`` a character class;
  ``{jpg,png}`` one of the alternatives; ``\\`` escapes the next character.
- A pattern that starts with ``/`` is anchored at the root (``/raw/**`` is only the top-level
  ``raw``); any other pattern matches at the end of the path, on whole path elements
  (``*.jpg`` matches ``a.jpg`` and ``x/y/a.jpg``; ``b.jpg`` does not match ``ab.jpg``).
- A pattern that ends with ``/`` names a directory and everything under it (``cache/`` is
  ``cache/**``).
- Matching is case-sensitive unless ``ignore_case`` (``--ignore-case``).

Order: every ``--exclude`` is tried first, in the order given, then every ``--include`` in
order; the first pattern that matches decides. A path no pattern matches is included when no
``--include`` was given, excluded otherwise. So ``--include '*.jpg' --exclude 'tmp/**'`` takes
every JPEG outside ``tmp/``. A directory that an exclude pattern ending in ``/**`` (or ``/``)
matches is not even listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PathFilter", "glob_regex"]


def _translate(pattern: str, i: int = 0, *, in_brace: bool = False) -> tuple[str, int]:
    out: list[str] = []
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
            else:
                out.append("[^/]*")
                i += 1
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith(("[!", "[^"), i) else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
                continue
        elif c == "{":
            alternatives: list[str] = []
            i += 1
            while True:
                part, i = _translate(pattern, i, in_brace=True)
                alternatives.append(part)
                if i >= n:
                    raise ValueError(f"unbalanced {{ in pattern {pattern!r}")
                if pattern[i] == "}":
                    i += 1
                    break
                i += 1  # the comma
            out.append("(?:" + "|".join(alternatives) + ")")
            continue
        elif in_brace and c in ",}":
            return "".join(out), i
        else:
            out.append(re.escape(c))
        i += 1
    if in_brace:
        raise ValueError(f"unbalanced {{ in pattern {pattern!r}")
    return "".join(out), i


def glob_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """The compiled regular expression of one pattern (see the module docstring)."""
    if not pattern or pattern == "/":
        raise ValueError("an empty pattern matches nothing; give a glob such as '*.jpg'")
    anchored = pattern.startswith("/")
    body = pattern[1:] if anchored else pattern
    if body.endswith("/"):
        body += "**"
    regex, _ = _translate(body)
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(prefix + regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True)
class PathFilter:
    """The include/exclude rules of one walk (see the module docstring)."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    ignore_case: bool = False
    _rules: list[tuple[bool, re.Pattern[str]]] = field(init=False, repr=False, compare=False)
    _prune: list[re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = [(False, glob_regex(p, ignore_case=self.ignore_case)) for p in self.exclude]
        rules += [(True, glob_regex(p, ignore_case=self.ignore_case)) for p in self.include]
        prune = []
        for p in self.exclude:
            for tail in ("/**", "/"):
                if p.endswith(tail) and p != tail:
                    prune.append(glob_regex(p[: -len(tail)], ignore_case=self.ignore_case))
                    break
        object.__setattr__(self, "_rules", rules)
        object.__setattr__(self, "_prune", prune)

    @property
    def active(self) -> bool:
        """False when there are no rules (everything is wanted)."""
        return bool(self._rules)

    def wants(self, rel: str) -> bool:
        """Whether the file at ``rel`` (relative, ``/`` separators) is part of the walk."""
        for include, regex in self._rules:
            if regex.fullmatch(rel):
                return include
        return not self.include

    def prunes(self, rel_dir: str) -> bool:
        """Whether every file under directory ``rel_dir`` is excluded (it need not be listed)."""
        return any(regex.fullmatch(rel_dir) for regex in self._prune)
