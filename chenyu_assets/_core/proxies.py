"""The proxy choice of one session: the standard variables (``HTTPS_PROXY``, ``HTTP_PROXY``,
``NO_PROXY``, any case), read once when the session opens, the answer remembered per
scheme and host. aiohttp's ``trust_env=True`` would read them, and ``~/.netrc``, on every
request (the largest per-request cost in a profile: it doubles the client's CPU per
signed GetAsset round trip), and a netrc entry for an API host would clash with the
client's own ``Authorization`` header."""

from __future__ import annotations

import urllib.request

__all__ = ["ProxyTable", "no_proxy"]


def no_proxy(hostname: str, variable: str) -> bool:
    """``NO_PROXY`` as curl reads it: ``*``, or host names matched exactly or as a domain
    suffix (``example.com`` and ``.example.com`` both cover ``api.example.com``)."""
    for entry in (e.strip().lower() for e in variable.split(",")):
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry  # drop a port
        name = name.strip("[]").lstrip(".")
        if entry == "*" or (name and (hostname == name or hostname.endswith("." + name))):
            return True
    return False


class ProxyTable:
    """The variables as read by :meth:`load`; ``for_url`` answers from them (None: direct).
    Falsy while no proxy variable is set, so a caller can skip the lookup."""

    __slots__ = ("_chosen", "_proxies")

    def __init__(self) -> None:
        self._proxies: dict[str, str] = {}
        self._chosen: dict[tuple[str, str], str | None] = {}

    def __bool__(self) -> bool:
        return bool(self._proxies)

    def load(self) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._chosen.clear()

    def for_url(self, url: str) -> str | None:
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
        key = (scheme, host)
        if key not in self._chosen:
            proxy = self._proxies.get(scheme)
            hostname = host.rsplit(":", 1)[0].strip("[]").lower() if host else ""
            if proxy and no_proxy(hostname, self._proxies.get("no", "")):
                proxy = None
            self._chosen[key] = proxy
        return self._chosen[key]
