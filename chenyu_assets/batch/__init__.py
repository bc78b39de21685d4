"""Bulk ingest: sources, the crash-safe journal and the orchestrator."""

from chenyu_assets.batch.orchestrator import (
    Event,
    IngestOptions,
    IngestReport,
    IngestResult,
    IngestStream,
    ingest,
    open_ingest,
)
from chenyu_assets.batch.sources import BadItem, SourceItem, open_source

__all__ = [
    "BadItem",
    "Event",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "IngestStream",
    "SourceItem",
    "ingest",
    "open_ingest",
    "open_source",
]
