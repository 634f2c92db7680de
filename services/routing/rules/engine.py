"""Mail-flow rule evaluation (pure): ``evaluate(envelope, data, policy, now) -> RuleOutcome``.

Rules run in priority order (lower first; equal priorities in the order listed), each only inside its
active window. A rule matches when all its conditions match (a rule without conditions matches every
message) and none of its exceptions does. An enforced rule's actions change the evaluation state, which
later rules see (their conditions look at the changed bytes, recipients and SCL); a test-mode rule is
only recorded. Evaluation ends after an enforced rule that ends the message (reject, delete,
quarantine) or that says ``stop_processing``.

Conditions are the built-in ones (``conditions``) and those the registry's stages add
(``stage_conditions``). Notices to the sender (``notify_sender``) are built here, ready to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailmoat_platform import verdicts
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import MailFlowRule, Policy, RuleConditions
from mailmoat_routing.rules.actions import ACTIONS, FINAL, State
from mailmoat_routing.rules.conditions import CONDITIONS
from mailmoat_routing.rules.message import Facts
from mailmoat_routing.rules.notify import SenderNotice, build
from mailmoat_routing.rules.stage_conditions import check


@dataclass
class RuleHit:
    """A rule that matched: its mode, the actions it took (enforce) or would take (test), what they did."""

    rule: str
    mode: str
    actions: list[str]
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        verb = "would take" if self.mode == "test" else "took"
        return f"rule {self.rule!r} ({self.mode}) matched; {verb} {', '.join(self.actions)}"


@dataclass
class RuleOutcome:
    """What the rules did to a message."""

    hits: list[RuleHit]
    data: bytes
    rcpt_to: list[str]
    final: str | None = None
    """``reject``, ``delete`` or ``quarantine`` when a rule ended the message."""
    rule: str | None = None
    """The rule that ended it."""
    code: str | None = None
    text: str | None = None
    set_scl: int | None = None
    bypass_spam: bool = False
    scl_rule: str | None = None
    connector: str | None = None
    require_tls: bool = False
    connector_rcpts: dict[str, str] = field(default_factory=dict)
    tls_rcpts: set[str] = field(default_factory=set)
    data_changed: bool = False
    """Some enforced action changed the bytes."""
    notices: list[SenderNotice] = field(default_factory=list)
    """Notices to the sender (``notify_sender``), to publish to routing whatever became of the message."""

    def connector_for(self, recipient: str) -> str | None:
        """The outbound connector a rule chose for this recipient, if any."""
        return self.connector_rcpts.get(recipient.lower(), self.connector)

    def tls_for(self, recipient: str) -> bool:
        """Whether a rule requires TLS for delivery to this recipient."""
        return self.require_tls or recipient.lower() in self.tls_rcpts

    @property
    def scl(self) -> int | None:
        """The SCL the verdict actions must use instead of the filter's (-1 for a bypass)."""
        return -1 if self.bypass_spam else self.set_scl


def ordered(rules: list[MailFlowRule]) -> list[MailFlowRule]:
    return [rule for _, rule in sorted(enumerate(rules), key=lambda item: (item[1].priority, item[0]))]


def _all(spec: RuleConditions, facts: Facts) -> bool:
    return all(check(name, facts, spec) for name in spec.names())


def _any(spec: RuleConditions, facts: Facts) -> bool:
    return any(check(name, facts, spec) for name in spec.names())


def matches(rule: MailFlowRule, facts: Facts) -> bool:
    return _all(rule.conditions, facts) and not _any(rule.exceptions, facts)


_RECIPIENT_CONDITIONS = ("recipient_address", "recipient_domain")


def recipient_scope(rule: MailFlowRule, facts: Facts) -> list[str] | None:
    """The recipients a matching rule's routing actions apply to: those that match its recipient
    conditions each on their own; None (all) when it has none."""
    names = [n for n in _RECIPIENT_CONDITIONS if n in rule.conditions.names()]
    if not names:
        return None
    scope = []
    for recipient in facts.rcpt_to:
        alone = Facts(facts.envelope, facts.data, facts.policy, [recipient], facts.scl_override)
        if all(CONDITIONS[n](alone, rule.conditions) for n in names):
            scope.append(recipient)
    return scope


def evaluate(envelope: Envelope, data: bytes, policy: Policy, now: datetime) -> RuleOutcome:
    """Run the policy's rules on one message."""
    state = State(data=data, rcpt_to=list(envelope.rcpt_to), envelope=envelope)
    hits: list[RuleHit] = []
    facts: Facts | None = None
    for rule in ordered(policy.rules):
        if not rule.active(now):
            continue
        scl = -1 if state.bypass_spam else state.set_scl
        stale = facts is None or facts.data is not state.data or facts.rcpt_to is not state.rcpt_to
        if stale or facts is None or facts.scl_override != scl:
            facts = Facts(envelope, state.data, policy, state.rcpt_to, scl)
        if not matches(rule, facts):
            continue
        names = rule.actions.names()
        if rule.mode == "test":
            hits.append(RuleHit(rule.name, "test", names))
            continue
        detail: dict[str, Any] = {}
        state.scope = recipient_scope(rule, facts)
        for name in [n for n in names if n not in FINAL] + [n for n in names if n in FINAL]:
            done = ACTIONS[name](state, rule.actions, rule.name)
            if done:
                detail[name] = done
        hits.append(RuleHit(rule.name, "enforce", names, detail))
        if state.final or rule.stop_processing:
            break
    return RuleOutcome(
        hits=hits, data=state.data, rcpt_to=state.rcpt_to, final=state.final, rule=state.final_rule,
        code=state.code, text=state.text, set_scl=state.set_scl, bypass_spam=state.bypass_spam,
        scl_rule=state.scl_rule, connector=state.connector, require_tls=state.require_tls,
        connector_rcpts=dict(state.connector_rcpts), tls_rcpts=set(state.tls_rcpts),
        data_changed=state.data is not data,
        notices=[build(envelope, data, notice, policy, now) for notice in state.notices],
    )


_SCL_CATEGORIES = ("spam", "hcspam")
_STRENGTH = ("hcphish", "phish", "hcspam", "spoof", "spam", "bulk")
"""The antispam categories, strongest first."""


def spam_verdict(current: Verdict | None, scl: int, rule: str | None) -> Verdict:
    """The antispam verdict after a rule set the SCL: SCL -1 makes it ``allowed`` (only high-confidence
    phishing is still acted on); 5-6 makes it spam, 7-9 high-confidence spam, 0-4 neither. Categories
    the SCL does not express (phishing, spoofing, bulk) are kept, and so is the rest of the detail.

    The detail is read and written through the antispam stage's verdict model, which the registry names
    (``verdict_model``), so routing needs no import of the antispam stage."""
    model = verdicts.model_for("antispam")
    detail = verdicts.read(model, current.detail, "antispam") if current is not None else model()
    old = [c for c in getattr(detail, "categories", None) or [] if c in _STRENGTH]
    for name in (getattr(detail, "category", None), current.result if current is not None else None):
        if name in _STRENGTH and name not in old:
            old.append(name)
    categories = [c for c in old if c not in _SCL_CATEGORIES]
    if 5 <= scl <= 6:
        categories.append("spam")
    elif scl >= 7:
        categories.append("hcspam")
    strongest = next((c for c in _STRENGTH if c in categories), None)
    wire = {**detail.as_detail(), **model.wire(scl=scl, categories=categories, category=strongest, scl_rule=rule)}
    result = "allowed" if scl == -1 else (strongest or "clean")
    return Verdict(stage="antispam", result=result, detail=wire)


def apply_outcome(envelope: Envelope, outcome: RuleOutcome) -> Envelope:
    """The envelope the verdict actions and routes see after the rules: new recipients and size, and
    the antispam verdict as a rule's SCL or bypass leaves it."""
    changes: dict[str, Any] = {}
    if outcome.rcpt_to != envelope.rcpt_to:
        changes["rcpt_to"] = list(outcome.rcpt_to)
    if outcome.data_changed:
        changes["size"] = len(outcome.data)
    if outcome.scl is not None:
        verdicts = dict(envelope.verdicts)
        verdicts["antispam"] = spam_verdict(envelope.verdicts.get("antispam"), outcome.scl, outcome.scl_rule)
        changes["verdicts"] = verdicts
    return envelope.model_copy(update=changes) if changes else envelope
