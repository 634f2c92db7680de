"""What routing does with a message, from the filter verdicts (pure; decision 004).

``disposition`` asks the filter stages in the registry's precedence (``stages.by_precedence()``) what
their verdicts call for (each stage's verdict model, ``mailmoat_platform.verdicts``); the first
``Disposition`` decides. With today's stages that is malware > connection reject > hcphish > phish >
hcspam > DMARC reject > DMARC quarantine > spoof > spam > bulk. ``carry_out`` applies the action by
its registered name (``VERDICT_ACTIONS``: the actions that change the message edit it, the ones that
end it are left to the caller) and says whether the message goes on to delivery; ``ndr_for`` builds
the report a ``reject`` sends.

A released message (``released_from`` set) skips every verdict action (EOP's ``SFV:SKQ``). An
allow-listed message (SCL -1 from the connection filter's IP allow list or the antispam stage) skips
the antispam actions, except high-confidence phishing (as EOP, allow lists never deliver it); the
malware action always applies.

A filter stage that failed on a message (``mailmoat_platform.stagefault``) leaves an error verdict: the
antivirus stage's ``unscannable`` (action ``quarantine``) goes the way of every antivirus finding;
the antispam stage's ``error`` takes ``antispam.actions.error`` (deliver by default), below every
spam category; the connection filter's ``error`` calls for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, get_args

from mailmoat_mail import mimeedit
from mailmoat_mail.dsn import Failure, build_ndr
from mailmoat_platform import verdicts
from mailmoat_platform.models import Envelope
from mailmoat_platform.verdicts import Disposition
from mailmoat_policy import Antimalware, Policy, SpamAction
from mailmoat_routing.rules.registry import Registry


def disposition(envelope: Envelope, policy: Policy) -> Disposition:
    """The action the verdicts call for, by the registry's precedence (decision 004)."""
    if envelope.released_from:
        return Disposition("deliver", "released", reason=f"released from quarantine {envelope.released_from}")
    return verdicts.decide(envelope, policy) or Disposition("deliver")


# --- carrying it out ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of the message: it goes on (``delivers``) as ``envelope``/``data``, or it ends here."""

    disposition: Disposition
    envelope: Envelope
    data: bytes
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return self.disposition.action

    @property
    def delivers(self) -> bool:
        return self.action in DELIVERING


Carry = Callable[[Disposition, Envelope, bytes, Policy], Outcome]
VERDICT_ACTIONS: Registry[Carry] = Registry("verdict action")
"""Verdict actions by name: each applies its action to the message (``carry_out``)."""
DELIVERING: set[str] = set()
"""Actions after which the message goes on to its routes."""


def action(name: str, *, delivers: bool) -> Callable[[Carry], Carry]:
    """Register a verdict action; ``delivers``: the message goes on to its routes after it."""
    if delivers:
        DELIVERING.add(name)
    return VERDICT_ACTIONS.register(name)


def policy_actions() -> tuple[str, ...]:
    """Every action a policy may give a verdict (``antispam.actions.*``, ``antimalware.action``)."""
    names = [*get_args(SpamAction), *get_args(Antimalware.model_fields["action"].annotation)]
    return tuple(dict.fromkeys(names))


@action("deliver", delivers=True)
@action("junk", delivers=True)
def _as_it_is(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    return Outcome(disp, envelope, data)


@action("quarantine", delivers=False)
@action("delete", delivers=False)
@action("reject", delivers=False)
def _ends(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    """Left to the caller, which holds, drops or rejects the message."""
    return Outcome(disp, envelope, data)


@action("prepend_subject", delivers=True)
def _prepend_subject(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    prefix = policy.antispam.subject_prefix
    return Outcome(disp, envelope, mimeedit.prepend_subject(data, prefix), {"prefix": prefix})


@action("redirect", delivers=True)
def _redirect(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    target = policy.antispam.redirect_to
    if not target:
        return Outcome(replace(disp, action="quarantine", reason=disp.reason + "; redirect_to is not set"),
                       envelope, data)
    redirected = envelope.model_copy(update={"rcpt_to": [target]})
    return Outcome(disp, redirected, data, {"to": target, "original_recipients": list(envelope.rcpt_to)})


@action("strip", delivers=True)
def _strip(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    paths = list(disp.strip) or [s.path for s in mimeedit.attachments(data)]
    stripped, done = mimeedit.replace_parts(data, paths, disp.reason or "removed by the malware filter")
    if not done:
        return Outcome(replace(disp, action="quarantine", reason=disp.reason + "; no attachment to strip"),
                       envelope, data)
    missed = [path for path in disp.strip if not any(path == d or path.startswith(d + ".") for d in done)]
    if missed:  # a part the filter named is not where the editor looked: never deliver it unstripped
        reason = f"{disp.reason}; part {missed[0]} not found to strip"
        return Outcome(replace(disp, action="quarantine", reason=reason), envelope, data)
    return Outcome(replace(disp, strip=tuple(done)), envelope.model_copy(update={"size": len(stripped)}),
                   stripped, {"stripped": done})


VERDICT_ACTIONS.require(policy_actions())


def carry_out(disp: Disposition, envelope: Envelope, data: bytes, policy: Policy) -> Outcome:
    """Apply the actions that change the message; ``quarantine``, ``delete`` and ``reject`` are left
    to the caller (they end the message). A ``strip`` that finds nothing to strip becomes ``quarantine``."""
    return VERDICT_ACTIONS[disp.action](disp, envelope, data, policy)


def ndr_for(disp: Disposition, envelope: Envelope, data: bytes, now: datetime,
            hostname: str) -> tuple[Envelope, bytes] | None:
    """The non-delivery report of a ``reject`` (None for the null sender or a forged one).

    Its id is derived from the message's, so a redelivered message yields the same report (and egress
    delivers it once).
    """
    status = disp.status or "5.7.1"
    diagnostic = f"550 {status} Message rejected: {disp.reason or 'refused by policy'}"
    failures = [Failure(r, status, diagnostic) for r in envelope.rcpt_to]
    return build_ndr(envelope, data, failures, now, hostname, dsn_id=f"{envelope.id}N")


__all__ = ["DELIVERING", "VERDICT_ACTIONS", "Outcome", "carry_out", "disposition", "ndr_for", "policy_actions"]
