"""Per-recipient routes (pure): hybrid smart hosts for accepted domains that have one, MX otherwise.

A message whose recipients take different routes is split into one copy per route; every copy keeps
the message id, so the trace follows all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat_common.models import Envelope, Route, Verdict
from mailmoat_common.policy import Policy


def domain_of(address: str) -> str:
    """The domain of an address, lower-cased; ``""`` when there is none."""
    _, sep, domain = address.rpartition("@")
    return domain.lower().rstrip(".") if sep else ""


def route_for(recipient: str, policy: Policy) -> Route:
    """The route one recipient takes."""
    domain = domain_of(recipient)
    accepted = policy.accepted_domain(domain) if domain else None
    if accepted is not None and accepted.route is not None:
        config = policy.routes[accepted.route]
        return Route(
            name=f"route:{accepted.route}",
            kind="smarthost",
            hosts=list(config.hosts),
            tls=config.tls,
            tls_name=config.tls_name,
        )
    return Route(name=f"mx:{domain}", kind="mx", domain=domain, tls=policy.outbound.tls)


@dataclass
class Split:
    """One copy of the message: the route and the recipients that take it."""

    route: Route
    recipients: list[str]


def plan_routes(envelope: Envelope, policy: Policy) -> list[Split]:
    """Group the recipients by route, in the order they first appear."""
    splits: dict[str, Split] = {}
    for recipient in envelope.rcpt_to:
        route = route_for(recipient, policy)
        split = splits.get(route.name)
        if split is None:
            splits[route.name] = Split(route, [recipient])
        elif recipient not in split.recipients:
            split.recipients.append(recipient)
    return list(splits.values())


def copies_for(envelope: Envelope, splits: list[Split]) -> list[Envelope]:
    """One envelope per split, each with its route and recipients and the routing verdict."""
    out = []
    for split in splits:
        copy = envelope.model_copy(deep=True)
        copy.route = split.route
        copy.rcpt_to = list(split.recipients)
        copy.add_verdict(
            Verdict(stage="routing", result="routed", detail={"route": split.route.name, "copies": len(splits)})
        )
        out.append(copy)
    return out
