"""Bulk ingest: sources, the crash-safe journal and the orchestrator."""

from chenyu_assets.batch.run import IngestStream, ingest, open_ingest
from chenyu_assets.batch.sources import BadItem, SourceItem, open_source
from chenyu_assets.batch.staging import S3Stage
from chenyu_assets.batch.types import (
    Event,
    IngestOptions,
    IngestReport,
    IngestResult,
    StageStats,
)

__all__ = [
    "BadItem",
    "Event",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "IngestStream",
    "S3Stage",
    "SourceItem",
    "StageStats",
    "ingest",
    "open_ingest",
    "open_source",
]
