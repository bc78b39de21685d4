"""Shared model configuration: snake_case attributes, the wire's names as aliases,
unknown fields kept (``extra="allow"``) so a new server field never breaks a client.

``str()`` and ``repr()`` of every model hide the query values of every URL in it (a signed
URL is a bearer credential); ``model_dump()`` and the attributes keep the real values."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chenyu_assets._core.logs import redact_url

__all__ = ["WireModel", "masked"]


def masked(value: Any) -> Any:
    """``value`` with every URL's query values (and user info) masked, in nested lists and
    dicts too."""
    if isinstance(value, str):
        if "://" in value and ("?" in value or "@" in value):
            return redact_url(value, every_query_value=True)
        return value
    if isinstance(value, list | tuple):
        return type(value)(masked(v) for v in value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, frozen=False, str_strip_whitespace=False
    )

    #: The request id of the answer this model came from (not a wire field).
    request_id: str | None = Field(default=None, exclude=True)

    def __repr_args__(self) -> Any:  # str() and the default repr() are built from these
        for name, value in super().__repr_args__():
            yield name, masked(value)
