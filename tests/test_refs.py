"""chenyu_assets.refs: asset://, data:, https references, roles, labels and prompt checks."""

from __future__ import annotations

import base64
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chenyu_assets import refs
from chenyu_assets.errors import ChenyuAssetsError, InvalidReferenceError
from chenyu_assets.refs import (
    ASSET_SCHEME,
    DATA_URI_MAX_BYTES,
    ROLES,
    MediaInput,
    PromptCheck,
    asset_reference,
    check_labels,
    check_prompt,
    data_uri,
    data_uri_from_file,
    find_prompt_labels,
    https_url,
    media_input,
    parse_asset_reference,
    require_prompt_labels,
    validate_media_string,
)

CHENYU_ID = "asset_" + "0123456789abcdef" * 2
ARK_ID = "asset-20260318033332-ab1c9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_error_is_a_value_error() -> None:
    assert issubclass(InvalidReferenceError, ValueError)
    assert issubclass(InvalidReferenceError, ChenyuAssetsError)


# --- asset:// ------------------------------------------------------------------------------


@pytest.mark.parametrize("asset_id", [CHENYU_ID, ARK_ID])
def test_asset_reference_round_trip(asset_id: str) -> None:
    ref = asset_reference(asset_id)
    assert ref == f"asset://{asset_id}"
    assert ref.startswith(ASSET_SCHEME)
    assert parse_asset_reference(ref) == asset_id


@pytest.mark.parametrize("scheme", ["asset://", "Asset://", "ASSET://", "aSsEt://"])
@pytest.mark.parametrize("asset_id", [CHENYU_ID, ARK_ID])
def test_parse_accepts_any_case_of_scheme(scheme: str, asset_id: str) -> None:
    assert parse_asset_reference(scheme + asset_id) == asset_id
    assert validate_media_string(scheme + asset_id) == "asset://" + asset_id  # normalised


#: Ids are never validated by prefix or shape (api-reference §6): any of these is an id.
OTHER_SHAPED_IDS = [
    "asset_" + "0123456789ABCDEF" * 2,
    "asset_" + "0" * 31,
    "asset-2026031803333-ab1c9",
    "asset-20260318033332-AB1C9",
    "assetgroup-20260318033332-ab1c9",
    "a1b2c3",
    "x" * 200,
]


@pytest.mark.parametrize("asset_id", OTHER_SHAPED_IDS)
def test_any_id_shape_is_accepted(asset_id: str) -> None:
    assert parse_asset_reference(asset_reference(asset_id)) == asset_id


def test_an_id_over_200_characters_is_refused() -> None:
    with pytest.raises(InvalidReferenceError, match="is not an id"):
        asset_reference("x" * 201)


BAD_IDS = [
    ("", "empty asset id"),
    ("asset/../x", "is not an id"),
    ("a?b=1", "is not an id"),
    ('a"b', "is not an id"),
    ("-leading-dash", "is not an id"),
    ("asset-20260318033332-ab1c9 ", "whitespace"),
    (" " + CHENYU_ID, "whitespace"),
    ("asset-20260318033332\t-ab1c9", "whitespace"),
]


@pytest.mark.parametrize(("asset_id", "message"), BAD_IDS)
def test_asset_reference_rejects_bad_ids(asset_id: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message) as info:
        asset_reference(asset_id)
    assert repr(asset_id) in str(info.value)


@pytest.mark.parametrize(("asset_id", "message"), BAD_IDS)
def test_parse_rejects_bad_ids_and_names_the_reference(asset_id: str, message: str) -> None:
    ref = "asset://" + asset_id
    with pytest.raises(InvalidReferenceError, match=message) as info:
        parse_asset_reference(ref)
    assert repr(ref) in str(info.value)


@pytest.mark.parametrize(
    "ref",
    [CHENYU_ID, "https://x.example/" + CHENYU_ID, "asset:/" + CHENYU_ID, "assets://" + ARK_ID, ""],
)
def test_parse_rejects_other_schemes(ref: str) -> None:
    with pytest.raises(InvalidReferenceError, match="is not an asset:// reference") as info:
        parse_asset_reference(ref)
    assert repr(ref) in str(info.value)


def test_asset_reference_refuses_a_reference() -> None:
    with pytest.raises(InvalidReferenceError, match="already a reference"):
        asset_reference("asset://" + ARK_ID)


def test_long_values_are_truncated_in_messages() -> None:
    ref = "asset://" + "x" * 500
    with pytest.raises(InvalidReferenceError) as info:
        parse_asset_reference(ref)
    text = str(info.value)
    assert "asset://xxx" in text
    assert "x" * 100 not in text
    assert len(text) < 300


# --- data: URIs ------------------------------------------------------------------------------


def test_data_uri_builds_base64() -> None:
    assert data_uri(PNG, "image/png") == PNG_URI
    assert validate_media_string(PNG_URI) == PNG_URI


def test_default_cap_is_ten_mib() -> None:
    assert DATA_URI_MAX_BYTES == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("data", "mime", "cap", "message"),
    [
        (b"x" * 17, "image/png", 16, "17 bytes of image/png is over the data: URI cap of 16"),
        (b"", "image/png", 16, "empty data: URI"),
        (b"x", "png", 16, "MIME type 'png' is not of the form type/subtype"),
        (b"x", "image/png;base64", 16, "MIME type"),
        (b"x", "", 16, "MIME type"),
    ],
)
def test_data_uri_refuses(data: bytes, mime: str, cap: int, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        data_uri(data, mime, max_bytes=cap)


def test_data_uri_at_cap_is_fine() -> None:
    assert data_uri(b"x" * 16, "text/plain", max_bytes=16).startswith("data:text/plain;base64,")


@pytest.mark.parametrize(
    "value",
    [
        PNG_URI,
        "DATA:image/png;BASE64," + PNG_URI.split(",", 1)[1],
        "data:audio/mpeg;base64,SUQz",
        "data:image/svg+xml;charset=utf-8;base64,PHN2Zy8+",
        "data:application/vnd.ms-excel;base64,AAAA",
    ],
)
def test_valid_data_uris(value: str) -> None:
    assert validate_media_string(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("data:image/png;base64,abc", "invalid base64"),  # bad padding
        ("data:image/png;base64,ab$=", "invalid base64"),  # not in the alphabet
        ("data:image/png;base64,YW Jj", "invalid base64"),  # whitespace inside
        ("data:image/png;base64,", "empty payload"),
        ("data:image/png,aGVsbG8=", "not of the form data:<mime>;base64,<payload>"),
        ("data:;base64,aGVsbG8=", "not of the form"),
        ("data:png;base64,aGVsbG8=", "MIME type 'png'"),
        ("data:", "not of the form"),
    ],
)
def test_invalid_data_uris(value: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message) as info:
        validate_media_string(value)
    assert "data:" in str(info.value)


# --- data: URIs from files -------------------------------------------------------------------


def test_data_uri_from_file(tmp_path: Path) -> None:
    path = tmp_path / "hero.png"
    path.write_bytes(PNG)
    assert data_uri_from_file(path) == PNG_URI
    assert data_uri_from_file(str(path), mime_type="image/x-custom").startswith(
        "data:image/x-custom;base64,"
    )


def test_file_over_cap_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as fh:  # sparse: DATA_URI_MAX_BYTES + 1 bytes without writing them
        fh.truncate(DATA_URI_MAX_BYTES + 1)

    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(refs, "open", no_open, raising=False)
    with pytest.raises(InvalidReferenceError, match="over the data: URI cap") as info:
        data_uri_from_file(big)
    assert "big.png" in str(info.value)
    assert str(DATA_URI_MAX_BYTES + 1) in str(info.value)


def test_file_over_custom_cap(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    with pytest.raises(InvalidReferenceError, match=f"is {len(PNG)} bytes, over .* cap of 8"):
        data_uri_from_file(path, max_bytes=8)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.png", None, "cannot read"),
        ("empty.png", b"", "empty data: URI"),
        ("blob", b"\x01\x02\x03", "cannot tell the MIME type"),
    ],
)
def test_data_uri_from_file_refuses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes | None,
    message: str,
) -> None:
    monkeypatch.setitem(sys.modules, "chenyu_assets.media", None)  # sniff unavailable
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidReferenceError, match=message) as info:
        data_uri_from_file(path)
    assert name in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidReferenceError, match="not a regular file"):
        data_uri_from_file(tmp_path)


def test_mime_sniffed_by_media_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def sniff(head: bytes) -> tuple[str, str, str] | None:
        seen.append(head)
        return ("image", "png", "image/png") if head.startswith(b"\x89PNG") else None

    fake = types.ModuleType("chenyu_assets.media")
    fake.sniff = sniff  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chenyu_assets.media", fake)
    path = tmp_path / "no-extension"
    path.write_bytes(PNG)
    assert data_uri_from_file(path) == PNG_URI
    assert seen == [PNG]
    other = tmp_path / "notes.txt"  # sniff says None: the name decides
    other.write_bytes(b"hello")
    assert data_uri_from_file(other).startswith("data:text/plain;base64,")


def test_mime_falls_back_to_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "chenyu_assets.media", None)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    assert data_uri_from_file(path).startswith("data:video/mp4;base64,")


# --- https URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://www.chenyu.team/assets/asset_x/content",
        "https://example.com",
        "HTTPS://EXAMPLE.COM/a.png",
        "https://example.com:8443/a.png?expires=1&signature=abc#frag",
        "https://[::1]/a.png",
        "https://例子.中国/图片.png",
    ],
)
def test_valid_https_urls(url: str) -> None:
    assert https_url(url) == url
    assert validate_media_string(url) == url


@pytest.mark.parametrize(
    ("url", "message", "shown"),
    [
        ("http://example.com/a.png", "only https:// is accepted", "http://example.com/a.png"),
        ("HTTP://example.com/a.png", "only https://", "example.com/a.png"),
        ("ftp://example.com/a.png", "not an https:// URL", "ftp://example.com/a.png"),
        ("https:///a.png", "has no host", "a.png"),
        ("https://example.com/a b.png", "whitespace", "a b.png"),
        ("https://example.com/a.png\n", "whitespace", "example.com"),
        ("https://example.com:99999/a.png", "malformed", "example.com"),
        ("https://[::1/a.png", "malformed", "a.png"),
    ],
)
def test_invalid_https_urls(url: str, message: str, shown: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message) as info:
        https_url(url)
    assert shown in str(info.value)
    if url == url.strip():
        with pytest.raises(InvalidReferenceError, match=message):
            validate_media_string(url)


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@example.com/a.png", "https://token@example.com/a.png"]
)
def test_url_with_credentials_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(InvalidReferenceError, match="credentials") as info:
        https_url(url)
    text = str(info.value)
    assert "example.com/a.png" in text
    assert "hunter2" not in text
    assert "token" not in text


def test_url_query_values_are_hidden_in_messages() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        https_url("http://example.com/a.png?signature=s3cret")
    assert "s3cret" not in str(info.value)
    assert "example.com/a.png?..." in str(info.value)


# --- validate_media_string -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty media reference"),
        (" https://example.com/a.png", "surrounding whitespace"),
        ("asset://" + ARK_ID + "\n", "surrounding whitespace"),
        ("example.com/a.png", "is not an https:// URL, a data:"),
        ("/tmp/a.png", "is not an https:// URL, a data:"),
        (CHENYU_ID, "is not an https:// URL, a data:"),
        ("asset://", "empty asset id"),
        ("Asset://no/pe", "is not an id"),
    ],
)
def test_invalid_media_strings(value: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message) as info:
        validate_media_string(value)
    if value:
        assert repr(value) in str(info.value)


def test_non_string_media_is_refused() -> None:
    with pytest.raises(InvalidReferenceError):
        validate_media_string(None)  # type: ignore[arg-type]


# --- MediaInput, roles, labels ---------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_accepted(role: str) -> None:
    item = MediaInput("asset://" + ARK_ID, role=role)
    assert item.to_dict() == {"uri": "asset://" + ARK_ID, "role": role}


def test_roles_table() -> None:
    assert ROLES == (
        "first_frame",
        "last_frame",
        "reference_image",
        "reference_video",
        "reference_audio",
    )


@pytest.mark.parametrize("role", ["", "frame", "First_Frame", "reference_images", " first_frame"])
def test_unknown_role_is_refused(role: str) -> None:
    with pytest.raises(InvalidReferenceError, match="unknown role") as info:
        MediaInput(PNG_URI, role=role)
    assert repr(role) in str(info.value)
    assert "first_frame" in str(info.value)


@pytest.mark.parametrize(
    "label", ["hero", "hero_01", "hero-01", "A", "主角", "小明2", "角色_甲-1", "㐀"]
)
def test_valid_labels(label: str) -> None:
    item = MediaInput(PNG_URI, role="reference_image", label=label)
    assert item.to_dict() == {"uri": PNG_URI, "role": "reference_image", "label": label}


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("", "empty label"),
        ("@hero", "must not start with '@'"),
        ("@主角", "must not start with '@'"),
        ("two words", "may hold only"),
        ("tab\there", "may hold only"),
        ("{{hero}}", "may hold only"),
        ("he}ro", "may hold only"),
        ("hero.png", "may hold only"),
        ("主角！", "may hold only"),
    ],
)
def test_invalid_labels(label: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message) as info:
        MediaInput(PNG_URI, label=label)
    assert repr(label) in str(info.value)


def test_media_input_is_frozen_and_normalised() -> None:
    item = MediaInput("Asset://" + ARK_ID)
    assert item.uri == "asset://" + ARK_ID
    assert item.to_dict() == {"uri": "asset://" + ARK_ID}
    with pytest.raises(AttributeError):
        item.label = "x"  # type: ignore[misc]


def test_media_input_validates_uri() -> None:
    with pytest.raises(InvalidReferenceError, match="only https://"):
        MediaInput("http://example.com/a.png", role="first_frame", label="a")


@dataclass
class _ChenyuUpload:
    asset_id: str
    asset_uri: str


@dataclass
class _ArkAsset:
    id: str
    reference: str


@pytest.mark.parametrize(
    ("source", "uri"),
    [
        ("https://example.com/a.png", "https://example.com/a.png"),
        (_ChenyuUpload(CHENYU_ID, "asset://" + CHENYU_ID), "asset://" + CHENYU_ID),
        (_ArkAsset(ARK_ID, "Asset://" + ARK_ID), "asset://" + ARK_ID),
    ],
)
def test_media_input_builder(source: object, uri: str) -> None:
    item = media_input(source, role="reference_image", label="主角")
    assert item == MediaInput(uri, role="reference_image", label="主角")
    assert item.to_dict() == {"uri": uri, "role": "reference_image", "label": "主角"}


@pytest.mark.parametrize("source", [None, 42, object(), _ArkAsset(ARK_ID, None)])  # type: ignore[arg-type]
def test_media_input_builder_refuses_other_objects(source: object) -> None:
    with pytest.raises(InvalidReferenceError, match="neither a string nor a result"):
        media_input(source)


# --- label uniqueness ------------------------------------------------------------------------


def test_unique_labels_pass() -> None:
    check_labels(
        [
            MediaInput(PNG_URI, label="a"),
            {"uri": PNG_URI, "label": "b"},
            "https://example.com/x.png",
            MediaInput(PNG_URI),
            {"uri": PNG_URI},
        ]
    )


@pytest.mark.parametrize(
    ("inputs", "label", "first", "second"),
    [
        ([MediaInput(PNG_URI, label="a"), MediaInput(PNG_URI, label="a")], "a", 0, 1),
        ([MediaInput(PNG_URI, label="主角"), "https://e.com", {"label": "主角"}], "主角", 0, 2),
        ([{"label": "x"}, {"label": "y"}, {"label": "z"}, {"label": "y"}], "y", 1, 3),
    ],
)
def test_duplicate_labels_are_named_with_positions(
    inputs: list[Any], label: str, first: int, second: int
) -> None:
    with pytest.raises(InvalidReferenceError, match="used twice") as info:
        check_labels(inputs)
    text = str(info.value)
    assert repr(label) in text
    assert f"inputs[{first}]" in text
    assert f"inputs[{second}]" in text


@pytest.mark.parametrize(
    ("label", "message"), [("@a", "'@'"), ("a b", "may hold"), (5, "not a str")]
)
def test_check_labels_validates_mapping_labels(label: object, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        check_labels([{"uri": PNG_URI, "label": label}])


# --- prompts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "labels"),
    [
        ("@hero walks in", ["hero"]),
        ("a shot of {{hero}}", ["hero"]),
        ("a shot of {{ hero }} and {{  villain\t}}", ["hero", "villain"]),
        ("@hero meets {{villain}} near {{ tower }}", ["hero", "villain", "tower"]),
        ("@hero, then @hero again and {{hero}}", ["hero"]),  # repeated use: once
        ("write to a@b.com or x.y@example.org", []),  # e-mail is not a label
        ("mail hero@example.com, then show @logo", ["logo"]),
        ("(@hero) [@villain] '@x'", ["hero", "villain", "x"]),
        ("让@小明跳舞，{{ 小红 }}唱歌", ["小明跳舞", "小红"]),  # raw tokens: greedy
        ("@主角。", ["主角"]),
        ("@hero-2's turn", ["hero-2"]),
        ("no labels {here} or { {x} } or {{two words}} or @ alone", []),
        ("", []),
    ],
)
def test_find_prompt_labels(prompt: str, labels: list[str]) -> None:
    assert find_prompt_labels(prompt) == labels


def _inputs(*labels: str) -> list[MediaInput]:
    return [MediaInput(PNG_URI, role="reference_image", label=label) for label in labels]


@pytest.mark.parametrize(
    ("prompt", "labels", "missing", "unused"),
    [
        ("@hero and {{ villain }}", ["hero", "villain"], [], []),
        ("@hero and {{villain}}", ["hero"], ["villain"], []),
        ("@hero", ["hero", "villain"], [], ["villain"]),
        ("@hero @hero {{hero}} {{ hero }}", ["hero"], [], []),  # repeated use
        ("@a {{b}} @c", [], ["a", "b", "c"], []),
        ("ask a@b.com", ["b"], [], ["b"]),  # e-mail is no use of 'b'
        ("让@小明跳舞", ["小明"], [], []),  # label run straight into CJK text
        ("让@小明跳舞", ["小明", "小明跳舞"], [], ["小明"]),  # exact label wins
        ("{{小明跳舞}}", ["小明"], ["小明跳舞"], ["小明"]),  # braces are exact
        ("@hero2", ["hero"], ["hero2"], ["hero"]),  # ASCII suffix is a typo, not 'hero'
    ],
)
def test_check_prompt(
    prompt: str, labels: list[str], missing: list[str], unused: list[str]
) -> None:
    result = check_prompt(prompt, _inputs(*labels))
    assert result == PromptCheck(used_but_missing=missing, supplied_but_unused=unused)
    assert result.ok is (not missing)


def test_check_prompt_accepts_dicts_and_strings_and_generators() -> None:
    items: list[dict[str, str] | str] = [{"uri": PNG_URI, "label": "hero"}, "https://e.com/a"]
    inputs = iter(items)
    assert check_prompt("@hero", inputs).ok


def test_check_prompt_refuses_duplicate_labels() -> None:
    with pytest.raises(InvalidReferenceError, match="used twice"):
        check_prompt("@a", _inputs("a", "a"))


def test_require_prompt_labels_names_the_missing() -> None:
    with pytest.raises(InvalidReferenceError, match="no input carries") as info:
        require_prompt_labels("@hero meets {{ villain }} and @主角", _inputs("hero"))
    text = str(info.value)
    assert "'villain'" in text
    assert "'主角'" in text
    assert "'hero'" not in text


def test_require_prompt_labels_returns_unused_as_warning() -> None:
    result = require_prompt_labels("@hero", _inputs("hero", "spare"))
    assert result.ok
    assert result.supplied_but_unused == ["spare"]
