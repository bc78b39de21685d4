"""The facts about the four services, as data: one table per rule (api-reference.md).

The SDK and the emulator both import this module and nothing else states these facts. It
imports nothing from the package, so any module may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# -- Ark asset library (§2) -----------------------------------------------------------------

#: The API version every Ark action is served under.
ARK_VERSION: Final = "2024-01-01"

#: Requests per second allowed per account, by action (the Volcengine default, §2.6;
#: Delete* are not published and are treated like Update*). Its keys are the ten actions.
ACTION_RATES: Final = MappingProxyType(
    {
        "CreateAssetGroup": 30.0,
        "CreateAsset": 30.0,
        "ListAssetGroups": 30.0,
        "ListAssets": 30.0,
        "UpdateAsset": 30.0,
        "UpdateAssetGroup": 30.0,
        "DeleteAsset": 30.0,
        "DeleteAssetGroup": 30.0,
        "GetAsset": 100.0,
        "GetAssetGroup": 100.0,
    }
)
#: The ten Ark actions.
ARK_ACTIONS: Final = tuple(ACTION_RATES)
#: Actions that create something and carry no idempotency token: never blindly re-sent.
CREATE_ACTIONS: Final = frozenset({"CreateAsset", "CreateAssetGroup"})
#: The actions that list (paging, ``Filter``, list lag).
LIST_ACTIONS: Final = frozenset({"ListAssets", "ListAssetGroups"})

#: Create tasks an account may have ``Processing`` at once.
MAX_PROCESSING: Final = 30

ASSET_TYPES: Final = ("Image", "Video", "Audio")
GROUP_TYPES: Final = ("AIGC", "LivenessFace")
#: Asset statuses; ``Processing`` moves to one of the terminal two.
STATUSES: Final = ("Processing", "Active", "Failed")
TERMINAL_STATUSES: Final = frozenset({"Active", "Failed"})

#: Longest ``Name`` of an asset or group, and ``Description`` of a group, in characters.
NAME_MAX: Final = 64
DESCRIPTION_MAX: Final = 300

#: ``PageSize`` / ``MaxResults`` at most, and when absent.
MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 10
#: Offset paging (``PageNumber`` × ``PageSize``) is refused past these many items (§6).
OFFSET_PAGING_LIMITS: Final = MappingProxyType({"ListAssets": 20_000, "ListAssetGroups": 10_000})
#: ``SortBy`` values by action (the first is the default); ``SortOrder`` values.
SORT_BY: Final = MappingProxyType(
    {
        "ListAssetGroups": ("CreateTime", "UpdateTime"),
        "ListAssets": ("CreateTime", "UpdateTime", "GroupId"),
    }
)
SORT_ORDERS: Final = ("Desc", "Asc")

#: The Ark error codes of §2.4 and the HTTP status each travels with.
#: ``MissingParameter.<Field>`` / ``InvalidParameter.<Field>`` / ``NotFound.<field>``
#: share the status of their prefix.
ARK_ERROR_STATUS: Final[dict[str, int]] = {
    "MissingParameter": 400,
    "InvalidParameter": 400,
    "InvalidTimestamp": 400,
    "MissingAuthenticationToken": 401,
    "MissingSignature": 401,
    "InvalidAccessKey": 401,
    "SignatureDoesNotMatch": 401,
    "InvalidAuthorization": 401,
    "AccessDenied": 403,
    "InvalidActionOrVersion": 404,
    "NotFound": 404,
    "FlowLimitExceeded": 429,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}

# -- the overseas gateway (§3) and the private-avatar proxy (§4) ----------------------------

#: The gateway's path prefix: ``POST <prefix>/<Action>``.
GATEWAY_PREFIX: Final = "/byteplus/_unstable/open"

AVATAR_MODELS: Final = ("doubao-seedance-2-0-260128", "doubao-seedance-2-0-fast-260128")
AVATAR_PREFIX: Final = "/v1/private-avatar"
#: action -> (HTTP method, path under the prefix); ``{Id}`` takes the id from the path.
AVATAR_ROUTES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "CreateAssetGroup": ("POST", "/groups"),  # ①
        "ListAssetGroups": ("POST", "/groups/list"),  # ②
        "DeleteAssetGroup": ("DELETE", "/groups/{Id}"),  # ⑤
        "CreateAsset": ("POST", "/assets"),  # ⑥
        "ListAssets": ("POST", "/assets/list"),  # ⑦
        "GetAsset": ("GET", "/assets/{Id}"),  # ⑧
        "UpdateAsset": ("PATCH", "/assets/{Id}"),  # ⑨
    }
)

# -- Chenyu open API v2 (§1) ------------------------------------------------------------------

#: The path prefix of the open API v2 (``POST <prefix>/assets``, ``GET <prefix>/assets/{id}``).
CHENYU_PREFIX: Final = "/api/open/v2"
CHENYU_MEDIA_TYPES: Final = ("image", "video", "audio", "file")
CHENYU_PURPOSES: Final = ("temp_input",)
