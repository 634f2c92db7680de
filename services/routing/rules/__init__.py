"""Mail-flow rules (pure, no I/O): named conditions and named actions combined by the policy.

``evaluate`` runs a policy's rules on one message and returns a ``RuleOutcome``; ``apply_outcome``
gives the envelope the verdict actions and routes see afterwards. Conditions are in ``conditions``,
actions in ``actions``, each registered by name (a duplicate name is an import-time error, and each
registry must cover the policy model's fields exactly).
"""

from mailmoat_routing.rules.actions import ACTIONS, State
from mailmoat_routing.rules.conditions import CONDITIONS
from mailmoat_routing.rules.engine import RuleHit, RuleOutcome, apply_outcome, evaluate, ordered, spam_verdict
from mailmoat_routing.rules.registry import Registry, RegistryError

__all__ = ["ACTIONS", "CONDITIONS", "Registry", "RegistryError", "RuleHit", "RuleOutcome", "State",
           "apply_outcome", "evaluate", "ordered", "spam_verdict"]
