"""``ArkClient``: the ten actions of the Volcengine / BytePlus Ark asset library.

Transports (chosen at construction):

===========================  =======================================  ==================
transport                    endpoint                                 auth / envelope
===========================  =======================================  ==================
official Volcengine          ``https://open.volcengineapi.com``       AK/SK SignerV4,
  (``region="cn-beijing"``)  ``POST /?Action=<A>&Version=2024-01-01`` ResponseMetadata
official BytePlus            ``https://ark.<region>.byteplusapi.com`` same
  (``region="ap-southeast-1"``, ``"eu-west-1"``)
gateway (``style="gateway"``) ``<base_url>/<Action>``                 Bearer, flat fields
                                                                      + ``base_resp``
===========================  =======================================  ==================

The private-avatar proxy (:mod:`chenyu_assets.avatar`) reuses the typed methods of
:class:`ArkFamilyClient` with its own routes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar

from chenyu_assets._core.engine import ClientBase, Prepared, check_base_url
from chenyu_assets._core.logs import get_logger, register_secret
from chenyu_assets._core.pagination import AsyncPaginator, Page, Paging
from chenyu_assets._core.polling import wait_until
from chenyu_assets._core.ratelimit import (
    DEFAULT_MARGIN,
    LimiterFactory,
    LimiterRegistry,
    Rate,
    Slots,
)
from chenyu_assets._core.redis_limits import RedisLimits, open_limits
from chenyu_assets._core.retry import RetryBudget, RetryPolicy
from chenyu_assets._core.signing import BearerAuth, Credentials, sign_request
from chenyu_assets._core.transport import Timeouts
from chenyu_assets._logctx import logged
from chenyu_assets.envelopes import parse_flat_envelope, parse_volc_envelope
from chenyu_assets.errors import (
    AssetFailedError,
    ConfigurationError,
    ResponseFormatError,
)
from chenyu_assets.events import Hook
from chenyu_assets.limits import ARK_VERSION, MAX_PROCESSING, OFFSET_PAGING_LIMITS, profile_rates
from chenyu_assets.models.ark import Asset, AssetGroup
from chenyu_assets.spec import CREATE_ACTIONS as _CREATES
from chenyu_assets.spec import GATEWAY_PREFIX, MAX_PAGE_SIZE
from chenyu_assets.watcher import Slot, Watcher, processing_pool

__all__ = [
    "ArkClient",
    "ArkFamilyClient",
    "official_endpoint",
    "parse_flat_envelope",
    "parse_volc_envelope",
]

VOLCENGINE_ENDPOINT = "https://open.volcengineapi.com"
GATEWAY_ENDPOINT = "https://api.agentsflare.com" + GATEWAY_PREFIX
log = get_logger("chenyu_assets.ark")
#: GroupTypes a client remembers (group id -> type), to send ``Filter.GroupType``
_GROUP_TYPES_KEPT = 10_000
M = TypeVar("M", Asset, AssetGroup)


def official_endpoint(region: str) -> str:
    """The official host for ``region``: Volcengine for cn-*, BytePlus otherwise."""
    if region.startswith("cn-"):
        return VOLCENGINE_ENDPOINT
    return f"https://ark.{region}.byteplusapi.com"


def _compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values and empty filters: the service treats absent and null alike."""
    out: dict[str, Any] = {}
    for k, v in body.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            v = _compact(v)
            if not v:
                continue
        out[k] = v
    return out


class ArkFamilyClient(ClientBase):
    """The typed methods shared by every Ark-shaped API; subclasses route ``_call``."""

    project_name: str | None
    #: the Redis limits shared with other processes (``limits=``), or None
    shared_limits: RedisLimits | None = None

    def __init__(
        self,
        *,
        account: str,
        rate_limits: Mapping[str, float] | None,
        headroom: float | None,
        limiter_factory: LimiterFactory | None,
        limits: str | RedisLimits | None,
        processing_slots: Slots | int | None = MAX_PROCESSING,
        slot_lease: float = 3600.0,
        watch: bool = True,
        rates: Mapping[str, Rate | float | str] | None = None,
        limits_profile: str | None = None,
        rate_margin: float = DEFAULT_MARGIN,
        **transport: Any,
    ) -> None:
        """Pacing for the account whose key is ``account``: the rates of ``limits_profile``
        (default ``volcengine``) with ``rates`` overrides (``rate_limits`` is the deprecated
        name), local or shared through Redis (``limits=``); the Processing cap
        (``processing_slots``: a number of slots, shared through Redis with ``limits=``, a
        :class:`Slots` of your own, or None for no accounting) kept by :attr:`watcher`;
        ``watch=False`` waits with one GetAsset per asset and keeps no slots. The
        ``transport`` options go to :class:`ClientBase`."""
        shared = open_limits(limits, account=account, limiter_factory=limiter_factory)
        self.shared_limits = shared.limits
        pool = processing_pool(processing_slots, shared.limits, watch=watch)
        self._watch = watch
        self._group_types: dict[str, str] = {}
        #: the status sweep and Processing slots of this client (see :mod:`chenyu_assets.watcher`)
        self.watcher = Watcher(self, slots=pool, lease=slot_lease)
        super().__init__(
            limiters=LimiterRegistry(
                profile_rates(limits_profile or "volcengine"),
                overrides={**(rate_limits or {}), **(rates or {})},
                headroom=headroom,
                margin=rate_margin,
                factory=shared.factory,
            ),
            closers=(self.watcher.aclose, *shared.closers),
            **transport,
        )
        self._engine.not_a_rate_429 = self.watcher.is_cap_429

    async def _call(
        self, action: str, body: dict[str, Any], *, deadline: float | None = None
    ) -> tuple[dict[str, Any], str | None]:
        raise NotImplementedError

    def _project(self, project_name: str | None) -> str | None:
        return project_name if project_name is not None else self.project_name

    # -- groups ------------------------------------------------------------------------
    async def create_asset_group(
        self,
        *,
        name: str,
        description: str | None = None,
        group_type: str | None = "AIGC",
        project_name: str | None = None,
        deadline: float | None = None,
    ) -> str:
        """CreateAssetGroup; returns the new group id. Not retried after an ambiguous
        failure (``AmbiguousOutcomeError``): list by name before creating again."""
        body = {
            "Name": name,
            "Description": description,
            "GroupType": group_type,
            "ProjectName": self._project(project_name),
        }
        result, _ = await self._call("CreateAssetGroup", _compact(body), deadline=deadline)
        group_id = _new_id(result, "CreateAssetGroup")
        if group_type:
            self._learn_types([(group_id, group_type)])
        return group_id

    async def get_asset_group(
        self, group_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> AssetGroup:
        body = {"Id": group_id, "ProjectName": self._project(project_name)}
        result, rid = await self._call("GetAssetGroup", _compact(body), deadline=deadline)
        group = _model(AssetGroup, result, rid)
        self._learn_types([(group.id, group.group_type)])
        return group

    def list_asset_groups(
        self,
        *,
        name: str | None = None,
        group_ids: Sequence[str] | None = None,
        group_type: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        page_number: int = 1,
        sort_by: str | None = None,
        sort_order: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
        paging: Paging = "auto",
        next_token: str | None = None,
    ) -> AsyncPaginator[AssetGroup]:
        """ListAssetGroups: ``await`` for one page, ``async for`` for every group.
        ``deadline`` bounds the whole walk in seconds; ``paging``: ``auto`` (numbered pages,
        the cursor for a walk past the 10,000 offset limit), ``offset`` or ``cursor``
        (``next_token`` for one page; see :class:`AsyncPaginator`). ``group_type``: the
        known type of ``group_ids`` when not given."""
        flt = {
            "Name": name,
            "GroupIds": list(group_ids) if group_ids else None,
            "GroupType": group_type or self.known_group_type(group_ids),
        }
        return self._paginate(
            "ListAssetGroups",
            AssetGroup,
            flt,
            page_size,
            page_number,
            sort_by,
            sort_order,
            project_name,
            deadline,
            paging,
            next_token,
        )

    async def update_asset_group(
        self,
        group_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
    ) -> None:
        body = {
            "Id": group_id,
            "Name": name,
            "Description": description,
            "ProjectName": self._project(project_name),
        }
        await self._call("UpdateAssetGroup", _compact(body), deadline=deadline)

    async def delete_asset_group(
        self, group_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> None:
        """DeleteAssetGroup: removes the group and every asset in it."""
        body = {"Id": group_id, "ProjectName": self._project(project_name)}
        await self._call("DeleteAssetGroup", _compact(body), deadline=deadline)

    # -- assets ------------------------------------------------------------------------
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
    ) -> str:
        """CreateAsset; returns the new asset id (the asset starts ``Processing``).

        First takes a Processing slot (unless the client keeps none, or ``slot`` is one the
        caller took with ``watcher.reserve()``: that stays the caller's until this returns
        an id); the watcher frees it when the asset leaves Processing. ``deadline`` covers
        the wait for the slot too.

        Never re-sent after an ambiguous failure: ``AmbiguousOutcomeError`` tells the
        caller to look for ``name`` in the group before creating again.
        """
        if asset_type not in ("Image", "Video", "Audio"):
            raise ValueError(f"asset_type must be Image, Video or Audio, not {asset_type!r}")
        body = {
            "GroupId": group_id,
            "URL": url,
            "AssetType": asset_type,
            "Name": name,
            "ProjectName": self._project(project_name),
        }

        async def send(deadline: float | None) -> str:
            result, _ = await self._call("CreateAsset", _compact(body), deadline=deadline)
            return _new_id(result, "CreateAsset")

        return await self.watcher.create(
            send,
            slot=slot,
            deadline=deadline,
            project=body.get("ProjectName"),
            group_id=group_id,
            track=self._watch,
        )

    async def get_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> Asset:
        body = {"Id": asset_id, "ProjectName": self._project(project_name)}
        result, rid = await self._call("GetAsset", _compact(body), deadline=deadline)
        return _model(Asset, result, rid)

    def list_assets(
        self,
        *,
        group_ids: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        name: str | None = None,
        group_type: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        page_number: int = 1,
        sort_by: str | None = None,
        sort_order: str | None = None,
        project_name: str | None = None,
        deadline: float | None = None,
        paging: Paging = "auto",
        next_token: str | None = None,
    ) -> AsyncPaginator[Asset]:
        """ListAssets: ``await`` for one page, ``async for`` for every asset.
        ``deadline`` bounds the whole walk in seconds; ``paging``: ``auto`` (numbered pages,
        the cursor for a walk past the 20,000 offset limit), ``offset`` or ``cursor``
        (``next_token`` for one page; see :class:`AsyncPaginator`). ``Filter.GroupType`` is
        ``group_type``, else the type this client knows for ``group_ids``."""
        flt = {
            "GroupIds": list(group_ids) if group_ids else None,
            "Statuses": list(statuses) if statuses else None,
            "Name": name,
            "GroupType": group_type or self.known_group_type(group_ids),
        }
        return self._paginate(
            "ListAssets",
            Asset,
            flt,
            page_size,
            page_number,
            sort_by,
            sort_order,
            project_name,
            deadline,
            paging,
            next_token,
        )

    async def update_asset(
        self,
        asset_id: str,
        *,
        name: str,
        project_name: str | None = None,
        deadline: float | None = None,
    ) -> None:
        body = {"Id": asset_id, "Name": name, "ProjectName": self._project(project_name)}
        await self._call("UpdateAsset", _compact(body), deadline=deadline)

    async def delete_asset(
        self, asset_id: str, *, project_name: str | None = None, deadline: float | None = None
    ) -> None:
        body = {"Id": asset_id, "ProjectName": self._project(project_name)}
        await self._call("DeleteAsset", _compact(body), deadline=deadline)

    async def wait_for_asset(
        self,
        asset_id: str,
        *,
        timeout: float = 600.0,
        interval: float = 1.0,
        max_interval: float = 10.0,
        project_name: str | None = None,
    ) -> Asset:
        """Wait until ``Active`` (returned) or ``Failed`` (``AssetFailedError`` with the
        server's code and message); ``WaitTimeoutError`` at ``timeout`` s. Resolved by the
        watcher's sweep (``interval``/``max_interval`` apply only with ``watch=False``)."""
        if self._watch:
            project = self._project(project_name)
            [asset] = await self.watcher.wait([asset_id], timeout=timeout, project=project)
        else:
            asset = await self._poll_asset(asset_id, timeout, interval, max_interval, project_name)
        if asset.status == "Failed":
            err = asset.error
            raise AssetFailedError(
                asset_id, err.code if err else None, err.message if err else None
            )
        return asset

    async def wait_for_assets(
        self,
        asset_ids: Sequence[str],
        *,
        timeout: float = 600.0,
        project_name: str | None = None,
    ) -> list[Asset]:
        """The terminal state (``Active`` or ``Failed``: check ``.status``) of each asset,
        in order, from one sweep per tick for all of them; ``WaitTimeoutError`` at
        ``timeout`` s."""
        if self._watch:
            project = self._project(project_name)
            return await self.watcher.wait(asset_ids, timeout=timeout, project=project)
        return list(
            await asyncio.gather(
                *(self._poll_asset(a, timeout, 1.0, 10.0, project_name) for a in asset_ids)
            )
        )

    async def _poll_asset(
        self,
        asset_id: str,
        timeout: float,
        interval: float,
        max_interval: float,
        project_name: str | None,
    ) -> Asset:
        return await wait_until(
            lambda: self.get_asset(asset_id, project_name=project_name),
            lambda a: a.is_terminal,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
            describe=lambda a: (
                f"asset {asset_id} terminal status (last: {a.status if a else 'unknown'})"
            ),
        )

    def _learn_types(self, groups: Iterable[tuple[str, str | None]]) -> None:
        """Remember ``(group id, GroupType)`` pairs the server showed (bounded: oldest
        dropped)."""
        for group_id, group_type in groups:
            if group_id and group_type:
                self._group_types.pop(group_id, None)
                self._group_types[group_id] = group_type
        while len(self._group_types) > _GROUP_TYPES_KEPT:
            del self._group_types[next(iter(self._group_types))]

    def known_group_type(self, group_ids: Sequence[str] | None) -> str | None:
        """The one GroupType of ``group_ids`` when this client has seen every one of them
        (CreateAssetGroup, GetAssetGroup, ListAssetGroups), else None. Listings send it as
        ``Filter.GroupType`` (some servers require it: api-reference §6)."""
        types = {self._group_types.get(g) for g in group_ids or ()}
        return next(iter(types)) if len(types) == 1 else None

    def _paginate(
        self,
        action: str,
        model: type[M],
        flt: dict[str, Any],
        page_size: int,
        page_number: int,
        sort_by: str | None,
        sort_order: str | None,
        project_name: str | None,
        deadline: float | None,
        paging: Paging = "auto",
        next_token: str | None = None,
    ) -> AsyncPaginator[M]:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        if page_number < 1:
            raise ValueError(f"page_number must be >= 1, got {page_number}")
        if paging == "cursor" and page_number != 1:
            raise ValueError("page_number is for offset paging; a cursor walk starts at 1")
        limit = OFFSET_PAGING_LIMITS.get(action, 10_000)
        if paging == "offset" and page_number * page_size > limit:
            raise ValueError(
                f"{action}: offset paging stops at {limit} items (page_size x page_number); "
                "use paging='cursor'"
            )
        common = {"Filter": flt, "SortBy": sort_by, "SortOrder": sort_order}
        common["ProjectName"] = self._project(project_name)

        async def get(body: dict[str, Any], deadline: float | None) -> tuple[Any, Any, Any]:
            result, rid = await self._call(action, _compact(body), deadline=deadline)
            raw = result.get("Items")
            total = result.get("TotalCount")
            token = result.get("NextToken")
            if not isinstance(raw, list | None) or not isinstance(total, int | None):
                raise ResponseFormatError(
                    f"{action}: Items is not a list or TotalCount not a number",
                    request_id=rid,
                    retryable=False,
                )
            if not isinstance(token, str | None) or (token is not None and len(token) > 4096):
                raise ResponseFormatError(
                    f"{action}: NextToken is not a string", request_id=rid, retryable=False
                )
            items = [_model(model, item, rid) for item in raw or []]
            if action == "ListAssetGroups":
                self._learn_types((i.id, getattr(i, "group_type", None)) for i in items)
            total = total if isinstance(total, int) and total >= 0 else None
            return items, (total, token), rid

        async def fetch(number: int, deadline: float | None) -> Page[M]:
            body = {**common, "PageNumber": number, "PageSize": page_size}
            items, (total, _), rid = await get(body, deadline)
            return Page(items, total, number, page_size, rid)

        async def cursor(token: str | None, deadline: float | None) -> Page[M]:
            body = {**common, "MaxResults": page_size, "NextToken": token}
            items, (total, next_token), rid = await get(body, deadline)
            return Page(items, total, 1, page_size, rid, next_token=next_token)

        return AsyncPaginator(
            fetch,
            first_page=page_number,
            deadline=deadline,
            max_pages=max(1, -(-limit // page_size) - page_number + 1),
            key=lambda item: item.id,
            name=action,
            cursor=cursor,
            paging=paging,
            offset_limit=limit,
            next_token=next_token,
        )


def _request_id(result: tuple[dict[str, Any], str | None]) -> str | None:
    return result[1]


def _new_id(result: Mapping[str, Any], action: str) -> str:
    new_id = result.get("Id")
    if not isinstance(new_id, str) or not new_id or len(new_id) > 200:
        raise ResponseFormatError(f"{action} answer has no Id", retryable=False)
    return new_id


def _model(cls: type[M], data: Any, request_id: str | None) -> M:
    """``data`` validated as ``cls``; a ``ResponseFormatError`` (never retried, nothing
    chained: pydantic's error holds the server's values) when it does not fit."""
    if not isinstance(data, dict):
        raise ResponseFormatError(
            f"expected an object for {cls.__name__}", request_id=request_id, retryable=False
        )
    problem = None
    try:
        obj = cls.model_validate(data)
    except ValueError as exc:
        problem = f"malformed {cls.__name__}: {exc}"
    if problem is not None:
        raise ResponseFormatError(problem, request_id=request_id, retryable=False)
    obj.request_id = request_id
    return obj


class ArkClient(ArkFamilyClient):
    """Async client of the Ark asset library; see the module docstring for transports.

    Configuration precedence: argument > environment > default. Environment:
    ``VOLC_ACCESSKEY`` / ``VOLC_SECRETKEY`` / ``VOLC_SESSION_TOKEN`` (or the BytePlus names
    ``BYTEPLUS_ACCESSKEY`` / ``BYTEPLUS_SECRETKEY``), ``ARK_REGION``, ``ARK_BASE_URL``,
    ``ARK_API_KEY`` (gateway Bearer key), ``ARK_STYLE`` (official | gateway).

    ``limits="redis://host:6379/0"`` shares the account's rate limits and its Processing
    slots with every process that points at the same Redis; see
    :mod:`chenyu_assets._core.redis_limits`.

    ``processing_slots`` (default 30, the account's cap) is the number of assets this client
    lets be ``Processing`` at once: ``create_asset`` waits for a slot and :attr:`watcher`
    frees it when the asset leaves Processing (or after ``slot_lease`` s). Pass your own
    :class:`Slots`, or None to keep no accounting; ``watch=False`` also waits per asset
    with GetAsset instead of the shared sweep (see :mod:`chenyu_assets.watcher`).
    """

    def __init__(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        region: str = "cn-beijing",
        base_url: str | None = None,
        api_key: str | None = None,
        style: Literal["official", "gateway"] | None = None,
        project_name: str | None = None,
        rates: Mapping[str, Rate | float | str] | None = None,
        limits_profile: str | None = None,
        rate_margin: float = DEFAULT_MARGIN,
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
        if style is None:
            style = "gateway" if api_key and not access_key else "official"
        if style not in ("official", "gateway"):
            raise ConfigurationError(f"style must be 'official' or 'gateway', not {style!r}")
        self.style = style
        self.region = region
        self.project_name = project_name
        self._credentials: Credentials | None = None
        self._bearer: BearerAuth | None = None
        if style == "official":
            if not access_key:
                raise ConfigurationError(
                    "missing access key: pass access_key= or set VOLC_ACCESSKEY"
                    " (BytePlus: BYTEPLUS_ACCESSKEY)"
                )
            if not secret_key:
                raise ConfigurationError(
                    "missing secret key: pass secret_key= or set VOLC_SECRETKEY"
                    " (BytePlus: BYTEPLUS_SECRETKEY)"
                )
            self._credentials = Credentials(access_key, secret_key, session_token)
            for secret in (access_key, secret_key, session_token):
                register_secret(secret)
            self.base_url = (base_url or official_endpoint(region)).rstrip("/")
        else:
            if not api_key:
                raise ConfigurationError("missing gateway key: pass api_key= or set ARK_API_KEY")
            self._bearer = BearerAuth(api_key)
            register_secret(api_key)
            self.base_url = (base_url or GATEWAY_ENDPOINT).rstrip("/")
        parts = check_base_url(self.base_url)
        self._host = parts.netloc
        self._path_prefix = parts.path
        super().__init__(
            account=(access_key if style == "official" else api_key) or "",
            rates=rates,
            limits_profile=limits_profile,
            rate_margin=rate_margin,
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
        return f"<ArkClient style={self.style} region={self.region} base_url={self.base_url}>"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Build from the environment (see the class docstring); keyword arguments win."""
        env = os.environ
        kwargs: dict[str, Any] = {
            "access_key": env.get("VOLC_ACCESSKEY") or env.get("BYTEPLUS_ACCESSKEY"),
            "secret_key": env.get("VOLC_SECRETKEY") or env.get("BYTEPLUS_SECRETKEY"),
            "session_token": env.get("VOLC_SESSION_TOKEN") or env.get("BYTEPLUS_SESSION_TOKEN"),
            "base_url": env.get("ARK_BASE_URL"),
            "api_key": env.get("ARK_API_KEY"),
            "style": env.get("ARK_STYLE") or None,
            "project_name": env.get("ARK_PROJECT_NAME"),
        }
        if env.get("ARK_REGION"):
            kwargs["region"] = env["ARK_REGION"]
        kwargs.update(overrides)
        return cls(**kwargs)

    async def _call(
        self, action: str, body: dict[str, Any], *, deadline: float | None = None
    ) -> tuple[dict[str, Any], str | None]:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if self.style == "official":
            url = f"{self.base_url}/"
            params = [("Action", action), ("Version", ARK_VERSION)]
            parse = parse_volc_envelope
            creds = self._credentials
            if creds is None:  # pragma: no cover - set in __init__ for this style
                raise ConfigurationError("official style needs access_key and secret_key")

            async def prepare(attempt: int) -> Prepared:
                headers = {"Host": self._host, "Content-Type": "application/json"}
                path = self._path_prefix or "/"
                if not path.endswith("/"):
                    path += "/"
                headers.update(
                    sign_request(
                        method="POST",
                        path=path,
                        query=params,
                        headers=headers,
                        body=payload,
                        credentials=creds,
                        region=self.region,
                        now=datetime.now(UTC),
                    )
                )
                del headers["Host"]  # aiohttp sends the same Host itself
                return Prepared(headers=headers, body=payload, params=params)
        else:
            url = f"{self.base_url}/{action}"
            parse = parse_flat_envelope
            bearer = self._bearer
            if bearer is None:  # pragma: no cover - set in __init__ for this style
                raise ConfigurationError("gateway style needs api_key")

            async def prepare(attempt: int) -> Prepared:
                return Prepared(
                    headers={"Authorization": bearer.header(), "Content-Type": "application/json"},
                    body=payload,
                )

        call = self._engine.call(
            action,
            "POST",
            url,
            prepare=prepare,
            parse=parse,
            idempotent=action not in _CREATES,
            deadline=deadline,
        )
        return await logged(log, action, call, _request_id)
