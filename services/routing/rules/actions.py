"""Rule actions: one function per field of ``RuleActions``, registered under the field's name.

Each changes the evaluation ``State`` (the bytes, the recipients, the antispam facts, the route) and
returns what it did, for the trace. ``reject``, ``delete`` and ``quarantine`` end the message. The
routing actions (``route_to_connector``, ``require_tls``) of a rule with recipient conditions apply only
to the recipients that match them (``State.scope``); every other action applies to the whole message.
``notify_sender`` asks for a notice to the sender (``notify``), which the engine builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailmoat_mail import mimeedit
from mailmoat_platform.models import Envelope
from mailmoat_policy import RuleActions
from mailmoat_routing.rules import edits, notify
from mailmoat_routing.rules.registry import Registry

FINAL = ("reject", "delete", "quarantine")
"""Actions that end the message."""


@dataclass
class State:
    """The message as the rules leave it."""

    data: bytes
    rcpt_to: list[str]
    set_scl: int | None = None
    bypass_spam: bool = False
    scl_rule: str | None = None
    """The rule that set the SCL or bypassed spam filtering (the last one)."""
    connector: str | None = None
    """The outbound connector for every recipient not in ``connector_rcpts``."""
    connector_rcpts: dict[str, str] = field(default_factory=dict)
    """Connectors of single recipients (a rule with recipient conditions routes only those that match)."""
    require_tls: bool = False
    tls_rcpts: set[str] = field(default_factory=set)
    scope: list[str] | None = None
    """Set by the engine for each rule: the recipients its routing actions apply to (None: all)."""
    final: str | None = None
    final_rule: str | None = None
    code: str | None = None
    text: str | None = None
    envelope: Envelope | None = None
    """The message as it reached the rules (whom a notice goes to)."""
    notices: list[notify.Notice] = field(default_factory=list)
    """Notices to the sender the rules asked for (``notify_sender``)."""


Action = Callable[[State, RuleActions, str], dict[str, Any]]
ACTIONS: Registry[Action] = Registry("action")
action = ACTIONS.register


def _end(state: State, how: str, rule: str, code: str | None, text: str) -> None:
    state.final, state.final_rule, state.code, state.text = how, rule, code, text


@action("reject")
def reject(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    assert spec.reject is not None
    _end(state, "reject", rule, spec.reject.code, spec.reject.text)
    return {"code": spec.reject.code, "text": spec.reject.text}


@action("delete")
def delete(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    _end(state, "delete", rule, None, f"deleted by rule {rule}")
    return {}


@action("quarantine")
def quarantine(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    _end(state, "quarantine", rule, None, f"quarantined by rule {rule}")
    return {}


@action("redirect_to")
def redirect_to(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    original = list(state.rcpt_to)
    state.rcpt_to = list(spec.redirect_to or ())
    return {"to": list(state.rcpt_to), "original_recipients": original}


@action("add_recipients")
def add_recipients(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    present = {r.lower() for r in state.rcpt_to}
    added = [r for r in spec.add_recipients or () if r not in present]
    state.rcpt_to = [*state.rcpt_to, *added]
    return {"added": added}


@action("set_header")
def set_header(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    for name, value in (spec.set_header or {}).items():
        state.data = edits.set_header(state.data, name, value)
    return {"headers": sorted(spec.set_header or {})}


@action("remove_header")
def remove_header(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    removed = 0
    for name in spec.remove_header or ():
        state.data, count = edits.remove_header(state.data, name)
        removed += count
    return {"headers": list(spec.remove_header or ()), "removed": removed}


@action("prepend_subject")
def prepend_subject(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    assert spec.prepend_subject is not None
    state.data = mimeedit.prepend_subject(state.data, spec.prepend_subject)
    return {"prefix": spec.prepend_subject}


@action("set_scl")
def set_scl(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    state.set_scl = spec.set_scl
    state.scl_rule = rule
    return {"scl": spec.set_scl}


@action("route_to_connector")
def route_to_connector(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    assert spec.route_to_connector is not None
    if state.scope is None:
        state.connector = spec.route_to_connector
        state.connector_rcpts.clear()
        return {"connector": spec.route_to_connector}
    for recipient in state.scope:
        state.connector_rcpts[recipient.lower()] = spec.route_to_connector
    return {"connector": spec.route_to_connector, "recipients": list(state.scope)}


@action("require_tls")
def require_tls(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    if state.scope is None:
        state.require_tls = True
        return {}
    state.tls_rcpts.update(r.lower() for r in state.scope)
    return {"recipients": list(state.scope)}


@action("append_disclaimer")
def append_disclaimer(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    assert spec.append_disclaimer is not None
    state.data, parts, why = edits.append_disclaimer(state.data, spec.append_disclaimer.text,
                                                     spec.append_disclaimer.html)
    return {"parts": parts} if not why else {"parts": parts, "not_applied": why}


@action("bypass_spam_filtering")
def bypass_spam_filtering(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    state.bypass_spam = True
    state.scl_rule = rule
    return {}


@action("notify_sender")
def notify_sender(state: State, spec: RuleActions, rule: str) -> dict[str, Any]:
    """A notice to the envelope sender naming the rule and giving its text (none to the null sender, about
    a report, or to a forged sender); the message itself goes on as the other actions say."""
    assert spec.notify_sender is not None and state.envelope is not None
    text = spec.notify_sender.text
    why = notify.why_not(state.envelope)
    if why is not None:
        return {"text": text, "not_sent": why}
    notice = notify.Notice(notify.notice_id(state.envelope, len(state.notices)), rule, text)
    state.notices.append(notice)
    return {"text": text, "notice_id": notice.id, "to": state.envelope.mail_from}


ACTIONS.require(RuleActions.model_fields)
