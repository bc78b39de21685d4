"""``Rate``: a number of requests in a window of seconds (a second, a minute, ...)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Rate"]


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests in any ``window`` seconds (1 for "per second", 60 for "per minute")."""

    limit: int
    window: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.limit, int) and self.limit >= 1):
            raise ValueError(f"limit must be an int >= 1, got {self.limit!r}")
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ValueError(f"window must be > 0 seconds, got {self.window!r}")

    @classmethod
    def per_second(cls, rate: float) -> Rate:
        """``rate`` requests per second as a Rate (a fractional rate widens the window)."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        limit = max(1, math.floor(rate + 1e-9))
        return cls(limit, 1.0 if limit == rate else limit / rate)

    @classmethod
    def parse(cls, text: str | float | int | Rate) -> Rate:
        """``"30/s"``, ``"120/min"``, ``"5/10s"`` or a number of requests per second."""
        if isinstance(text, Rate):
            return text
        if isinstance(text, int | float):
            return cls.per_second(float(text))
        count, sep, unit = str(text).strip().partition("/")
        units = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "m": 60.0}
        try:
            if not sep:
                return cls.per_second(float(count))
            unit = unit.strip()
            if unit in units:
                return cls(int(count), units[unit])
            return cls(int(count), float(unit.removesuffix("s")))
        except ValueError:
            raise ValueError(f"not a rate: {text!r} (expected e.g. '30/s' or '120/min')") from None

    @property
    def per_sec(self) -> float:
        return self.limit / self.window

    def scaled(self, factor: float) -> Rate:
        """``factor`` × this rate, in the same window where the limit stays whole."""
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor!r}")
        limit = self.limit * factor
        if limit >= 1:
            return Rate(math.floor(limit + 1e-9), self.window)
        return Rate(1, self.window / limit)

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min"}.get(self.window, f"{self.window:g}s")
        return f"{self.limit}/{unit}"
