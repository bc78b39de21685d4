"""Workflow-input references: ``asset://`` ids, ``data:`` URIs, https URLs, roles and labels.

A media field takes an ``https://`` URL, a ``data:<mime>;base64,...`` URI or an
``asset://<id>`` reference, alone or as ``{"uri", "role", "label"}``; a prompt names a
labelled input as ``@label``, ``{{label}}`` or ``{{ label }}`` (api-reference.md §1, §2.5)::

    up = await chenyu.upload("hero.png")                         # has .asset_uri
    hero = media_input(up, role="reference_image", label="主角")   # or asset_reference(id)
    logo = media_input(data_uri_from_file("logo.png"), label="logo")
    require_prompt_labels("@主角 holds {{ logo }}", [hero, logo])  # raises if one is missing
    images = [hero.to_dict(), logo.to_dict()]                    # [{"uri", "role", "label"}]

Every check raises :class:`~chenyu_assets.errors.InvalidReferenceError` (a ``ValueError``)
naming the offending value, truncated to about 80 characters, with URL credentials and
query strings hidden.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import mimetypes
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from chenyu_assets.errors import InvalidReferenceError

__all__ = [
    "ASSET_SCHEME",
    "DATA_URI_MAX_BYTES",
    "ROLES",
    "Inputs",
    "MediaInput",
    "PromptCheck",
    "asset_reference",
    "check_labels",
    "check_prompt",
    "data_uri",
    "data_uri_from_file",
    "find_prompt_labels",
    "https_url",
    "media_input",
    "parse_asset_reference",
    "require_prompt_labels",
    "validate_media_string",
]

ASSET_SCHEME: Final = "asset://"
#: Default cap on the *decoded* payload of a data: URI (10 MiB; base64 makes it ~13.4 MiB
#: of text). Larger media should be uploaded and passed as ``asset://`` instead.
DATA_URI_MAX_BYTES: Final = 10 * 1024 * 1024
ROLES: Final = (
    "first_frame",
    "last_frame",
    "reference_image",
    "reference_video",
    "reference_audio",
)

#: What an asset id may be made of. The *shape* is the server's business: ids are
#: ``asset_<32 hex>`` (Chenyu), ``asset-YYYYMMDDhhmmss-xxxxx`` (Ark) today, and group ids
#: also appear as ``assetgroup-...`` (api-reference §6), so no prefix or length pattern is
#: checked, only characters that cannot break out of an ``asset://`` reference.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~-]{0,199}")
_LABEL_CHARS = r"A-Za-z0-9_\-\u3400-\u4dbf\u4e00-\u9fff"  # ASCII word chars, '-', CJK ideographs
_LABEL = re.compile(f"[{_LABEL_CHARS}]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# '@label' unless the '@' follows a character of an e-mail local part (a@b.com, x.y@z).
# CJK text may precede it ("让@小明跳舞"): Chinese has no spaces between words.
_PROMPT_LABEL = re.compile(
    rf"(?<![A-Za-z0-9._%+\-_])@(?P<at>[{_LABEL_CHARS}]+)|\{{\{{\s*(?P<br>[{_LABEL_CHARS}]+)\s*\}}\}}"
)
_MIME = re.compile(r"[A-Za-z0-9][\w.+\-]*/[A-Za-z0-9][\w.+\-]*")
_DATA_URI = re.compile(
    r"data:(?P<mime>[^;,]+)(?P<params>(?:;[^;,=]+=[^;,]*)*);base64,(?P<b64>.*)",
    re.IGNORECASE | re.DOTALL,
)
_WS = re.compile(r"[\s\x00-\x1f\x7f]")


def _show(value: object) -> str:
    """``repr`` of a value for a message, cut to about 80 characters in the middle: the end of
    a path (the file name) or of an id says the most, so it stays."""
    text = str(value)
    return repr(text if len(text) <= 80 else f"{text[:30]}...{text[-47:]}")


def _show_url(url: str) -> str:
    """Like :func:`_show` with userinfo and query values hidden (they may be secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _show(url.split("?", 1)[0].rsplit("@", 1)[-1])
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "?..." if parts.query else ""
    return _show(f"{parts.scheme}://{netloc}{parts.path}{query}")


def _check_asset_id(asset_id: str, ref: str | None = None) -> str:
    where = f" in {_show(ref)}" if ref is not None else ""
    if not isinstance(asset_id, str) or not asset_id:
        raise InvalidReferenceError(f"empty asset id{where}: {_show(asset_id)}")
    if _WS.search(asset_id):
        raise InvalidReferenceError(f"asset id {_show(asset_id)}{where} contains whitespace")
    if not _ID.fullmatch(asset_id):
        raise InvalidReferenceError(
            f"asset id {_show(asset_id)}{where} is not an id: at most 200 letters, digits "
            "and . _ : ~ - (starting with a letter or digit)"
        )
    return asset_id


def asset_reference(asset_id: str) -> str:
    """``asset://<asset_id>`` (lower-case scheme) for a Chenyu or Ark asset id."""
    if isinstance(asset_id, str) and asset_id.lower().startswith(ASSET_SCHEME):
        raise InvalidReferenceError(
            f"{_show(asset_id)} is already a reference; pass the bare asset id"
        )
    return ASSET_SCHEME + _check_asset_id(asset_id)


def parse_asset_reference(ref: str) -> str:
    """The asset id of ``asset://<id>``; the scheme may be in any case (``Asset://``)."""
    if not isinstance(ref, str) or ref[: len(ASSET_SCHEME)].lower() != ASSET_SCHEME:
        raise InvalidReferenceError(f"{_show(ref)} is not an asset:// reference")
    return _check_asset_id(ref[len(ASSET_SCHEME) :], ref)


def _check_mime(mime_type: str) -> str:
    if not isinstance(mime_type, str) or not _MIME.fullmatch(mime_type):
        raise InvalidReferenceError(f"MIME type {_show(mime_type)} is not of the form type/subtype")
    return mime_type


def data_uri(data: bytes, mime_type: str, *, max_bytes: int = DATA_URI_MAX_BYTES) -> str:
    """``data:<mime_type>;base64,<data>``; refuses empty data or more than ``max_bytes``."""
    _check_mime(mime_type)
    if not data:
        raise InvalidReferenceError(f"refusing an empty data: URI ({mime_type})")
    if len(data) > max_bytes:
        raise InvalidReferenceError(
            f"{len(data)} bytes of {mime_type} is over the data: URI cap of {max_bytes} bytes; "
            "upload it and pass its asset:// reference instead"
        )
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _sniff_mime(head: bytes) -> str | None:
    """The MIME type ``chenyu_assets.media.sniff`` sees in a file's first bytes, if any."""
    try:
        sniff = getattr(importlib.import_module("chenyu_assets.media"), "sniff", None)
    except ImportError:
        return None
    found = sniff(head) if callable(sniff) else None
    return str(found[2]) if found else None


def data_uri_from_file(
    path: str | os.PathLike[str],
    *,
    mime_type: str | None = None,
    max_bytes: int = DATA_URI_MAX_BYTES,
) -> str:
    """A data: URI of a small local file (blocking I/O; at most ``max_bytes`` are read).

    A file over the cap is refused from its size before it is opened. The MIME type is
    ``mime_type``, else sniffed from the content, else guessed from the file name.
    """
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        raise InvalidReferenceError(f"cannot read {_show(name)}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InvalidReferenceError(f"{_show(name)} is not a regular file")
    if st.st_size > max_bytes:
        raise InvalidReferenceError(
            f"{_show(name)} is {st.st_size} bytes, over the data: URI cap of {max_bytes} bytes; "
            "upload it and pass its asset:// reference instead"
        )
    with open(name, "rb") as fh:
        data = fh.read(max_bytes + 1)  # +1: notice a file that grew since stat()
    mime = mime_type or _sniff_mime(data[:4096]) or mimetypes.guess_type(name)[0]
    if mime is None:
        raise InvalidReferenceError(f"cannot tell the MIME type of {_show(name)}; pass mime_type")
    try:
        return data_uri(data, mime, max_bytes=max_bytes)
    except InvalidReferenceError as exc:
        raise InvalidReferenceError(f"{_show(name)}: {exc}") from None


def https_url(url: str) -> str:
    """``url`` if it is an https URL with a host, no whitespace and no user:password@."""
    if not isinstance(url, str) or not url:
        raise InvalidReferenceError(f"empty URL: {_show(url)}")
    if _WS.search(url):
        raise InvalidReferenceError(f"URL {_show_url(url)} contains whitespace or control chars")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidReferenceError(f"URL {_show_url(url)} is malformed: {exc}") from None
    if parts.scheme.lower() == "http":
        raise InvalidReferenceError(f"URL {_show_url(url)} is http://; only https:// is accepted")
    if parts.scheme.lower() != "https":
        raise InvalidReferenceError(f"{_show_url(url)} is not an https:// URL")
    if "@" in parts.netloc:
        raise InvalidReferenceError(
            f"URL {_show_url(url)} carries credentials (user:password@); use a signed URL instead"
        )
    if not parts.hostname:
        raise InvalidReferenceError(f"URL {_show_url(url)} has no host")
    return url


def _check_data_uri(value: str) -> str:
    m = _DATA_URI.fullmatch(value)
    if m is None:
        raise InvalidReferenceError(
            f"data: URI {_show(value)} is not of the form data:<mime>;base64,<payload>"
        )
    if not _MIME.fullmatch(m["mime"]):
        raise InvalidReferenceError(
            f"data: URI {_show(value)}: MIME type {_show(m['mime'])} is not type/subtype"
        )
    if not m["b64"]:
        raise InvalidReferenceError(f"data: URI {_show(value)} has an empty payload")
    try:
        base64.b64decode(m["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidReferenceError(f"data: URI {_show(value)} has invalid base64: {exc}") from None
    return value


def validate_media_string(value: str) -> str:
    """``value`` if it is an https URL, a base64 data: URI or an asset:// reference.

    An asset reference comes back with its scheme in lower case; the rest unchanged.
    """
    if not isinstance(value, str) or not value:
        raise InvalidReferenceError(f"empty media reference: {_show(value)}")
    if value != value.strip():
        raise InvalidReferenceError(f"media reference {_show(value)} has surrounding whitespace")
    lowered = value[:16].lower()
    if lowered.startswith(ASSET_SCHEME):
        return asset_reference(parse_asset_reference(value))
    if lowered.startswith("data:"):
        return _check_data_uri(value)
    if "://" in value:
        return https_url(value)
    raise InvalidReferenceError(
        f"{_show(value)} is not an https:// URL, a data:<mime>;base64,... URI "
        "or an asset://<id> reference"
    )


def _check_label(label: str) -> str:
    if not isinstance(label, str):
        raise InvalidReferenceError(f"label {_show(label)} is a {type(label).__name__}, not a str")
    if not label:
        raise InvalidReferenceError("empty label: ''")
    if label.startswith("@"):
        raise InvalidReferenceError(
            f"label {_show(label)} must not start with '@' (give {_show(label.lstrip('@'))}; "
            "the prompt adds the '@')"
        )
    if not _LABEL.fullmatch(label):
        raise InvalidReferenceError(
            f"label {_show(label)} may hold only letters, digits, '_', '-' and CJK characters"
        )
    return label


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidReferenceError(
            f"unknown role {_show(role)}; expected one of {', '.join(ROLES)}"
        )
    return role


@dataclass(frozen=True, slots=True)
class MediaInput:
    """One media input ``{uri, role, label}``, validated when built."""

    uri: str
    role: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", validate_media_string(self.uri))
        if self.role is not None:
            _check_role(self.role)
        if self.label is not None:
            _check_label(self.label)

    def to_dict(self) -> dict[str, str]:
        """The wire object, without the fields that are None."""
        out = {"uri": self.uri, "role": self.role, "label": self.label}
        return {k: v for k, v in out.items() if v is not None}


#: What the label checks accept: MediaInputs, wire dicts, or bare (unlabelled) strings.
Inputs = Iterable[MediaInput | Mapping[str, Any] | str]


def media_input(uri: object, *, role: str | None = None, label: str | None = None) -> MediaInput:
    """A :class:`MediaInput` from a string or an upload result (``.asset_uri`` / ``.reference``)."""
    source = uri
    if not isinstance(source, str):
        source = getattr(uri, "asset_uri", None) or getattr(uri, "reference", None)
    if not isinstance(source, str):
        raise InvalidReferenceError(
            f"{type(uri).__name__} is neither a string nor a result with .asset_uri/.reference"
        )
    return MediaInput(source, role=role, label=label)


def _labels(inputs: Inputs) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            continue
        label = item.label if isinstance(item, MediaInput) else item.get("label")
        if label is None:
            continue
        _check_label(label)
        if label in seen:
            raise InvalidReferenceError(
                f"label {_show(label)} is used twice, by inputs[{seen[label]}] and inputs[{i}]"
            )
        seen[label] = i
    return seen


def check_labels(inputs: Inputs) -> None:
    """Raise if a label is malformed or used by two inputs of one request."""
    _labels(inputs)


def find_prompt_labels(prompt: str) -> list[str]:
    """Labels a prompt names as ``@label``, ``{{label}}`` or ``{{ label }}``, first use first.

    An ``@`` after an e-mail-like character (``a@b.com``) is not a label.
    """
    found = (m["at"] or m["br"] for m in _PROMPT_LABEL.finditer(prompt))
    return list(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class PromptCheck:
    """How a prompt's labels match the inputs' labels."""

    used_but_missing: list[str]
    supplied_but_unused: list[str]

    @property
    def ok(self) -> bool:
        """True when every label the prompt names is carried by an input (unused is fine)."""
        return not self.used_but_missing


def _resolve(token: str, supplied: Iterable[str]) -> str:
    """``@小明跳舞`` names ``小明`` when only ``小明`` is supplied (CJK needs no space)."""
    if token in supplied:
        return token
    for label in sorted(supplied, key=len, reverse=True):
        if token.startswith(label) and _CJK.match(token, len(label)):
            return label
    return token


def check_prompt(prompt: str, inputs: Inputs) -> PromptCheck:
    """Compare the labels ``prompt`` names with the inputs' (raises on duplicate labels).

    An ``@label`` run straight into CJK text (``@小明跳舞``) matches the longest supplied
    label it starts with when the rest begins with a CJK character.
    """
    supplied = list(_labels(inputs))
    found = _PROMPT_LABEL.finditer(prompt)
    used = list(dict.fromkeys(_resolve(m["at"], supplied) if m["at"] else m["br"] for m in found))
    return PromptCheck(
        used_but_missing=[t for t in used if t not in supplied],
        supplied_but_unused=[s for s in supplied if s not in used],
    )


def require_prompt_labels(prompt: str, inputs: Inputs) -> PromptCheck:
    """:func:`check_prompt`, raising when the prompt names a label no input carries.

    Supplied-but-unused labels are only reported (``.supplied_but_unused``).
    """
    result = check_prompt(prompt, inputs)
    if result.used_but_missing:
        missing = ", ".join(_show(t) for t in result.used_but_missing)
        raise InvalidReferenceError(f"the prompt names labels no input carries: {missing}")
    return result
