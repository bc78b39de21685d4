"""Asset groups by exact name, for the CLI (``ingest --group``, ``groups --create``).

The service's ``Filter.Name`` is a substring match, so names are compared on the client.
Two groups with one exact name are an error listing their ids (exit 4). A find-or-create
converges when several processes race: :data:`RACE_SETTLE` seconds after creating, the
name is listed again and the oldest group of that name (``CreateTime``, then id) wins; a
loser deletes its own group while it is still empty. A lookup that finds two groups, or
a single one created in the last :data:`RECENT` seconds (it may be a racer's extra group,
about to be deleted), lists once more after ``2 * RACE_SETTLE`` seconds before using it or
calling the name ambiguous.
"""

from __future__ import annotations

import contextlib
import time

import anyio

from chenyu_assets.ark import ArkFamilyClient
from chenyu_assets.errors import ConfigurationError, NotFoundError
from chenyu_assets.models.ark import AssetGroup

__all__ = ["GROUP_LOOKUP_DEADLINE", "exact_groups", "resolve_group"]

#: Seconds the ``--group`` lookup (a bounded ListAssetGroups walk) may take.
GROUP_LOOKUP_DEADLINE = 60.0
#: Seconds between creating a group and listing its name again (racers create theirs
#: within a few requests of each other), and before listing a name that two groups have
#: once more (a race's loser deletes its group within a few requests).
RACE_SETTLE = 2.0
#: A group younger than this may be a racer's extra one: the lookup waits before using it.
RECENT = 60.0


async def exact_groups(ark: ArkFamilyClient, name: str) -> list[AssetGroup]:
    """The groups named exactly ``name`` (the service's Name filter is fuzzy), oldest
    first."""
    found = [
        group
        async for group in ark.list_asset_groups(name=name, deadline=GROUP_LOOKUP_DEADLINE)
        if group.name == name
    ]
    found.sort(key=lambda g: (g.create_time is None, g.create_time, g.id))
    return found


def _recent(group: AssetGroup) -> bool:
    """Created within :data:`RECENT` seconds (by this machine's clock: a skewed clock
    only makes the lookup wait more or less often, never pick another group)."""
    created = group.create_time
    return created is not None and abs(time.time() - created.timestamp()) < RECENT


def ambiguous(name: str, groups: list[AssetGroup]) -> ConfigurationError:
    ids = ", ".join(g.id for g in groups)
    return ConfigurationError(
        f"{len(groups)} groups are named exactly {name!r} ({ids}); pass --group-id"
    )


async def resolve_group(
    ark: ArkFamilyClient, group_id: str | None, name: str | None, *, create: bool = True
) -> str | None:
    """``group_id`` as given, else the group named exactly ``name`` (default
    ``chenyu-assets-ingest``), created if there is none (see the module docstring); with
    ``create=False`` (a dry run) None instead of creating one."""
    if group_id:
        with contextlib.suppress(NotFoundError):  # the ingest reports a missing group itself
            await ark.get_asset_group(group_id)  # learns its GroupType (api-reference §6)
        return group_id
    name = name or "chenyu-assets-ingest"
    found = await exact_groups(ark, name)
    if len(found) > 1 or (found and _recent(found[0])):
        # maybe racing creators, whose loser is not deleted yet: look again once they
        # have settled (a group seen alone may still be a loser, about to go)
        await anyio.sleep(2 * RACE_SETTLE)
        found = await exact_groups(ark, name)
    if len(found) > 1:
        raise ambiguous(name, found)
    if found:
        return found[0].id
    if not create:
        return None
    ours = await ark.create_asset_group(name=name, description="created by chenyu-assets ingest")
    # another process may have created one at the same time: the oldest wins. The look
    # waits RACE_SETTLE first, so that every racer sees every racer's group (one that
    # looked at once could see only its own and keep it, while a later one, seeing both
    # with CreateTime tied to the second, kept the one with the smaller id)
    await anyio.sleep(RACE_SETTLE)
    found = await exact_groups(ark, name)
    if not found or found[0].id == ours:
        return ours
    if not await ark.list_assets(group_ids=[ours], page_size=1):
        await ark.delete_asset_group(ours)
    return found[0].id
