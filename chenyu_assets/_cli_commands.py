"""Small ``chenyu-assets`` commands: upload, get, list, groups. Output is JSON lines on
stdout (machine-readable); a failure is one ``error:`` line on stderr (exit 2 for a usage
mistake, 4 otherwise; reported by ``cli.main``). Credentials come from the environment (see
the README's configuration table). Signed URLs are bearer credentials: they are printed
only with ``--show-url``."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from chenyu_assets._cli_common import EXIT_OK, at_least, readable_file
from chenyu_assets._cli_groups import exact_groups
from chenyu_assets.ark import ArkClient
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import ConfigurationError

_URL_FIELDS = ("url", "signed_url", "content_url", "URL")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("upload", help="upload files to Chenyu (streamed, <= 100 MB each)")
    up.add_argument("files", nargs="+", type=readable_file, metavar="FILE")
    up.add_argument("--ttl-hours", type=at_least(1), default=48, help="hours (>= 1; default 48)")
    up.add_argument("--media-type", choices=("image", "video", "audio", "file"))
    up.add_argument("--show-url", action="store_true", help="print the signed URL too")
    up.set_defaults(handler=lambda a: _run(_upload(a)))

    get = commands.add_parser("get", help="show one asset (Ark id, or Chenyu asset_... id)")
    get.add_argument("asset_id")
    get.add_argument("--show-url", action="store_true")
    get.set_defaults(handler=lambda a: _run(_get(a)))

    ls = commands.add_parser("list", help="list the assets of a group (JSON lines)")
    ls.add_argument("--group-id", required=True)
    ls.add_argument("--status", action="append", dest="statuses", help="repeatable")
    ls.add_argument("--name", help="substring match")
    ls.add_argument("--limit", type=at_least(0), default=0, help="stop after N assets (0: all)")
    ls.add_argument("--show-url", action="store_true")
    ls.set_defaults(handler=lambda a: _run(_list(a)))

    groups = commands.add_parser("groups", help="list asset groups, or create one")
    groups.add_argument("--name", help="substring match")
    groups.add_argument(
        "--create",
        metavar="NAME",
        help="create a group with this name (refused when one already has exactly this name)",
    )
    groups.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="with --create: create it even if a group with exactly this name exists",
    )
    groups.add_argument("--type", default="AIGC", choices=("AIGC", "LivenessFace"))
    groups.set_defaults(handler=lambda a: _run(_groups(a)))


def _run(job: Awaitable[int]) -> int:
    return asyncio.run(job)  # type: ignore[arg-type]


def _advancer(progress: Progress, task: TaskID) -> Callable[[int], None]:
    def advance(delta: int) -> None:  # negative when an attempt restarts
        progress.advance(task, delta)

    return advance


def _emit(data: dict[str, Any], show_url: bool) -> None:
    if not show_url:
        data = {k: v for k, v in data.items() if k not in _URL_FIELDS}
    print(json.dumps(data, ensure_ascii=False, default=str))


async def _upload(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    async with ChenyuClient.from_env() as chenyu:
        with Progress(
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            for path in args.files:
                task = progress.add_task(path.name, total=None)
                advance = _advancer(progress, task)
                asset = await chenyu.upload(
                    path, ttl_hours=args.ttl_hours, media_type=args.media_type, on_progress=advance
                )
                _emit(asset.model_dump(mode="json"), args.show_url)
    return EXIT_OK


async def _get(args: argparse.Namespace) -> int:
    if args.asset_id.startswith("asset_"):
        async with ChenyuClient.from_env() as chenyu:
            found = await chenyu.get(args.asset_id)
            _emit(found.model_dump(mode="json"), args.show_url)
        return EXIT_OK
    async with ArkClient.from_env() as ark:
        asset = await ark.get_asset(args.asset_id)
        _emit(asset.model_dump(mode="json"), args.show_url)
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    async with ArkClient.from_env() as ark:
        n = 0
        async for asset in ark.list_assets(
            group_ids=[args.group_id], statuses=args.statuses, name=args.name
        ):
            _emit(asset.model_dump(mode="json"), args.show_url)
            n += 1
            if args.limit and n >= args.limit:
                break
    return EXIT_OK


async def _groups(args: argparse.Namespace) -> int:
    async with ArkClient.from_env() as ark:
        if args.create:
            existing = [] if args.allow_duplicate else await exact_groups(ark, args.create)
            if existing:
                ids = ", ".join(g.id for g in existing)
                raise ConfigurationError(
                    f"a group named exactly {args.create!r} exists ({ids}); "
                    "use it, or pass --allow-duplicate"
                )
            group_id = await ark.create_asset_group(name=args.create, group_type=args.type)
            _emit({"id": group_id, "name": args.create}, False)
            return EXIT_OK
        async for group in ark.list_asset_groups(name=args.name):
            _emit(group.model_dump(mode="json"), False)
    return EXIT_OK
