"""The ``ingest`` flags of the staging of local files (README: Staging)."""

from __future__ import annotations

import argparse

from chenyu_assets.batch import S3Stage
from chenyu_assets.errors import ConfigurationError
from chenyu_assets.s3 import env_endpoint, env_region

__all__ = ["add_stage_flags", "stage_of"]


def add_stage_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("staging of local files (README: Staging)")
    s.add_argument(
        "--stage",
        metavar="chenyu|s3://BUCKET/PREFIX",
        default="chenyu",
        help="where local files are put for CreateAsset to fetch: Chenyu (default) or your "
        "own S3-compatible bucket (presigned GET URLs; credentials from the AWS chain)",
    )
    s.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS's)",
    )
    s.add_argument(
        "--s3-region", metavar="REGION", help="S3 region (default: AWS_REGION, AWS_DEFAULT_REGION)"
    )
    s.add_argument(
        "--s3-addressing-style",
        choices=("auto", "virtual", "path"),
        default="auto",
        help="bucket in the host name (virtual; Volcengine TOS) or in the path",
    )
    s.add_argument(
        "--s3-url-hours",
        type=float,
        default=12.0,
        metavar="H",
        help="lifetime of the presigned URLs in hours (default 12, at most 168)",
    )
    s.add_argument(
        "--stage-cleanup",
        action="store_true",
        help="delete the staged objects of items that became Active (a re-ingest uploads again)",
    )


def stage_of(args: argparse.Namespace) -> S3Stage | None:
    if args.stage == "chenyu":
        if args.stage_cleanup:
            raise ConfigurationError("--stage-cleanup needs --stage s3://bucket/prefix")
        return None
    return S3Stage.from_uri(
        args.stage,
        endpoint_url=args.s3_endpoint or env_endpoint(),
        region=args.s3_region or env_region(),
        addressing_style=args.s3_addressing_style,
        url_ttl=args.s3_url_hours * 3600.0,
        cleanup=args.stage_cleanup,
    )
