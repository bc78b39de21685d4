"""Bulk ingest: sources, the crash-safe journal and the orchestrator."""

from chenyu_assets.batch.filters import PathFilter
from chenyu_assets.batch.run import IngestStream, ingest, open_ingest
from chenyu_assets.batch.sources import BadItem, IgnoredItem, SourceItem, open_source
from chenyu_assets.batch.types import (
    Event,
    IngestOptions,
    IngestReport,
    IngestResult,
    Outcome,
    StageStats,
)
from chenyu_assets.s3 import S3Stage

__all__ = [
    "BadItem",
    "Event",
    "IgnoredItem",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "IngestStream",
    "Outcome",
    "PathFilter",
    "S3Stage",
    "SourceItem",
    "StageStats",
    "ingest",
    "open_ingest",
    "open_source",
]
