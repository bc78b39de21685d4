"""Pre-flight checks of one item: is its URL safe to hand to CreateAsset, which asset type
is it, and (for a local file) does its media pass the limits table, and what is its hash."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import stat
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from chenyu_assets import media
from chenyu_assets.batch.sources import SourceItem, url_has_userinfo
from chenyu_assets.errors import MediaCheckError

__all__ = ["asset_type_for", "hash_and_check", "sha256_of", "url_problem"]


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why a source URL must not be given to CreateAsset, or None.

    The host is judged as written (a name that resolves to a private address is the
    fetching service's to refuse): ``localhost`` names, and IP literals that are not
    global, in every form a resolver reads as an address (``127.1``, ``2130706433``,
    ``0x7f.0.0.1``, ``::ffff:127.0.0.1``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "malformed URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    if url_has_userinfo(url):
        return "the URL carries credentials (user:password@)"
    host = parts.hostname
    if not host:
        return "URL has no host"
    if allow_private:
        return None
    host = host.rstrip(".")  # "localhost." is localhost
    if host == "localhost" or host.endswith(".localhost"):
        return "URL points at localhost"
    ip = _ip_literal(host)
    if ip is None:
        return None
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or (ip.is_multicast or ip.is_unspecified)
    ):
        return f"URL points at a non-public address ({ip})"
    return None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, if it is one in any notation ``inet_aton`` accepts."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not host or host.strip("0123456789abcdefx.") != "":  # letters: a host name
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def asset_type_for(item: SourceItem, info: media.MediaInfo | None) -> str:
    if item.asset_type:
        return item.asset_type
    if info is not None:
        return info.asset_type
    ext = Path(urlsplit(item.url or "").path or (item.path or Path()).name).suffix.lower()
    return media.MEDIA_SUFFIXES.get(ext, "Image")


def hash_and_check(path: Path, asset_type: str | None) -> tuple[str, media.MediaInfo]:
    """The file's SHA-256 and media info; MediaCheckError (``not_regular_file`` for a
    directory, FIFO, socket or device a manifest names) or OSError.

    The file is opened without blocking and checked before anything reads it: a FIFO
    would otherwise block this worker thread for ever (and with it the whole run).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MediaCheckError(
                f"{path}: not a regular file (a directory, FIFO, socket or device)",
                reason="not_regular_file",
            )
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        info = media.check_file(path, asset_type)
        return _sha256(f), info


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (the fingerprint the pre-flight journals); MediaCheckError for
    something that is not a regular file (opened without blocking: a FIFO never hangs),
    OSError if it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MediaCheckError(f"{path}: not a regular file", reason="not_regular_file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        return _sha256(f)


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()
