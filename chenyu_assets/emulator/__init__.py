"""A strict local emulator of the Chenyu, Volcengine/BytePlus Ark, overseas-gateway and
private-avatar asset APIs (api-reference.md §5), on aiohttp.web.

::

    from chenyu_assets.emulator import Emulator, FaultRule

    async with Emulator(time_scale=10) as emu:
        emu.url          # official Ark: POST {url}/?Action=CreateAsset&Version=2024-01-01 (AK/SK)
        emu.chenyu_url   # {url}/api/open/v2 (Bearer emu.account.api_key)
        emu.gateway_url  # {url}/byteplus/_unstable/open (Bearer)
        emu.avatar_url   # {url}, paths /v1/private-avatar/... (Bearer)
        emu.media_url("png", 800, 1200)   # generated media CreateAsset resolves locally

All families share one store (scoped by account and ProjectName), one per-account limiter
(Ark rates × ``time_scale``, strict sliding window or token bucket, 429 ``FlowLimitExceeded``
at once, the in-flight cap of Processing assets) and one processing engine. Injected faults
come from one seeded RNG. ``chenyu-assets serve`` runs it in the foreground.

Demo account (fixed, public strings): ``DEMO_ACCESS_KEY``, ``DEMO_SECRET_KEY``,
``DEMO_API_KEY`` in :mod:`chenyu_assets.emulator.config`.
"""

from chenyu_assets.emulator.config import (
    DEMO_ACCESS_KEY,
    DEMO_API_KEY,
    DEMO_SECRET_KEY,
    Account,
    Audit,
    AuditAsset,
    AuditGroup,
    AuditUpload,
    Clock,
    EmulatorConfig,
    RejectedUpload,
    RequestRecord,
)
from chenyu_assets.emulator.faults import FaultRule
from chenyu_assets.emulator.serve import Emulator

__all__ = [
    "DEMO_ACCESS_KEY",
    "DEMO_API_KEY",
    "DEMO_SECRET_KEY",
    "Account",
    "Audit",
    "AuditAsset",
    "AuditGroup",
    "AuditUpload",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "FaultRule",
    "RejectedUpload",
    "RequestRecord",
]
