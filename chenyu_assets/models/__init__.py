"""Pydantic v2 models of every family's answers."""

from chenyu_assets.models.ark import TERMINAL_STATUSES, Asset, AssetError, AssetGroup, AssetStatus
from chenyu_assets.models.chenyu import ChenyuAsset

__all__ = [
    "TERMINAL_STATUSES",
    "Asset",
    "AssetError",
    "AssetGroup",
    "AssetStatus",
    "ChenyuAsset",
]
