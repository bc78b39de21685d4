"""What the emulator saw and did: request log, counters and the snapshot model.

:class:`AuditLog` is the live recorder (cheap appends on the hot path);
:class:`Audit` is an immutable-ish snapshot built from it and the store, also served as JSON
at ``GET /_emulator/audit``. Timestamps ``t`` are real seconds since the emulator started.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict, deque

from pydantic import BaseModel, Field

__all__ = [
    "Audit",
    "AuditAsset",
    "AuditGroup",
    "AuditLog",
    "AuditUpload",
    "RejectedUpload",
    "RequestRecord",
]


class RequestRecord(BaseModel):
    """One handled request.

    ``status`` is the HTTP status sent, 0 when no answer was sent (reset, hang, cut off);
    ``code`` is the vendor error code, ``fault:<kind>`` when an injected fault decided the
    outcome, or None on success.
    """

    t: float
    family: str
    action: str
    account: str | None
    status: int
    code: str | None = None


class AuditGroup(BaseModel):
    """An asset group as it is now."""

    id: str
    name: str
    account: str
    project: str
    group_type: str
    created_t: float | None = None


class AuditAsset(BaseModel):
    """An Ark asset as it is now (``created_t`` / ``finished_t`` in audit seconds; None
    for assets restored from a previous run)."""

    id: str
    name: str
    group_id: str
    account: str
    project: str
    status: str
    asset_type: str
    url: str
    error_code: str | None = None
    created_t: float | None = None
    finished_t: float | None = None


class AuditUpload(BaseModel):
    """A stored Chenyu upload."""

    asset_id: str
    account: str
    size: int
    sha256: str
    stored_filename: str
    original_filename: str
    media_type: str


class RejectedUpload(BaseModel):
    """A Chenyu upload refused while streaming, with how much of the file was read."""

    account: str
    bytes_received: int
    reason: str


class Audit(BaseModel):
    """A snapshot of the emulator's audit trail and state."""

    requests: list[RequestRecord] = Field(default_factory=list)
    groups: list[AuditGroup] = Field(default_factory=list)
    assets: list[AuditAsset] = Field(default_factory=list)
    uploads: list[AuditUpload] = Field(default_factory=list)
    rejected_uploads: list[RejectedUpload] = Field(default_factory=list)
    #: Requests refused by the emulator's own limits (rate or in-flight cap), by action.
    rejected_429: dict[str, int] = Field(default_factory=dict)
    #: Peak number of assets Processing at once, by account.
    max_processing: dict[str, int] = Field(default_factory=dict)

    def count(self, action: str, status: int | None = None, *, family: str | None = None) -> int:
        """Requests for ``action`` (optionally with this HTTP status / family)."""
        return sum(
            1
            for r in self.requests
            if r.action == action
            and (status is None or r.status == status)
            and (family is None or r.family == family)
        )

    def max_in_window(self, action: str, window: float = 1.0, account: str | None = None) -> int:
        """Most accepted (2xx) ``action`` requests inside any window of ``window`` seconds."""
        times = sorted(
            r.t
            for r in self.requests
            if r.action == action
            and 200 <= r.status < 300
            and (account is None or r.account == account)
        )
        best = 0
        for i, start in enumerate(times):
            end = bisect.bisect_left(times, start + window, lo=i)
            best = max(best, end - i)
        return best

    def duplicates(self, account: str | None = None) -> dict[str, list[str]]:
        """Asset names used more than once within one group: name -> asset ids."""
        by_group: dict[tuple[str, str], list[str]] = defaultdict(list)
        for asset in self.assets:
            if account is None or asset.account == account:
                by_group[(asset.group_id, asset.name)].append(asset.id)
        result: dict[str, list[str]] = {}
        for (_group, name), ids in by_group.items():
            if len(ids) > 1:
                result.setdefault(name, []).extend(ids)
        return result


class AuditLog:
    """The live recorder behind :class:`Audit` snapshots."""

    __slots__ = ("_processing_peak", "_rejected_429", "_rejected_uploads", "_requests")

    def __init__(self, max_records: int | None = None) -> None:
        #: only the newest ``max_records`` requests are kept (a long-running ``serve``)
        self._requests: deque[RequestRecord] = deque(maxlen=max_records)
        self._rejected_429: Counter[str] = Counter()
        self._processing_peak: dict[str, int] = {}
        self._rejected_uploads: list[RejectedUpload] = []

    def record(
        self,
        *,
        t: float,
        family: str,
        action: str,
        account: str | None,
        status: int,
        code: str | None,
    ) -> None:
        """Append one request outcome."""
        self._requests.append(
            RequestRecord.model_construct(
                t=t, family=family, action=action, account=account, status=status, code=code
            )
        )

    def rejected_by_limit(self, action: str) -> None:
        """Count a 429 the emulator's own limits produced."""
        self._rejected_429[action] += 1

    def processing_level(self, account: str, level: int) -> None:
        """Note how many assets ``account`` has Processing right now (keeps the peak)."""
        if level > self._processing_peak.get(account, 0):
            self._processing_peak[account] = level

    def upload_rejected(self, account: str, bytes_received: int, reason: str) -> None:
        """Note an upload refused while streaming."""
        self._rejected_uploads.append(
            RejectedUpload(account=account, bytes_received=bytes_received, reason=reason)
        )

    def snapshot(
        self,
        *,
        groups: list[AuditGroup],
        assets: list[AuditAsset],
        uploads: list[AuditUpload],
    ) -> Audit:
        """Freeze the current state into an :class:`Audit`."""
        return Audit.model_construct(
            requests=list(self._requests),
            groups=groups,
            assets=assets,
            uploads=uploads,
            rejected_uploads=list(self._rejected_uploads),
            rejected_429=dict(self._rejected_429),
            max_processing=dict(self._processing_peak),
        )
