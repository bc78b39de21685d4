"""The public surface: ``chenyu_assets.__all__`` is pinned, and construction does no I/O."""

from __future__ import annotations

import inspect

import pytest

import chenyu_assets
from chenyu_assets import ArkClient, ChenyuClient, ConfigurationError, PrivateAvatarClient

PINNED = {
    "APIError",
    "AmbiguousOutcomeError",
    "ArkClient",
    "Asset",
    "AssetErrorDetail",
    "AssetFailedError",
    "AssetGroup",
    "AuthenticationError",
    "BadRequestError",
    "ChenyuAsset",
    "ChenyuAssetsError",
    "ChenyuClient",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLostError",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "InvalidReferenceError",
    "JournalLockedError",
    "LimiterRegistry",
    "LimiterUnavailableError",
    "MediaCheckError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PrivateAvatarClient",
    "Rate",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "RetryBudget",
    "RetryPolicy",
    "ServerError",
    "SlotPool",
    "SourceItem",
    "TLSVerificationError",
    "Timeouts",
    "TransportError",
    "UploadError",
    "WaitTimeoutError",
    "WindowLimiter",
    "__version__",
    "asset_reference",
    "check_prompt",
    "ingest",
    "media_input",
    "open_ingest",
    "parse_asset_reference",
}


def test_all_is_pinned_and_importable() -> None:
    assert set(chenyu_assets.__all__) == PINNED
    for name in chenyu_assets.__all__:
        assert getattr(chenyu_assets, name) is not None


def test_every_error_is_in_the_tree() -> None:
    errors = [getattr(chenyu_assets, n) for n in PINNED if n.endswith("Error")]
    for cls in errors:
        assert issubclass(cls, chenyu_assets.ChenyuAssetsError), cls


@pytest.mark.parametrize(
    ("cls", "method"),
    [
        (ArkClient, "create_asset"),
        (ArkClient, "list_assets"),
        (ArkClient, "wait_for_asset"),
        (ChenyuClient, "upload"),
        (PrivateAvatarClient, "create_asset"),
    ],
)
def test_options_are_keyword_only(cls: type, method: str) -> None:
    params = list(inspect.signature(getattr(cls, method)).parameters.values())[1:]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 1, positional  # at most the one obvious subject (an id, a path)


def test_construction_does_no_io_and_needs_no_loop() -> None:
    # no running event loop here: a client must still be constructible
    ark = ArkClient(
        access_key="AKLTexample0000", secret_key="s" * 20, base_url="http://127.0.0.1:9"
    )
    chenyu = ChenyuClient(api_key="cy_" + "0" * 32, base_url="http://127.0.0.1:9")
    assert "127.0.0.1:9" in repr(ark)
    assert "cy_" not in repr(chenyu)


def test_missing_credentials_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "VOLC_ACCESSKEY",
        "VOLC_SECRETKEY",
        "BYTEPLUS_ACCESSKEY",
        "BYTEPLUS_SECRETKEY",
        "ARK_API_KEY",
        "ARK_STYLE",
        "CHENYU_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError, match="VOLC_ACCESSKEY"):
        ArkClient.from_env()
    monkeypatch.setenv("VOLC_ACCESSKEY", "AKLTexample0000")
    with pytest.raises(ConfigurationError, match="VOLC_SECRETKEY"):
        ArkClient.from_env()
    with pytest.raises(ConfigurationError, match="CHENYU_API_KEY"):
        ChenyuClient.from_env()
