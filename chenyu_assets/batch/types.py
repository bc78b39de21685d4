"""The public data types of a bulk ingest: options, per-item results, events, report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from chenyu_assets.limits import MAX_PROCESSING

if TYPE_CHECKING:
    from chenyu_assets.s3 import S3Stage

__all__ = [
    "RETRYABLE_CODES",
    "Event",
    "IngestOptions",
    "IngestReport",
    "IngestResult",
    "Outcome",
    "StageStats",
    "Status",
    "retryable",
]


class Outcome(StrEnum):
    """How an item ended: one table for the engine, the journal's terminal states, the
    JSONL and the CLI summary (the values are what they store and print).

    A result's ``status`` is ``ACTIVE``, ``FAILED``, ``SKIPPED`` or ``PLANNED`` (a dry
    run); :attr:`IngestResult.outcome` refines ``FAILED`` into ``RETRYABLE`` (a plain
    rerun tries it again: the JSONL keeps ``"status": "failed"`` with ``"retryable":
    true``). ``ADOPTED`` is not an end but a count: items found in the group by Name
    (``IngestResult.adopted``)."""

    ACTIVE = "active"
    FAILED = "failed"
    RETRYABLE = "retryable"
    SKIPPED = "skipped"
    PLANNED = "planned"
    ADOPTED = "adopted"


#: the ``status`` of a result (kept as a name: ``Status`` was a Literal of these values)
Status = Outcome
#: the values a result's ``status`` takes
RESULT_STATUSES: Final = frozenset(
    {Outcome.ACTIVE, Outcome.FAILED, Outcome.SKIPPED, Outcome.PLANNED}
)

#: Failure codes that say nothing about the content: a rerun tries the item again. Ours
#: (an upload that did not succeed: the host unreachable, misconfigured or its retry budget
#: spent; CreateAsset tries all transient; the old Failed asset of new content could not be
#: deleted) and the service's transient ``Failed`` codes (api-reference §6), matched on
#: the last dotted part (``InvalidParameter.DownloadFailed``).
#: Every other code is a verdict on the item (media checks, content codes): retried only
#: with ``retry_failed``.
RETRYABLE_CODES: Final = frozenset(
    {
        "upload_failed",
        "create_retries_exhausted",
        "delete_failed",
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
    #: an :class:`~chenyu_assets.s3.S3Stage` puts them in your own S3 bucket
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
    status: Outcome
    source: str
    asset_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    resumed: bool = False
    #: the asset was found in the group by its Name (another journal made it)
    adopted: bool = False

    def __post_init__(self) -> None:
        if self.status not in RESULT_STATUSES:
            raise ValueError(f"a result's status is one of {sorted(RESULT_STATUSES)}")
        object.__setattr__(self, "status", Outcome(self.status))  # a plain str is accepted

    @property
    def retryable(self) -> bool:
        """A failure that a plain rerun tries again (see :func:`retryable`)."""
        return self.status is Outcome.FAILED and retryable(self.error_code)

    @property
    def outcome(self) -> Outcome:
        """``status``, with a retryable failure as ``RETRYABLE``."""
        return Outcome.RETRYABLE if self.retryable else self.status

    @property
    def reference(self) -> str | None:
        active = self.status is Outcome.ACTIVE
        return f"asset://{self.asset_id}" if self.asset_id and active else None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "status": self.status.value,
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
        outcome = result.outcome
        if outcome is Outcome.RETRYABLE:  # of the failed ones
            self.retryable += 1
            outcome = Outcome.FAILED
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)
        if outcome in (Outcome.FAILED, Outcome.SKIPPED) and result.error_code:
            self.failures[result.error_code] = self.failures.get(result.error_code, 0) + 1

    def outcomes(self) -> dict[Outcome, int]:
        """Items per outcome (``FAILED`` here excludes the ``RETRYABLE`` ones; ``ADOPTED``
        overlaps the others): what the summary and the exit code read."""
        return {
            Outcome.ACTIVE: self.active,
            Outcome.FAILED: self.failed - self.retryable,
            Outcome.RETRYABLE: self.retryable,
            Outcome.SKIPPED: self.skipped,
            Outcome.PLANNED: self.planned,
            Outcome.ADOPTED: self.adopted,
        }
