"""Strict reading of Ark request parameters (PascalCase JSON, or flattened GET queries).

Every getter raises :class:`~chenyu_assets.emulator.envelopes.ApiError`:
``MissingParameter.<Field>`` when a required field is absent (or null) and
``InvalidParameter.<Field>`` when it has the wrong type or value. Nested fields are named
with dots (``InvalidParameter.Filter.Statuses``). Unknown fields are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chenyu_assets.emulator.envelopes import ApiError, invalid, missing

__all__ = ["MAX_DEPTH", "Params", "load_json", "parse_json_body", "unflatten_query"]

#: Fields a flattened query carries as numbers.
_INT_FIELDS = frozenset({"PageNumber", "PageSize", "MaxResults"})


#: Deepest nesting of objects/arrays a request body (or a dotted query key) may have.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (iterative: a deep value cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(body: bytes) -> Any:
    """``body`` parsed as JSON; ValueError (with a message safe to answer) otherwise.

    Invalid UTF-8 or JSON, nesting past :data:`MAX_DEPTH` (including the parser's own
    recursion limit) and integers too long to convert are all a ValueError, never a
    RecursionError that would become a 500.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not valid JSON") from None
    if _depth(data) > MAX_DEPTH:
        raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels")
    return data


def parse_json_body(body: bytes) -> Params:
    """A JSON object body (an empty body is ``{}``)."""
    if not body.strip():
        return Params({})
    try:
        data = load_json(body)
    except ValueError as exc:
        message = str(exc).replace("the body", "the request body")
        raise ApiError("InvalidParameter", message) from None
    if not isinstance(data, dict):
        raise ApiError("InvalidParameter", "the request body must be a JSON object")
    return Params(data)


def unflatten_query(pairs: Iterable[tuple[str, str]]) -> Params:
    """Turn ``Filter.Name=x&Filter.GroupIds.1=a&PageSize=10`` into nested parameters."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        if key in ("Action", "Version"):
            continue
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise ApiError("InvalidParameter", f"the query parameter {key[:64]} nests too deeply")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ApiError("InvalidParameter", f"conflicting query parameter {key}")
            node = child
        leaf: Any = value
        if parts[-1] in _INT_FIELDS and _is_index(value.removeprefix("-")):
            leaf = int(value)
        node[parts[-1]] = leaf
    return Params(_lists(root))


def _is_index(text: str) -> bool:
    """ASCII digits short enough for ``int()`` (``"²"`` and 5,000-digit keys are not)."""
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


def _lists(node: dict[str, Any]) -> dict[str, Any]:
    """``{"1": a, "2": b}`` children become lists (``GroupIds.1``, ``GroupIds.2``)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            if value and all(_is_index(k) for k in value):
                out[key] = [value[k] for k in sorted(value, key=int)]
            else:
                out[key] = _lists(value)
        else:
            out[key] = value
    return out


class Params:
    """Typed, validating access to one parameter object."""

    __slots__ = ("_data", "_prefix")

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self._data = data
        self._prefix = prefix

    def _name(self, field: str) -> str:
        return f"{self._prefix}{field}"

    def raw(self, field: str) -> Any:
        """The value as sent (None when absent)."""
        return self._data.get(field)

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of the raw parameters."""
        return dict(self._data)

    def has(self, field: str) -> bool:
        """True when the field is present and not null."""
        return self._data.get(field) is not None

    def text(
        self,
        field: str,
        *,
        required: bool = False,
        max_len: int | None = None,
        default: str | None = None,
        allow_empty: bool = True,
    ) -> str | None:
        """A string field."""
        value = self._data.get(field)
        if value is None:
            if required:
                raise missing(self._name(field))
            return default
        if not isinstance(value, str):
            raise invalid(self._name(field), "must be a string")
        if not allow_empty and not value.strip():
            raise invalid(self._name(field), "must not be empty")
        if max_len is not None and len(value) > max_len:
            raise invalid(self._name(field), f"must be at most {max_len} characters")
        if "\0" in value:
            raise invalid(self._name(field), "must not contain NUL")
        return value

    def need_text(self, field: str, *, max_len: int | None = None) -> str:
        """A required, non-empty string field."""
        value = self.text(field, required=True, max_len=max_len, allow_empty=False)
        if value is None:  # pragma: no cover - required=True never returns None
            raise missing(self._name(field))
        return value

    def enum(
        self, field: str, choices: Sequence[str], *, required: bool = False, default: str | None
    ) -> str | None:
        """A string field limited to ``choices`` (exact case)."""
        value = self.text(field, required=required, default=default)
        if value is not None and value not in choices:
            raise invalid(self._name(field), f"must be one of {', '.join(choices)}")
        return value

    def integer(self, field: str, *, default: int, lo: int, hi: int) -> int:
        """An integer field within ``[lo, hi]``."""
        value = self._data.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(self._name(field), "must be an integer")
        if not lo <= value <= hi:
            raise invalid(self._name(field), f"must be between {lo} and {hi}")
        return value

    def text_list(self, field: str, *, max_items: int = 100) -> list[str] | None:
        """A list of strings (None when absent)."""
        value = self._data.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(self._name(field), "must be a list of strings")
        if len(value) > max_items:
            raise invalid(self._name(field), f"must have at most {max_items} items")
        return list(value)

    def obj(self, field: str) -> Params:
        """A nested object (empty when absent)."""
        value = self._data.get(field)
        if value is None:
            return Params({}, f"{self._name(field)}.")
        if not isinstance(value, dict):
            raise invalid(self._name(field), "must be an object")
        return Params(value, f"{self._name(field)}.")

    def __repr__(self) -> str:
        return f"Params({sorted(self._data)})"
