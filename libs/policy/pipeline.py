"""``pipeline``: the filter stages between ingress and routing."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailmoat_policy import registry
from mailmoat_policy.base import StrictModel


class Pipeline(StrictModel):
    filters: list[str] = Field(default_factory=list)
    """Filter stages between ingress and routing, in order: the registry's filter stages, each at most once."""
    route_at_ingress: bool = True
    """With no filter stages and no mail-flow rules, ingress runs the routing step in its own process
    (``False``: every message takes the hop through the routing stage)."""

    @field_validator("filters")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = registry.filter_names()
        for name in value:
            if name not in known:
                raise ValueError(f"unknown filter stage {name!r} (known: {', '.join(known)})")
        if len(set(value)) != len(value):
            raise ValueError("a filter stage is listed twice")
        return value

    def itinerary(self) -> list[str]:
        return [*self.filters, "routing", "egress"]
