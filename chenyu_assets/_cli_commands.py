"""Small ``chenyu-assets`` commands: upload, get, list, groups (delete: ``_cli_delete``).
Output is JSON lines on stdout (machine-readable); a failure is one ``error:`` line on
stderr (exit 2 for a usage mistake, 4 otherwise; reported by ``cli.main``). Credentials
come from the environment (see the README's configuration table). Signed URLs are bearer
credentials: they are printed only with ``--show-url``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, get_args

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from chenyu_assets._cli_common import EXIT_OK, asset_id_of, at_least, readable_file
from chenyu_assets._cli_delete import add_delete
from chenyu_assets._cli_groups import exact_groups
from chenyu_assets.ark import ArkClient
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.errors import ConfigurationError, NotFoundError
from chenyu_assets.models.ark import AssetStatus

_URL_FIELDS = ("url", "signed_url", "content_url", "URL")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser(
        "upload",
        help="upload files to Chenyu (streamed, <= 100 MB each)",
        description="Upload local files to Chenyu; one JSON line per file on stdout.",
    )
    up.add_argument("files", nargs="+", type=readable_file, metavar="FILE", help="files to send")
    up.add_argument("--ttl-hours", type=at_least(1), default=48, help="hours the URL lives (>= 1)")
    up.add_argument(
        "--media-type",
        choices=("image", "video", "audio", "file"),
        help="the Chenyu media type (default: from the file name)",
    )
    up.add_argument("--show-url", action="store_true", help="print the signed URL too")
    up.set_defaults(handler=lambda a: _run(_upload(a)))

    get = commands.add_parser(
        "get",
        help="show one asset (Ark id, asset://id, or Chenyu asset_... id)",
        description="Show one asset as a JSON line: an Ark asset id or its asset:// "
        "reference (as ingest prints it), or a Chenyu asset_... id.",
    )
    get.add_argument("asset_id", metavar="ASSET", help="asset id or asset://id reference")
    get.add_argument(
        "--service",
        choices=("auto", "ark", "chenyu"),
        default="auto",
        help="which service holds the id; auto: Chenyu for asset_ + 32 hex (its id shape "
        "today), Ark for any other id",
    )
    get.add_argument("--show-url", action="store_true", help="print signed URLs too")
    get.set_defaults(handler=lambda a: _run(_get(a)))

    ls = commands.add_parser(
        "list",
        help="list the assets of a group (JSON lines)",
        description="List the assets of one group, one JSON line each.",
    )
    ls.add_argument("--group-id", required=True, metavar="ID", help="the group's id")
    ls.add_argument(
        "--status",
        action="append",
        dest="statuses",
        type=_status,
        metavar="{" + ",".join(STATUSES) + "}",
        help="only assets in this status (any case; repeatable; default: all)",
    )
    ls.add_argument("--name", help="only names containing this (default: all)")
    ls.add_argument("--limit", type=at_least(0), default=0, help="stop after N assets (0: all)")
    ls.add_argument("--show-url", action="store_true", help="print signed URLs too")
    ls.set_defaults(handler=lambda a: _run(_list(a)))

    groups = commands.add_parser(
        "groups",
        help="list asset groups, or create one",
        description="List the account's asset groups (JSON lines), or create one.",
    )
    groups.add_argument("--name", help="only names containing this (default: all)")
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
    groups.add_argument(
        "--type", default="AIGC", choices=("AIGC", "LivenessFace"), help="the new group's type"
    )
    groups.set_defaults(handler=lambda a: _run(_groups(a)))
    add_delete(commands)


#: the statuses ``list --status`` accepts (as the API spells them: the model's Literal)
STATUSES: tuple[str, ...] = get_args(get_args(AssetStatus)[0])


def _status(text: str) -> str:
    for status in STATUSES:
        if status.lower() == text.strip().lower():
            return status
    raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(STATUSES)}")


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


#: ``get --service auto``: only a heuristic (ids are the server's business, never validated
#: by shape); ``--service`` overrides it.
_CHENYU_ID_SHAPE: Final = re.compile(r"asset_[0-9a-f]{32}")


def service_for(asset_id: str, service: str = "auto") -> str:
    """``ark`` or ``chenyu`` for ``get``: as told, else by the documented heuristic."""
    if service != "auto":
        return service
    return "chenyu" if _CHENYU_ID_SHAPE.fullmatch(asset_id) else "ark"


async def _get(args: argparse.Namespace) -> int:
    asset_id = asset_id_of(args.asset_id)
    if service_for(asset_id, args.service) == "chenyu":
        async with ChenyuClient.from_env() as chenyu:
            found = await chenyu.get(asset_id)
            _emit(found.model_dump(mode="json"), args.show_url)
        return EXIT_OK
    async with ArkClient.from_env() as ark:
        asset = await ark.get_asset(asset_id)
        _emit(asset.model_dump(mode="json"), args.show_url)
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    async with ArkClient.from_env() as ark:
        with contextlib.suppress(NotFoundError):  # the listing says what is wrong
            await ark.get_asset_group(args.group_id)  # its GroupType goes into the listing
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
