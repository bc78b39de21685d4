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

The types a user passes to a client's pacing options live here too: :class:`Rate`,
:class:`Slots` (the protocol of ``processing_slots=``), :class:`SlotPool` (the local one) and
:class:`RedisLimits` (``limits=``, shared through Redis).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from chenyu_assets._core.ratelimit import Rate, SlotPool, Slots
from chenyu_assets._core.redis_limits import RedisLimits
from chenyu_assets.errors import ConfigurationError
from chenyu_assets.spec import (
    ACTION_RATES,
    ARK_ACTIONS,
    ARK_VERSION,
    MAX_PROCESSING,
    OFFSET_PAGING_LIMITS,
)

__all__ = [
    "ACTION_RATES",
    "ARK_ACTIONS",
    "ARK_VERSION",
    "MAX_PROCESSING",
    "OFFSET_PAGING_LIMITS",
    "PROFILES",
    "Rate",
    "RedisLimits",
    "SlotPool",
    "Slots",
    "load_rates",
    "profile_rates",
]

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
