"""Pre-flight checks of one item: is its URL safe to hand to CreateAsset, which asset type
is it, and (for a local file) does its media pass the limits table, and what is its hash."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from chenyu_assets import media
from chenyu_assets.batch.sources import SourceItem

__all__ = ["asset_type_for", "hash_and_check", "url_problem"]

_VIDEO_EXT = {".mp4", ".mov", ".m4v"}
_AUDIO_EXT = {".wav", ".mp3", ".m4a", ".aac"}


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why a source URL must not be given to CreateAsset, or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "malformed URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    host = parts.hostname
    if not host:
        return "URL has no host"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return "URL points at localhost"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or (ip.is_multicast or ip.is_unspecified)
    ):
        return f"URL points at a non-public address ({ip})"
    return None


def asset_type_for(item: SourceItem, info: media.MediaInfo | None) -> str:
    if item.asset_type:
        return item.asset_type
    if info is not None:
        return info.asset_type
    ext = Path(urlsplit(item.url or "").path or (item.path or Path()).name).suffix.lower()
    if ext in _VIDEO_EXT:
        return "Video"
    if ext in _AUDIO_EXT:
        return "Audio"
    return "Image"


def hash_and_check(path: Path, asset_type: str | None) -> tuple[str, media.MediaInfo]:
    info = media.check_file(path, asset_type)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest(), info
