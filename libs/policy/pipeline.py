"""``pipeline``: the filter stages between ingress and routing."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailmoat_policy.base import StrictModel

FILTER_STAGES = ("connection_filter", "antivirus", "antispam")
"""Stages that may stand between ingress and routing, in the order the itinerary lists them."""


class Pipeline(StrictModel):
    filters: list[str] = Field(default_factory=list)
    """Filter stages between ingress and routing, in order."""
    route_at_ingress: bool = True
    """With no filter stages and no mail-flow rules, ingress runs the routing step in its own process
    (``False``: every message takes the hop through the routing stage)."""

    @field_validator("filters")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in FILTER_STAGES:
                raise ValueError(f"unknown filter stage {name!r} (known: {', '.join(FILTER_STAGES)})")
        if len(set(value)) != len(value):
            raise ValueError("a filter stage is listed twice")
        return value

    def itinerary(self) -> list[str]:
        return [*self.filters, "routing", "egress"]
