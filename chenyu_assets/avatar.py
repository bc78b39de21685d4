"""``PrivateAvatarClient``: the private-avatar proxy (api-reference.md §4).

Bearer auth, the Volcengine envelope, and a ``model`` routing key in every request.
The proxy publishes seven endpoints; the typed methods are those of
:class:`~chenyu_assets.ark.ArkFamilyClient`, and the three actions the proxy lacks
(GetAssetGroup, UpdateAssetGroup, DeleteAsset) raise ``ConfigurationError`` at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

from chenyu_assets._core.engine import Prepared, check_base_url
from chenyu_assets._core.logs import register_secret
from chenyu_assets._core.ratelimit import LimiterFactory, Slots
from chenyu_assets._core.redis_limits import RedisLimits
from chenyu_assets._core.retry import RetryBudget, RetryPolicy
from chenyu_assets._core.signing import BearerAuth
from chenyu_assets._core.transport import Timeouts
from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.envelopes import parse_volc_envelope
from chenyu_assets.errors import ConfigurationError
from chenyu_assets.events import Hook
from chenyu_assets.limits import MAX_PROCESSING
from chenyu_assets.spec import AVATAR_MODELS
from chenyu_assets.spec import AVATAR_PREFIX as _PREFIX
from chenyu_assets.spec import AVATAR_ROUTES as _ROUTES
from chenyu_assets.spec import CREATE_ACTIONS as _CREATES

__all__ = ["AVATAR_MODELS", "PrivateAvatarClient"]


class PrivateAvatarClient(ArkFamilyClient):
    """Async client of the private-avatar proxy.

    Environment: ``AVATAR_API_KEY`` (Bearer key), ``AVATAR_BASE_URL``, ``AVATAR_MODEL``.
    ``limits="redis://..."`` shares the key's rate limits across processes (as for ArkClient).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = AVATAR_MODELS[0],
        project_name: str | None = None,
        rate_limits: Mapping[str, float] | None = None,
        headroom: float | None = None,
        limiter_factory: LimiterFactory | None = None,
        limits: str | RedisLimits | None = None,
        processing_slots: Slots | int | None = MAX_PROCESSING,
        slot_lease: float = 3600.0,
        watch: bool = True,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        connection_limit: int = 100,
        ca_bundle: str | None = None,
        hooks: Sequence[Hook] = (),
        session: Any = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("missing proxy key: pass api_key= or set AVATAR_API_KEY")
        if not base_url:
            raise ConfigurationError("missing proxy URL: pass base_url= or set AVATAR_BASE_URL")
        if model not in AVATAR_MODELS:
            raise ConfigurationError(f"model must be one of {', '.join(AVATAR_MODELS)}")
        check_base_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.project_name = project_name
        self._bearer = BearerAuth(api_key)
        register_secret(api_key)
        super().__init__(
            account=api_key,
            rate_limits=rate_limits,
            headroom=headroom,
            limiter_factory=limiter_factory,
            limits=limits,
            processing_slots=processing_slots,
            slot_lease=slot_lease,
            watch=watch,
            session=session,
            timeouts=timeouts,
            retry=retry,
            retry_budget=retry_budget,
            connection_limit=connection_limit,
            ca_bundle=ca_bundle,
            hooks=hooks,
        )

    def __repr__(self) -> str:
        return f"<PrivateAvatarClient model={self.model} base_url={self.base_url}>"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        env = os.environ
        kwargs: dict[str, Any] = {
            "api_key": env.get("AVATAR_API_KEY"),
            "base_url": env.get("AVATAR_BASE_URL"),
        }
        if env.get("AVATAR_MODEL"):
            kwargs["model"] = env["AVATAR_MODEL"]
        kwargs.update(overrides)
        return cls(**kwargs)

    async def _call(
        self, action: str, body: dict[str, Any], *, deadline: float | None = None
    ) -> tuple[dict[str, Any], str | None]:
        route = _ROUTES.get(action)
        if route is None:
            raise ConfigurationError(f"the private-avatar proxy has no endpoint for {action}")
        method, template = route
        body = {k: v for k, v in body.items() if k != "ProjectName"}
        path = _PREFIX + template
        if "{Id}" in template:
            path = path.replace("{Id}", quote(str(body.get("Id", "")), safe=""))
        params: list[tuple[str, str]] | None = None
        payload: bytes | None = None
        if method in ("GET", "DELETE"):
            params = [("model", self.model)]
        else:
            payload = json.dumps({"model": self.model, **body}, ensure_ascii=False).encode()
        bearer = self._bearer

        async def prepare(attempt: int) -> Prepared:
            headers = {"Authorization": bearer.header()}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            return Prepared(headers=headers, body=payload, params=params)

        return await self._engine.call(
            action,
            method,
            self.base_url + path,
            prepare=prepare,
            parse=parse_volc_envelope,
            idempotent=action not in _CREATES,
            deadline=deadline,
        )
