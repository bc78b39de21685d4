"""The public surface: ``chenyu_assets.__all__`` is pinned, and construction does no I/O."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest

import chenyu_assets
from chenyu_assets import ArkClient, ChenyuClient, ConfigurationError, PrivateAvatarClient

PINNED = {
    "AttemptEvent",
    "CallEvent",
    "IngestEvent",
    "ItemEvent",
    "RetryEvent",
    "SlotEvent",
    "SweepEvent",
    "ThrottleEvent",
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
    "JournalError",
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
    "PaginationError",
    "RedirectError",
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
    assert len(chenyu_assets.__all__) == len(PINNED)  # no name listed twice
    # a star import in a fresh namespace yields exactly the pinned names, nothing more
    namespace: dict[str, object] = {}
    exec("from chenyu_assets import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == PINNED
    for name in PINNED - {"__version__"}:
        obj = namespace[name]
        assert obj is getattr(chenyu_assets, name)
        # every public name is ours (defined in a chenyu_assets module, not re-exported from a
        # dependency) and is a class or function with its own docstring (not inherited)
        assert inspect.isclass(obj) or inspect.isfunction(obj), name
        module = obj.__module__
        assert module == "chenyu_assets" or module.startswith("chenyu_assets."), (name, module)
        assert obj.__name__ == name, name
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        assert (doc or "").strip(), f"{name} has no docstring"


def test_version_is_the_one_in_version_py() -> None:
    source = (Path(chenyu_assets.__file__).parent / "_version.py").read_text()
    [assignment] = [n for n in ast.parse(source).body if isinstance(n, ast.Assign)]
    assert isinstance(assignment.value, ast.Constant)
    declared = assignment.value.value
    assert chenyu_assets.__version__ == declared
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.dev\d+)?", declared), declared
    # the build takes its version from that same file
    project = Path(chenyu_assets.__file__).parents[1] / "pyproject.toml"
    if project.exists():  # a source checkout (not an installed wheel)
        pyproject = tomllib.loads(project.read_text())
        assert pyproject["tool"]["hatch"]["version"]["path"] == "chenyu_assets/_version.py"
        assert "version" in pyproject["project"]["dynamic"]
    try:
        installed = importlib.metadata.version("chenyu-assets")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("chenyu-assets is not installed (only importable from the source tree)")
    assert installed == declared


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
