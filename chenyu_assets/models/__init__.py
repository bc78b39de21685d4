"""Pydantic v2 models of every family's answers."""

from chenyu_assets.models.ark import (
    TERMINAL_STATUSES,
    Asset,
    AssetErrorDetail,
    AssetGroup,
    AssetStatus,
)
from chenyu_assets.models.chenyu import ChenyuAsset

__all__ = [
    "TERMINAL_STATUSES",
    "Asset",
    "AssetErrorDetail",
    "AssetGroup",
    "AssetStatus",
    "ChenyuAsset",
]
