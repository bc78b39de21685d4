"""``chenyu-assets delete``: assets (ids or ``asset://`` references) or a whole group.

Deleting cannot be undone, so on a terminal it asks first; ``--yes`` skips the question and
is required when stdin is not a terminal (a script that forgot it is refused, exit 2, with
nothing deleted). ``--dry-run`` looks each target up (read-only) and deletes nothing.
Output: one JSON line per target on stdout; exit 3 when some deletes failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from chenyu_assets._cli_common import EXIT_ITEMS_FAILED, EXIT_OK, UsageError, asset_id_of, plain
from chenyu_assets.ark import ArkClient
from chenyu_assets.errors import ChenyuAssetsError

__all__ = ["add_delete"]


def add_delete(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "delete",
        help="delete assets, or a group with every asset in it",
        description="Delete Ark assets (ids or asset:// references) or, with --group-id, "
        "a whole group and every asset in it. Asks for confirmation on a terminal.",
    )
    p.add_argument("assets", nargs="*", metavar="ASSET", help="asset ids or asset://id references")
    p.add_argument("--group-id", metavar="ID", help="delete this group (and all its assets)")
    p.add_argument(
        "--yes", action="store_true", help="do not ask (required when stdin is not a terminal)"
    )
    p.add_argument("--dry-run", action="store_true", help="look the targets up, delete nothing")
    p.set_defaults(handler=cmd_delete)


def cmd_delete(args: argparse.Namespace) -> int:
    if bool(args.assets) == bool(args.group_id):
        raise UsageError("give asset ids (or asset:// references) or --group-id, not both")
    ids = [asset_id_of(a) for a in args.assets]
    what = (
        f"group {args.group_id} and every asset in it"
        if args.group_id
        else (
            f"{len(ids)} asset{'s' if len(ids) != 1 else ''} ({', '.join(ids[:5])}"
            + (", ..." if len(ids) > 5 else "")
            + ")"
        )
    )
    if not args.dry_run and not args.yes:
        _confirm(plain(what))
    return asyncio.run(_delete(args, ids))


def _confirm(what: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to delete {what} without --yes: stdin is not a terminal to ask on"
        )
    sys.stderr.write(f"delete {what}? This cannot be undone. [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("not confirmed: nothing deleted")


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


async def _delete(args: argparse.Namespace, ids: list[str]) -> int:
    failed = 0
    async with ArkClient.from_env() as ark:
        if args.group_id:
            if args.dry_run:
                group = await ark.get_asset_group(args.group_id)
                _emit({"would_delete": "group", "id": group.id, "name": group.name})
                return EXIT_OK
            await ark.delete_asset_group(args.group_id)
            _emit({"deleted": "group", "id": args.group_id})
            return EXIT_OK
        for asset_id in ids:
            try:
                if args.dry_run:
                    asset = await ark.get_asset(asset_id)
                    _emit({"would_delete": "asset", "id": asset.id, "name": asset.name})
                    continue
                await ark.delete_asset(asset_id)
                _emit({"deleted": "asset", "id": asset_id})
            except ChenyuAssetsError as exc:  # the others are still deleted
                failed += 1
                code = getattr(exc, "code", None)
                _emit({"id": asset_id, "error": plain(str(exc)), "error_code": code})
    return EXIT_ITEMS_FAILED if failed else EXIT_OK
