"""Routes after the rules (pure): each recipient takes the outbound connector and TLS floor the rules
chose for it (all recipients, or those a rule's recipient conditions matched).

A route whose TLS mode a rule raised is named ``<route>+tls``, so it never shares a name (egress's
once-only key) with the same route taken at its own mode by other recipients of the message.
"""

from __future__ import annotations

from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy, stronger_tls
from mailmoat_routing.decide import Split, plan_routes
from mailmoat_routing.rules.engine import RuleOutcome


def plan_with_rules(envelope: Envelope, policy: Policy, outcome: RuleOutcome | None) -> list[Split]:
    """Group the recipients by route as ``plan_routes`` does, honouring the rules' connectors and TLS."""
    if outcome is None:
        return plan_routes(envelope, policy)
    groups: dict[tuple[str | None, bool], list[str]] = {}
    for recipient in envelope.rcpt_to:
        groups.setdefault((outcome.connector_for(recipient), outcome.tls_for(recipient)), []).append(recipient)
    merged: dict[str, Split] = {}
    for (connector, tls), recipients in groups.items():
        for split in plan_routes(envelope.model_copy(update={"rcpt_to": recipients}), policy, connector):
            if tls:
                raised = stronger_tls(split.route.tls, "required")
                if raised != split.route.tls:
                    split.route = split.route.model_copy(update={"tls": raised, "name": f"{split.route.name}+tls"})
            existing = merged.get(split.route.name)
            if existing is None:
                merged[split.route.name] = split
            else:
                existing.recipients += [r for r in split.recipients if r not in existing.recipients]
    return list(merged.values())
