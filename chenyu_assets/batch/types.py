"""The public data types of a bulk ingest: options, per-item results, events, report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from chenyu_assets.limits import MAX_PROCESSING

if TYPE_CHECKING:
    from chenyu_assets.batch.staging import S3Stage

__all__ = [
    "RETRYABLE_CODES",
    "Event",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "StageStats",
    "Status",
    "retryable",
]

Status = Literal["active", "failed", "skipped", "planned"]

#: Failure codes that say nothing about the content: a rerun tries the item again. Ours
#: (an upload that did not succeed: the host unreachable, misconfigured or its retry budget
#: spent; CreateAsset tries all transient) and the service's transient ``Failed`` codes
#: (api-reference §6), matched on the last dotted part (``InvalidParameter.DownloadFailed``).
#: Every other code is a verdict on the item (media checks, content codes): retried only
#: with ``retry_failed``.
RETRYABLE_CODES: Final = frozenset(
    {
        "upload_failed",
        "create_retries_exhausted",
        "DownloadFailed",
        "TranscodingFailed",
        "InternalError",
    }
)


def retryable(code: str | None) -> bool:
    """Whether a failure with this code may succeed when simply tried again."""
    return code is not None and code.rpartition(".")[2] in RETRYABLE_CODES


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """Knobs of one ingest. Concurrency is per stage; all stages share the rate limits."""

    max_processing: int = MAX_PROCESSING
    preflight_concurrency: int = 2
    upload_concurrency: int = 4
    create_concurrency: int = 8
    queue_size: int = 64
    poll_min_interval: float = 0.25
    poll_starved_interval: float = 0.1
    poll_max_interval: float = 10.0
    poll_lookback: float = 2.0
    stale_after: float = 15.0
    processing_timeout: float = 3600.0
    reconcile_wait: float = 10.0
    reconcile_interval: float = 0.5
    #: how long reconciliation retries a failing ListAssets before the run stops
    reconcile_timeout: float = 60.0
    url_min_validity: float = 3600.0
    preflight: bool = True
    dry_run: bool = False
    allow_private_urls: bool = False
    #: let manifest paths leave the manifest's folder (else ``outside_manifest``)
    allow_outside_paths: bool = False
    #: directory walks: follow symlinked directories that stay inside the root (each
    #: directory walked once); else they are ignored as ``symlinked_directory``
    follow_symlinks: bool = False
    #: directory walks: glob rules (see :mod:`chenyu_assets.batch.filters`); excludes first
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    ignore_case: bool = False
    #: a file whose content changed after its asset became Active: delete that asset and
    #: create it anew under the same name (else ``skipped`` / ``source_changed``)
    replace_changed: bool = False
    upload_ttl_hours: int = 48
    create_unit_timeout: float = 120.0
    #: where local files are staged: None uploads them to Chenyu (``chenyu=`` client);
    #: an :class:`~chenyu_assets.batch.staging.S3Stage` puts them in your own S3 bucket
    stage: S3Stage | None = None
    #: also retry the items that failed for their content (``failed``, not ``retryable``)
    #: and the skipped ones; the retryable ones are retried by every run
    retry_failed: bool = False
    #: list the group once before the first create and adopt the assets it already holds
    #: under the items' Names (see :mod:`chenyu_assets.batch.adopt`); off: a new journal
    #: creates every item again (only for a group known to be new, or in tests of
    #: reconciliation itself)
    adopt_existing: bool = True


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The end of one item. ``resumed``: it had finished in an earlier run."""

    key: str
    name: str
    status: Status
    source: str
    asset_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    resumed: bool = False
    #: the asset was found in the group by its Name (another journal made it)
    adopted: bool = False

    @property
    def retryable(self) -> bool:
        """A failure that a plain rerun tries again (see :func:`retryable`)."""
        return self.status == "failed" and retryable(self.error_code)

    @property
    def reference(self) -> str | None:
        return f"asset://{self.asset_id}" if self.asset_id and self.status == "active" else None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "status": self.status,
            "source": self.source,
            "asset_id": self.asset_id,
            "reference": self.reference,
            "error_code": self.error_code,
            "message": self.message,
            "resumed": self.resumed,
            "adopted": self.adopted,
            "retryable": self.retryable,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """Progress: queued, uploaded, created, polled, done, retried, rate_limited, recovered,
    ignored (a file the walk passed over: ``data["reason"]``)."""

    kind: str
    key: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StageStats:
    """What the S3 stage did in one run: HEADs, uploads (objects), parts sent, objects
    reused (a HEAD found them), URLs presigned / refreshed before CreateAsset, objects
    deleted by clean-up."""

    heads: int = 0
    uploads: int = 0
    parts: int = 0
    reused: int = 0
    presigned: int = 0
    refreshed: int = 0
    deleted: int = 0


@dataclass(slots=True)
class IngestReport:
    total: int = 0
    active: int = 0
    failed: int = 0
    skipped: int = 0
    planned: int = 0
    resumed: int = 0
    recovered: int = 0
    #: items whose asset was found in the group by Name instead of created
    adopted: int = 0
    #: of ``failed``: those a plain rerun tries again
    retryable: int = 0
    #: Failed assets deleted so that their items could be created anew
    deleted_failed: int = 0
    creates: int = 0
    status_calls: int = 0
    rate_limited: int = 0
    retries: int = 0
    max_processing_seen: int = 0
    elapsed: float = 0.0
    fatal: str | None = None
    interrupted: bool = False
    failures: dict[str, int] = field(default_factory=dict)
    #: what the walk passed over on purpose (not media, excluded, symlinked directories):
    #: not results, never part of the exit code
    ignored: int = 0
    ignored_reasons: dict[str, int] = field(default_factory=dict)
    #: the S3 stage's counters (None on the Chenyu path)
    staging: StageStats | None = None

    @property
    def status_calls_per_asset(self) -> float:
        done = self.active + self.failed - self.resumed
        return self.status_calls / done if done > 0 else 0.0

    @property
    def finished(self) -> int:
        return self.active + self.failed + self.skipped + self.planned

    def ignore(self, reason: str) -> None:
        self.ignored += 1
        self.ignored_reasons[reason] = self.ignored_reasons.get(reason, 0) + 1

    def count(self, result: IngestResult) -> None:
        self.total += 1
        self.resumed += result.resumed
        if result.status == "active":
            self.active += 1
        elif result.status == "failed":
            self.failed += 1
            self.retryable += result.retryable
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.planned += 1
        if result.status in ("failed", "skipped") and result.error_code:
            self.failures[result.error_code] = self.failures.get(result.error_code, 0) + 1
