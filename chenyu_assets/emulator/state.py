"""The bundle of services one emulator shares across its four families."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from chenyu_assets.emulator.audit import Audit, AuditLog
from chenyu_assets.emulator.clock import Clock
from chenyu_assets.emulator.config import EmulatorConfig
from chenyu_assets.emulator.faults import FaultEngine
from chenyu_assets.emulator.fetch import Fetcher
from chenyu_assets.emulator.limits import RateLimiter
from chenyu_assets.emulator.processing import Processor
from chenyu_assets.emulator.samples import SampleMedia
from chenyu_assets.emulator.signed import UrlSigner
from chenyu_assets.emulator.store import AssetRec, Store, UploadRec

__all__ = ["STATE", "EmulatorState"]


@dataclass(eq=False)
class EmulatorState:
    """One store, one limiter, one processing engine, one fault RNG, one audit log."""

    config: EmulatorConfig
    clock: Clock
    store: Store
    limiter: RateLimiter
    faults: FaultEngine
    audit: AuditLog
    signer: UrlSigner
    samples: SampleMedia
    fetcher: Fetcher
    processor: Processor
    blob_dir: Path
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``http://host:port`` of the running server (set once it is bound).
    base_url: str = ""

    def snapshot(self) -> Audit:
        """An :class:`Audit` of everything so far."""
        return self.audit.snapshot(
            groups=self.store.audit_groups(),
            assets=self.store.audit_assets(),
            uploads=self.store.audit_uploads(),
        )

    def chenyu_content_url(self, upload: UploadRec) -> str:
        """The unsigned content address of a Chenyu upload."""
        return f"{self.base_url}/assets/{upload.asset_id}/content"

    def chenyu_signed_url(self, upload: UploadRec) -> str:
        """A signed content URL valid ``signed_url_seconds`` (never past the asset's TTL)."""
        expires = int(min(self.clock.now() + self.config.signed_url_seconds, upload.expires_time))
        query = self.signer.query("chenyu", upload.asset_id, expires)
        return f"{self.chenyu_content_url(upload)}?{query}"

    def ark_signed_url(self, asset: AssetRec) -> str:
        """GetAsset's ``URL``: a signed content URL valid ``signed_url_seconds`` (12 h)."""
        expires = int(self.clock.now() + self.config.signed_url_seconds)
        query = self.signer.query("ark", asset.id, expires)
        return f"{self.base_url}/ark/assets/{asset.id}/content?{query}"


STATE: web.AppKey[EmulatorState] = web.AppKey("chenyu_emulator_state", EmulatorState)
