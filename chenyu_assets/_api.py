"""The client protocol the engine depends on: the handful of Ark client methods that the
status watcher (:class:`StatusAPI`) and the bulk ingest's create stage (:class:`AssetAPI`)
call. :class:`~chenyu_assets.ark.ArkFamilyClient` implements both; so can an in-process
fake (the create-stage tests use one), since nothing in the engine reaches past these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chenyu_assets._core.pagination import AsyncPaginator, Paging
    from chenyu_assets.models.ark import Asset
    from chenyu_assets.watcher import Slot, Watcher

__all__ = ["AssetAPI", "StatusAPI"]


class StatusAPI(Protocol):
    """What the status sweep reads: one asset, and listings (``.pages()`` of them)."""

    async def get_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> Asset: ...

    def list_assets(
        self,
        *,
        group_ids: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        name: str | None = None,
        group_type: str | None = None,
        page_size: int = 100,
        page_number: int = 1,
        sort_by: str | None = None,
        sort_order: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
        paging: Paging = "auto",
        next_token: str | None = None,
    ) -> AsyncPaginator[Asset]: ...


class AssetAPI(StatusAPI, Protocol):
    """What the create stage calls besides: CreateAsset under a Processing slot of
    ``watcher``, DeleteAsset (a Failed asset before its retry, a replaced one)."""

    project_name: str | None
    watcher: Watcher

    async def create_asset(
        self,
        *,
        group_id: str | None,
        url: str,
        asset_type: str = "Image",
        name: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
        slot: Slot | None = None,
    ) -> str: ...

    async def delete_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> None: ...
