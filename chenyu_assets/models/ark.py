"""Models of the Ark asset library (api-reference.md §2.5), shared by every transport."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from chenyu_assets.models._base import WireModel
from chenyu_assets.spec import TERMINAL_STATUSES

__all__ = ["TERMINAL_STATUSES", "Asset", "AssetErrorDetail", "AssetGroup", "AssetStatus"]

#: Known statuses; any other string is accepted too (forward compatibility).
AssetStatus = Literal["Processing", "Active", "Failed"] | str


class AssetErrorDetail(WireModel):
    """Why an asset is ``Failed``: the vendor's ``Error.Code`` and ``Error.Message``."""

    code: str | None = Field(default=None, alias="Code")
    message: str | None = Field(default=None, alias="Message")


class AssetGroup(WireModel):
    """An Ark asset group (``GetAssetGroup`` / ``ListAssetGroups`` items)."""

    id: str = Field(alias="Id")
    name: str | None = Field(default=None, alias="Name")
    description: str | None = Field(default=None, alias="Description")
    group_type: str | None = Field(default=None, alias="GroupType")
    project_name: str | None = Field(default=None, alias="ProjectName")
    create_time: datetime | None = Field(default=None, alias="CreateTime")
    update_time: datetime | None = Field(default=None, alias="UpdateTime")


class Asset(WireModel):
    """An Ark asset (``GetAsset`` / ``ListAssets`` items); ``repr`` leaves the signed URL out."""

    id: str = Field(alias="Id")
    name: str | None = Field(default=None, alias="Name")
    url: str | None = Field(default=None, alias="URL")
    asset_type: str | None = Field(default=None, alias="AssetType")
    group_id: str | None = Field(default=None, alias="GroupId")
    status: AssetStatus = Field(default="Processing", alias="Status")
    error: AssetErrorDetail | None = Field(default=None, alias="Error")
    project_name: str | None = Field(default=None, alias="ProjectName")
    create_time: datetime | None = Field(default=None, alias="CreateTime")
    update_time: datetime | None = Field(default=None, alias="UpdateTime")

    @property
    def reference(self) -> str:
        """``asset://<Id>`` (lower-case scheme), for Seedance requests."""
        return f"asset://{self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def __repr__(self) -> str:  # the signed URL is a bearer credential: keep it out
        return (
            f"Asset(id={self.id!r}, name={self.name!r}, status={self.status!r}, "
            f"asset_type={self.asset_type!r}, group_id={self.group_id!r})"
        )
