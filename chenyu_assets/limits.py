"""The published per-account limits of the Ark asset library (api-reference.md §2.6).

One table: the SDK's limiter registry takes its defaults from it and the emulator enforces
it. Delete* are not published; they are treated like Update* (30/s).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

#: Requests per second allowed per account, by action.
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

#: Offset paging (``PageNumber`` × ``PageSize``) is refused past these many items
#: (api-reference.md §6): the hard cap of a listing's pages.
OFFSET_PAGING_LIMITS: Final = MappingProxyType({"ListAssets": 20_000, "ListAssetGroups": 10_000})

#: Create tasks an account may have ``Processing`` at once.
MAX_PROCESSING: Final = 30

#: The API version every Ark action is served under.
ARK_VERSION: Final = "2024-01-01"

#: The ten Ark actions.
ARK_ACTIONS: Final = tuple(ACTION_RATES)
