"""Processing slots of a client (see :mod:`chenyu_assets.watcher`, which keeps them).

``create_asset`` takes a Processing slot (:class:`~chenyu_assets._core.ratelimit.Slots`,
local or shared through Redis) before it sends and the watcher gives it back when the asset
leaves Processing. A slot is held at most ``lease`` seconds (an asset stuck Processing, or
one nobody waits on whose status the watcher cannot read); a Redis slot of a process that
dies comes back after the Redis lease. A 429 on CreateAsset while every slot is held, or
whose message names the Processing cap, is the cap, not the rate: it pauses no limiter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chenyu_assets._core.ratelimit import SlotPool, Slots
from chenyu_assets.errors import ConfigurationError

if TYPE_CHECKING:
    from chenyu_assets._core.redis_limits import RedisLimits

__all__ = ["CAP_WORDS", "Slot", "processing_pool"]

#: Words in a 429's message that name the service's in-flight cap, not its rate.
CAP_WORDS = ("processing", "in-flight", "in flight", "concurrent")


def processing_pool(
    slots: Slots | int | None, shared: RedisLimits | None, *, watch: bool
) -> Slots | None:
    """A client's Processing slots: ``slots`` of them (through Redis when the limits are
    shared), the caller's own :class:`Slots`, or none (None, or ``watch=False``)."""
    if not watch and isinstance(slots, Slots):
        raise ConfigurationError("watch=False keeps no Processing slots: drop processing_slots")
    if not watch or slots is None:
        return None
    if isinstance(slots, int):
        return shared.slots(slots) if shared is not None else SlotPool(slots)
    return slots


class Slot:
    """A Processing slot taken by :meth:`Watcher.reserve`; pass it to ``create_asset``."""

    __slots__ = ("holder", "pool", "released")

    def __init__(self, pool: Slots, holder: str) -> None:
        self.pool = pool
        self.holder = holder
        self.released = False

    def __repr__(self) -> str:
        return f"<Slot {self.holder}{' released' if self.released else ''}>"
