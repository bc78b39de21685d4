"""Models of the Chenyu open API v2 workflow assets (api-reference.md §1)."""

from __future__ import annotations

from datetime import datetime

from chenyu_assets.models._base import WireModel

__all__ = ["ChenyuAsset"]


class ChenyuAsset(WireModel):
    """An uploaded workflow asset. ``signed_url`` is a credential: it is left out of repr."""

    asset_id: str
    asset_uri: str | None = None
    url: str | None = None
    content_url: str | None = None
    signed_url: str | None = None
    media_type: str | None = None
    mime_type: str | None = None
    size_bytes: int | None = None
    purpose: str | None = None
    persistent: bool | None = None
    expires_at: datetime | None = None
    status: str | None = None
    original_filename: str | None = None

    @property
    def reference(self) -> str:
        return self.asset_uri or f"asset://{self.asset_id}"

    def signed_url_expires(self) -> int | None:
        """The unix time in the signed URL's ``expires`` parameter, if any."""
        from urllib.parse import parse_qs, urlsplit

        if not self.signed_url:
            return None
        values = parse_qs(urlsplit(self.signed_url).query).get("expires")
        try:
            return int(values[0]) if values else None
        except ValueError:
            return None

    def __repr__(self) -> str:
        return (
            f"ChenyuAsset(asset_id={self.asset_id!r}, media_type={self.media_type!r}, "
            f"size_bytes={self.size_bytes!r}, status={self.status!r}, "
            f"expires_at={self.expires_at!r})"
        )
