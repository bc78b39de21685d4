"""Shared model configuration: snake_case attributes, the wire's names as aliases,
unknown fields kept (``extra="allow"``) so a new server field never breaks a client."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WireModel"]


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, frozen=False, str_strip_whitespace=False
    )

    #: The request id of the answer this model came from (not a wire field).
    request_id: str | None = Field(default=None, exclude=True)
