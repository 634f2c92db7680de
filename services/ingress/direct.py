"""When ingress may run the routing step itself instead of handing the message to the routing stage.

Only when nothing stands between ingress and routing (no filter stages) and routing has no mail-flow
rules to run, unless the policy turns it off (``pipeline.route_at_ingress: false``; on by default,
docs/decisions/005-routing-at-ingress.md). The routing step is then the routing service's own
handler, run in the ingress process: the same decisions, the same trace events, one broker hop less.
"""

from __future__ import annotations

from mailmoat_policy import Policy


def routes_at_ingress(policy: Policy) -> bool:
    """True when ingress should route messages itself under ``policy``."""
    return policy.pipeline.route_at_ingress and not policy.pipeline.filters and not policy.rules
