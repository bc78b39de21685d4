"""chenyu_assets: async SDK, emulator and bulk-ingest CLI for the Chenyu and Ark asset
libraries. The public names are listed in ``__all__`` (a test pins it)."""

from chenyu_assets._core.ratelimit import LimiterRegistry, Rate, SlotPool, WindowLimiter
from chenyu_assets._core.retry import RetryBudget, RetryPolicy
from chenyu_assets._core.transport import Timeouts
from chenyu_assets._version import __version__
from chenyu_assets.ark import ArkClient
from chenyu_assets.avatar import PrivateAvatarClient
from chenyu_assets.batch import (
    IngestOptions,
    IngestReport,
    IngestResult,
    SourceItem,
    ingest,
    open_ingest,
)
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import (
    AmbiguousOutcomeError,
    APIError,
    AssetFailedError,
    AuthenticationError,
    BadRequestError,
    ChenyuAssetsError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    InvalidReferenceError,
    JournalLockedError,
    LimiterUnavailableError,
    MediaCheckError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    TLSVerificationError,
    TransportError,
    UploadError,
    WaitTimeoutError,
)
from chenyu_assets.models import Asset, AssetErrorDetail, AssetGroup, ChenyuAsset
from chenyu_assets.refs import asset_reference, check_prompt, media_input, parse_asset_reference

__all__ = [
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
]
