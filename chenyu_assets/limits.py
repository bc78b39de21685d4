"""The published per-account limits of the Ark asset library, as data.

Rates are per action and per account, in windows of a second or a minute
(api-reference.md §2.6 and §6). One table per profile: the SDK paces by it and the emulator
enforces the default one. Delete* are not published; they are treated like Update* (30/s).

Profiles: ``volcengine`` (the default: 30/s for creates, lists and updates, 100/s for
gets) and the BytePlus rights tiers ``byteplus-entry`` / ``byteplus-advanced`` /
``byteplus-premium`` (CreateAsset 3, 120 or 300 per minute; the other actions as the
default). A rates file overrides any of them; its format (JSON)::

    {"profile": "byteplus-advanced", "rates": {"CreateAsset": "120/min", "GetAsset": 50}}

``profile`` (optional) is the base; each rate is ``"N/s"``, ``"N/min"``, ``"N/10s"`` or a
number of requests per second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from chenyu_assets._core.ratelimit import Rate
from chenyu_assets.errors import ConfigurationError

__all__ = [
    "ACTION_RATES",
    "ARK_ACTIONS",
    "ARK_VERSION",
    "MAX_PROCESSING",
    "PROFILES",
    "Rate",
    "load_rates",
    "profile_rates",
]

#: Requests per second allowed per account, by action (the Volcengine default).
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

_DEFAULT: Final = {action: Rate.per_second(r) for action, r in ACTION_RATES.items()}

#: Published tables by name.
PROFILES: Final[Mapping[str, Mapping[str, Rate]]] = MappingProxyType(
    {
        "volcengine": MappingProxyType(_DEFAULT),
        **{
            f"byteplus-{tier}": MappingProxyType({**_DEFAULT, "CreateAsset": Rate(n, 60.0)})
            for tier, n in (("entry", 3), ("advanced", 120), ("premium", 300))
        },
    }
)

#: Create tasks an account may have ``Processing`` at once.
MAX_PROCESSING: Final = 30

#: The API version every Ark action is served under.
ARK_VERSION: Final = "2024-01-01"

#: The ten Ark actions.
ARK_ACTIONS: Final = tuple(ACTION_RATES)


def profile_rates(name: str) -> dict[str, Rate]:
    """The rates of profile ``name`` (ConfigurationError naming the known ones)."""
    try:
        return dict(PROFILES[name])
    except KeyError:
        known = ", ".join(PROFILES)
        raise ConfigurationError(f"unknown limits profile {name!r} (known: {known})") from None


def load_rates(path: str | Path, *, profile: str | None = None) -> dict[str, Rate]:
    """The rates in the JSON file at ``path`` over its (or ``profile``'s) base profile."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        base = profile_rates(profile or data.get("profile", "volcengine"))
        base.update({k: Rate.parse(v) for k, v in dict(data.get("rates", {})).items()})
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"rates file {path}: {exc}") from None
    return base
