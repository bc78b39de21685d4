"""The ten Ark asset-library actions, shared by the Ark, gateway and private-avatar routes.

Each action takes the authenticated :class:`~chenyu_assets.emulator.pipeline.Call` and its
:class:`~chenyu_assets.emulator.wire.Params` and returns the ``Result`` object. Groups
and assets are scoped by account and ``ProjectName`` (default ``default``); ids outside the
caller's scope are ``NotFound.group_id`` / ``NotFound.asset_id``.

Paging of ListAssets / ListAssetGroups (:class:`Paging`) is as strict as the real service may
be (api-reference §6):

- ``PageNumber``/``PageSize`` (the primary form; ``TotalCount`` in the answer), refused with
  ``InvalidParameter.PageNumber`` past :data:`~chenyu_assets.spec.OFFSET_PAGING_LIMITS`;
- ``MaxResults`` (1–100, default 10) + ``NextToken``: no ``TotalCount``; an empty
  ``NextToken`` ends the walk; no offset limit. Tokens are opaque and bound to the query that
  issued them (filter, sort, scope): another query's token is ``InvalidParameter.NextToken``;
- both styles in one request: ``InvalidParameter.NextToken``.

The gateway serves the same actions (:data:`GATEWAY_ACTIONS`) with two variants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from yarl import URL

from chenyu_assets.emulator.pipeline import Call, EmulatorState
from chenyu_assets.emulator.store import AssetRec, GroupRec, new_ark_id
from chenyu_assets.emulator.wire import ApiError, Params, invalid
from chenyu_assets.spec import (
    ASSET_TYPES,
    DEFAULT_PAGE_SIZE,
    DESCRIPTION_MAX,
    GROUP_TYPES,
    MAX_PAGE_SIZE,
    NAME_MAX,
    OFFSET_PAGING_LIMITS,
    SORT_BY,
    SORT_ORDERS,
    STATUSES,
)

__all__ = ["ACTIONS", "GATEWAY_ACTIONS", "Paging", "asset_view", "create_asset"]

_URL_MAX = 4096

T = TypeVar("T", GroupRec, AssetRec)
Action = Callable[[Call, Params], dict[str, Any]]


def rfc3339(seconds: float) -> str:
    """``2026-03-18T03:33:32Z``."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _project(p: Params) -> str:
    value = p.text("ProjectName", max_len=64, default="default", allow_empty=False)
    return value or "default"


def group_view(g: GroupRec) -> dict[str, Any]:
    """A group as GetAssetGroup / ListAssetGroups show it."""
    return {
        "Id": g.id,
        "Name": g.name,
        "Description": g.description,
        "GroupType": g.group_type,
        "ProjectName": g.project,
        "CreateTime": rfc3339(g.create_time),
        "UpdateTime": rfc3339(g.update_time),
    }


def asset_view(state: EmulatorState, a: AssetRec) -> dict[str, Any]:
    """An asset as GetAsset / ListAssets show it (``URL`` is signed, and empty until Active;
    ``Error`` only when Failed)."""
    view: dict[str, Any] = {
        "Id": a.id,
        "Name": a.name,
        "URL": state.ark_signed_url(a) if a.status == "Active" else "",
        "AssetType": a.asset_type,
        "GroupId": a.group_id,
        "Status": a.status,
        "ProjectName": a.project,
        "CreateTime": rfc3339(a.create_time),
        "UpdateTime": rfc3339(a.create_time if state.config.freeze_update_time else a.update_time),
    }
    if a.status == "Failed":
        view["Error"] = {"Code": a.error_code or "", "Message": a.error_message or ""}
    return view


def _group(call: Call, project: str, group_id: str) -> GroupRec:
    rec = call.state.store.get_group(call.account.name, project, group_id)
    if rec is None:
        raise ApiError("NotFound.group_id", f"the asset group {group_id} does not exist")
    return rec


def _asset(call: Call, project: str, asset_id: str) -> AssetRec:
    rec = call.state.store.get_asset(call.account.name, project, asset_id)
    if rec is None:
        raise ApiError("NotFound.asset_id", f"the asset {asset_id} does not exist")
    return rec


def _update(call: Call, rec: T, save: Callable[[T], None], **changes: str | None) -> dict[str, Any]:
    """Set the fields that were sent, move UpdateTime, persist: ``{}``."""
    for field, value in changes.items():
        if value is not None:
            setattr(rec, field, value)
    rec.update_time = call.state.clock.now()
    save(rec)
    return {}


def _unique_id(prefix: str, now: float, taken: Callable[[str], bool]) -> str:
    while True:
        candidate = new_ark_id(prefix, now)
        if not taken(candidate):
            return candidate


# -- groups --------------------------------------------------------------------------------


def _add_group(
    call: Call, project: str, name: str, description: str, group_type: str, *, implicit: bool
) -> GroupRec:
    """A new group of the caller's account (an implicit one is never hidden by list lag)."""
    store, now = call.state.store, call.state.clock.now()
    rec = GroupRec(
        id=_unique_id("group", now, store.group_id_taken),
        account=call.account.name,
        project=project,
        name=name,
        description=description,
        group_type=group_type,
        create_time=now,
        update_time=now,
        created_t=None if implicit else call.t,
    )
    store.add_group(rec)
    return rec


def create_asset_group(call: Call, p: Params) -> dict[str, Any]:
    """CreateAssetGroup: ``{Id}``."""
    name = p.need_text("Name", max_len=NAME_MAX)
    description = p.text("Description", max_len=DESCRIPTION_MAX, default="") or ""
    group_type = p.enum("GroupType", GROUP_TYPES, default="AIGC") or "AIGC"
    return {"Id": _add_group(call, _project(p), name, description, group_type, implicit=False).id}


def get_asset_group(call: Call, p: Params) -> dict[str, Any]:
    """GetAssetGroup."""
    group_id = p.need_text("Id")
    return group_view(_group(call, _project(p), group_id))


def update_asset_group(call: Call, p: Params) -> dict[str, Any]:
    """UpdateAssetGroup: only Name and Description change."""
    group_id = p.need_text("Id")
    name = p.text("Name", max_len=NAME_MAX, allow_empty=False)
    description = p.text("Description", max_len=DESCRIPTION_MAX)
    rec = _group(call, _project(p), group_id)
    return _update(call, rec, call.state.store.save_group, name=name, description=description)


def delete_asset_group(call: Call, p: Params) -> dict[str, Any]:
    """DeleteAssetGroup: the group and every asset in it."""
    group_id = p.need_text("Id")
    rec = _group(call, _project(p), group_id)
    for asset in call.state.store.delete_group(rec):
        call.state.processor.forget(asset.id)
    return {}


def list_asset_groups(call: Call, p: Params) -> dict[str, Any]:
    """ListAssetGroups: Filter{Name, GroupIds, GroupType}, sorting and paging."""
    project = _project(p)
    f = p.obj("Filter")
    name = f.text("Name", max_len=NAME_MAX)
    group_ids = f.text_list("GroupIds")
    group_type = f.enum("GroupType", GROUP_TYPES, default=None)
    sort_by = p.enum("SortBy", SORT_BY["ListAssetGroups"], default="CreateTime")
    page = Paging(p, "ListAssetGroups", f"{call.account.name}/{project}")
    items: Iterable[GroupRec] = call.state.store.groups(call.account.name, project)
    if group_ids is not None:
        wanted = set(group_ids)
        items = (g for g in items if g.id in wanted)
    if group_type is not None:
        items = (g for g in items if g.group_type == group_type)
    items = _visible(call, items, name)
    chosen = _sorted(list(items), sort_by or "CreateTime", page.descending)
    return page.result(chosen, group_view)


# -- assets --------------------------------------------------------------------------------


def _check_url(value: str) -> None:
    if value.lower().startswith("data:"):
        raise invalid("URL", "data URIs are not accepted; give a public http(s) URL")
    try:
        url = URL(value)
    except ValueError:
        raise invalid("URL", "not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise invalid("URL", "must be a public http(s) URL")


def create_asset(call: Call, p: Params, *, group: GroupRec | None = None) -> dict[str, Any]:
    """CreateAsset: ``{Id}``; the asset starts Processing. ``group`` skips GroupId (gateway)."""
    group_id = p.need_text("GroupId") if group is None else group.id
    url = p.need_text("URL", max_len=_URL_MAX)
    asset_type = p.enum("AssetType", ASSET_TYPES, required=True, default=None) or "Image"
    name = p.text("Name", max_len=NAME_MAX, default="") or ""
    project = _project(p) if group is None else group.project
    _check_url(url)
    if group is None:
        group = _group(call, project, group_id)
    state, account = call.state, call.account
    cfg = state.config
    if cfg.enforce_limits and state.store.processing_count(account.name) >= cfg.max_processing:
        raise call.refuse_flow(f"at most {cfg.max_processing} assets may be Processing at once")
    now = state.clock.now()
    rec = AssetRec(
        id=_unique_id("asset", now, state.store.asset_id_taken),
        account=account.name,
        project=project,
        group_id=group.id,
        name=name,
        source_url=url,
        asset_type=asset_type,
        status="Processing",
        error_code=None,
        error_message=None,
        create_time=now,
        update_time=now,
        created_t=call.t,
    )
    state.store.add_asset(rec)
    state.processor.schedule(rec, stuck=call.stuck)
    return {"Id": rec.id}


def get_asset(call: Call, p: Params) -> dict[str, Any]:
    """GetAsset."""
    asset_id = p.need_text("Id")
    return asset_view(call.state, _asset(call, _project(p), asset_id))


def update_asset(call: Call, p: Params) -> dict[str, Any]:
    """UpdateAsset: only Name changes."""
    asset_id = p.need_text("Id")
    name = p.text("Name", max_len=NAME_MAX)
    return _update(
        call, _asset(call, _project(p), asset_id), call.state.store.save_asset, name=name
    )


def delete_asset(call: Call, p: Params) -> dict[str, Any]:
    """DeleteAsset."""
    asset_id = p.need_text("Id")
    rec = _asset(call, _project(p), asset_id)
    call.state.store.delete_asset(rec)
    call.state.processor.forget(rec.id)
    return {}


def list_assets(call: Call, p: Params) -> dict[str, Any]:
    """ListAssets: Filter{GroupIds, GroupType, Statuses, Name}, sorting and paging."""
    project = _project(p)
    f = p.obj("Filter")
    group_ids = f.text_list("GroupIds")
    group_type = f.enum("GroupType", GROUP_TYPES, default=None)
    statuses = f.text_list("Statuses", max_items=len(STATUSES))
    if statuses is not None and any(s not in STATUSES for s in statuses):
        raise invalid("Filter.Statuses", f"each must be one of {', '.join(STATUSES)}")
    name = f.text("Name", max_len=NAME_MAX)
    sort_by = p.enum("SortBy", SORT_BY["ListAssets"], default="CreateTime")
    page = Paging(p, "ListAssets", f"{call.account.name}/{project}")
    store, account = call.state.store, call.account.name
    items: Iterable[AssetRec] = store.assets(account, project, group_ids)
    if group_type is not None:
        types = {g.id: g.group_type for g in store.groups(account, project)}
        items = (a for a in items if types.get(a.group_id) == group_type)
    if statuses is not None:
        wanted = set(statuses)
        items = (a for a in items if a.status in wanted)
    items = _visible(call, items, name)
    cfg = call.state.config
    if cfg.freeze_update_time and sort_by == "UpdateTime":
        sort_by = "CreateTime"  # the UpdateTime every answer shows
    chosen = _sorted(list(items), sort_by or "CreateTime", page.descending)
    if cfg.ignore_sort:  # a server that does not honour SortBy/SortOrder
        random.Random(f"ignore-sort:{cfg.seed}:{call.t!r}").shuffle(chosen)
    return page.result(chosen, lambda a: asset_view(call.state, a))


def gateway_group(call: Call) -> GroupRec:
    """The account's implicit group for the overseas gateway (created on first use)."""
    store, key = call.state.store, f"gateway_group:{call.account.name}"
    group_id = store.meta(key)
    found = store.get_group(call.account.name, "default", group_id) if group_id else None
    if found is not None:
        return found
    what = "Implicit group of the overseas gateway's CreateAsset"
    rec = _add_group(call, "default", "gateway-default", what, "AIGC", implicit=True)
    store.set_meta(key, rec.id)
    return rec


# -- listing helpers and paging -------------------------------------------------------------


def _visible(call: Call, items: Iterable[T], name: str | None) -> Iterable[T]:
    """The items whose name holds ``name`` (fuzzy), minus those a list lag hides."""
    if name:
        needle = name.casefold()
        items = (i for i in items if needle in i.name.casefold())
    lag = max(call.state.config.list_lag, call.list_lag)
    if lag <= 0:
        return items
    cutoff = call.t - lag
    return (i for i in items if i.created_t is None or i.created_t <= cutoff)


def _sorted(items: list[T], sort_by: str, descending: bool) -> list[T]:
    def key(item: T) -> tuple[Any, ...]:
        if sort_by == "UpdateTime":
            return (item.update_time, item.create_time, item.id)
        if sort_by == "GroupId" and isinstance(item, AssetRec):
            return (item.group_id, item.create_time, item.id)
        return (item.create_time, item.id)

    items.sort(key=key, reverse=descending)
    return items


_PAGE_NUMBER_MAX = 1_000_000
_I = TypeVar("_I")


class Paging:
    """PageNumber/PageSize (primary) or MaxResults/NextToken — never both."""

    def __init__(self, p: Params, action: str, scope: str) -> None:
        order = p.enum("SortOrder", SORT_ORDERS, default="Desc")
        self.descending = order != "Asc"
        self.token_style = p.has("MaxResults") or p.has("NextToken")
        if self.token_style and (p.has("PageNumber") or p.has("PageSize")):
            raise invalid("NextToken", "PageNumber/PageSize and MaxResults/NextToken are exclusive")
        query = {k: v for k, v in p.as_dict().items() if k not in ("MaxResults", "NextToken")}
        material = json.dumps([action, scope, query], sort_keys=True, default=str).encode()
        self._query = hashlib.sha256(material).hexdigest()[:16]
        if self.token_style:
            self.size = p.integer("MaxResults", default=DEFAULT_PAGE_SIZE, lo=1, hi=MAX_PAGE_SIZE)
            self.offset = self._decode(p.text("NextToken") or "")
            self.number = 1
        else:
            self.number = p.integer("PageNumber", default=1, lo=1, hi=_PAGE_NUMBER_MAX)
            self.size = p.integer("PageSize", default=DEFAULT_PAGE_SIZE, lo=1, hi=MAX_PAGE_SIZE)
            limit = OFFSET_PAGING_LIMITS.get(action)
            if limit is not None and self.number * self.size > limit:
                raise invalid(
                    "PageNumber",
                    f"PageSize x PageNumber must not pass {limit}; page further with "
                    "MaxResults/NextToken",
                )
            self.offset = (self.number - 1) * self.size

    def result(self, items: list[_I], view: Callable[[_I], dict[str, Any]]) -> dict[str, Any]:
        chunk = items[self.offset : self.offset + self.size]
        out: dict[str, Any] = {"Items": [view(i) for i in chunk]}
        if self.token_style:
            end = self.offset + len(chunk)
            out["MaxResults"] = self.size
            out["NextToken"] = self._encode(end) if end < len(items) else ""
        else:
            out["TotalCount"] = len(items)
            out["PageNumber"] = self.number
            out["PageSize"] = self.size
        return out

    def _encode(self, offset: int) -> str:
        raw = json.dumps({"o": offset, "q": self._query}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode(self, token: str) -> int:
        if not token:
            return 0
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise invalid("NextToken", "not a token this service issued") from None
        offset = data.get("o") if isinstance(data, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise invalid("NextToken", "not a token this service issued")
        if data.get("q") != self._query:
            raise invalid("NextToken", "the token belongs to another query")
        return offset


ACTIONS: dict[str, Action] = {
    "CreateAssetGroup": create_asset_group,
    "GetAssetGroup": get_asset_group,
    "ListAssetGroups": list_asset_groups,
    "UpdateAssetGroup": update_asset_group,
    "DeleteAssetGroup": delete_asset_group,
    "CreateAsset": create_asset,
    "GetAsset": get_asset,
    "ListAssets": list_assets,
    "UpdateAsset": update_asset,
    "DeleteAsset": delete_asset,
}


def _gateway_create_asset(call: Call, p: Params) -> dict[str, Any]:
    """CreateAsset without a GroupId goes to the account's implicit gateway group."""
    if p.has("GroupId"):
        return create_asset(call, p)
    return create_asset(call, p, group=gateway_group(call))


def _gateway_get_asset(call: Call, p: Params) -> dict[str, Any]:
    """GetAsset's published gateway fields only."""
    view = get_asset(call, p)
    keys = ("Id", "Status", "AssetType", "Name", "URL", "CreateTime", "UpdateTime", "Error")
    return {k: view[k] for k in keys if k in view}


GATEWAY_ACTIONS: dict[str, Action] = {
    **ACTIONS,
    "CreateAsset": _gateway_create_asset,
    "GetAsset": _gateway_get_asset,
}
