"""The client protocol the engine depends on: the handful of Ark client methods that the
status watcher (:class:`StatusAPI`) and the bulk ingest's create stage (:class:`AssetAPI`)
call. :class:`~chenyu_assets.ark.ArkFamilyClient` implements both; so can an in-process
fake (the create-stage tests use one), since nothing in the engine reaches past these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from chenyu_assets._sweep import StatusAPI

if TYPE_CHECKING:
    from chenyu_assets._slots import Slot
    from chenyu_assets.watcher import Watcher

__all__ = ["AssetAPI", "StatusAPI"]


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
