"""Per-recipient routes (pure): outbound connectors first, then hybrid smart hosts for accepted
domains that have one, MX otherwise.

An outbound connector is chosen for a recipient domain in this order: one naming the domain exactly,
then one for all accepted domains (``accepted``), then a wildcard (``*.example.com`` before ``*``).
Connectors marked ``rule_only`` are taken only when a mail-flow rule names them.

A message whose recipients take different routes is split into one copy per route; every copy keeps
the message id, so the trace follows all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat_platform.models import Envelope, Route, Verdict
from mailmoat_policy import OutboundConnector, Policy, domain_matches, stronger_tls


def domain_of(address: str) -> str:
    """The domain of an address, lower-cased; ``""`` when there is none."""
    _, sep, domain = address.rpartition("@")
    return domain.lower().rstrip(".") if sep else ""


def select_outbound(domain: str, policy: Policy) -> OutboundConnector | None:
    """The outbound connector that takes mail for ``domain`` (rule-only connectors never)."""
    candidates = [c for c in policy.connectors.outbound if not c.rule_only]
    for connector in candidates:
        if domain in connector.recipient_domains:
            return connector
    if policy.accepted_domain(domain) is not None:
        for connector in candidates:
            if "accepted" in connector.recipient_domains:
                return connector
    best: tuple[int, OutboundConnector] | None = None
    for connector in candidates:
        for pattern in connector.recipient_domains:
            if pattern.startswith("*.") and domain_matches(domain, pattern):
                if best is None or len(pattern) > best[0]:
                    best = (len(pattern), connector)
    if best is not None:
        return best[1]
    return next((c for c in candidates if "*" in c.recipient_domains), None)


def connector_route(connector: OutboundConnector, domain: str) -> Route:
    """The route through an outbound connector: its smart hosts, or the recipient domain's MX."""
    if connector.smart_hosts:
        return Route(
            name=f"connector:{connector.name}", kind="smarthost", hosts=list(connector.smart_hosts),
            tls=connector.tls, tls_name=connector.tls_name,
        )
    return Route(
        name=f"connector:{connector.name}:{domain}", kind="mx", domain=domain,
        tls=connector.tls, tls_name=connector.tls_name,
    )


def route_for(recipient: str, policy: Policy, connector: str | None = None, require_tls: bool = False) -> Route:
    """The route one recipient takes; ``connector`` forces a named outbound connector (a mail-flow
    rule), ``require_tls`` raises the route's TLS mode to at least ``required``."""
    route = _route(recipient, policy, connector)
    if require_tls:
        route.tls = stronger_tls(route.tls, "required")
    return route


def _route(recipient: str, policy: Policy, connector: str | None) -> Route:
    domain = domain_of(recipient)
    if connector is not None:
        named = policy.connectors.outbound_named(connector)
        if named is None:
            raise ValueError(f"no outbound connector named {connector!r}")
        return connector_route(named, domain)
    chosen = select_outbound(domain, policy) if domain else None
    if chosen is not None:
        return connector_route(chosen, domain)
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


def plan_routes(
    envelope: Envelope, policy: Policy, connector: str | None = None, require_tls: bool = False
) -> list[Split]:
    """Group the recipients by route, in the order they first appear (see ``route_for`` for
    ``connector`` and ``require_tls``)."""
    splits: dict[str, Split] = {}
    for recipient in envelope.rcpt_to:
        route = route_for(recipient, policy, connector, require_tls)
        split = splits.get(route.name)
        if split is None:
            splits[route.name] = Split(route, [recipient])
        elif recipient not in split.recipients:
            split.recipients.append(recipient)
    return list(splits.values())


def copies_for(envelope: Envelope, splits: list[Split]) -> list[Envelope]:
    """One envelope per split, each with its route and recipients and the routing verdict.

    The copies share the original's other fields (they are serialised as they are, never changed);
    what differs per copy — route, recipients, verdicts — is each copy's own."""
    out = []
    for split in splits:
        copy = envelope.model_copy(
            update={"route": split.route, "rcpt_to": list(split.recipients), "verdicts": dict(envelope.verdicts)}
        )
        copy.add_verdict(
            Verdict(stage="routing", result="routed", detail={"route": split.route.name, "copies": len(splits)})
        )
        out.append(copy)
    return out
