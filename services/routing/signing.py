"""What happens to each per-route copy last, after rules and verdict actions: SRS, DKIM, ARC.

The routing step is where the gateway changes a message for the last time (egress sends the bytes
as they are), so the signatures are made here, over the final bytes of each copy:

- **SRS** (``srs``): a copy that leaves for an outside recipient with an outside envelope sender gets
  an SRS0/SRS1 sender at ``srs.domain``, so SPF passes at the next hop; recipients that are SRS
  addresses of ours (the DSNs egress makes for such copies) are turned back into the original sender
  before routes are planned.
- **DKIM** (``dkim``): outbound mail whose From domain has keys is signed with every key not already
  present (``mailmoat_mail.dkimsign.signing_plan``); the copies share one signing.
- **ARC** (``arc``): an inbound copy that the gateway changed (rules, verdict actions) or that leaves
  for an outside recipient is sealed with our ``Authentication-Results`` (RFC 8617).

A key or secret that cannot be read never loses mail: the copy goes on unsigned (or unrewritten),
the trace says why (``AGENTINFO``) and ``mailmoat_signing_total{result="error"}`` counts it, as
Rspamd does with a missing key.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter

from mailmoat_mail import addresses, srs
from mailmoat_mail.keyfiles import FileCache
from mailmoat_platform.models import Envelope, TraceEvent
from mailmoat_policy import Policy

if TYPE_CHECKING:
    from mailmoat_mail.dkimsign import KeyStore

log = logging.getLogger(__name__)

SIGNING = Counter(
    "mailmoat_signing_total",
    "Outbound treatments of message copies by routing: DKIM signatures, ARC seals, SRS rewrites and reversals.",
    ["kind", "result"],
)


def _domain(address: str) -> str:
    """The domain of an address, lower case; ``""`` when there is none."""
    _, at, domain = address.rpartition("@")
    return domain.lower().rstrip(".") if at else ""


def authserv_id(policy: Policy) -> str:
    """The authserv-id of our ``Authentication-Results`` (as the antispam stage names it)."""
    return policy.antispam.authserv_id or policy.organization.hostname


def outside(recipient: str, policy: Policy) -> bool:
    """A recipient at a domain that is not one of ours."""
    domain = _domain(recipient)
    return bool(domain) and policy.accepted_domain(domain) is None


def needs_srs(envelope: Envelope, policy: Policy) -> bool:
    """An outside envelope sender's copy leaving for an outside recipient (SPF would fail)."""
    if not policy.srs.enabled or not envelope.mail_from:
        return False
    sender = _domain(envelope.mail_from)
    if not sender or sender == policy.srs.domain or policy.accepted_domain(sender) is not None:
        return False
    return any(outside(r, policy) for r in envelope.rcpt_to)


def needs_seal(envelope: Envelope, changed: bool, policy: Policy) -> bool:
    """An inbound copy the gateway changed or forwards to an outside recipient."""
    if not policy.arc.enabled or envelope.direction != "inbound" or envelope.kind != "message":
        return False
    return changed or any(outside(r, policy) for r in envelope.rcpt_to)


@dataclass
class Treated:
    copies: list[tuple[Envelope, bytes]]
    events: list[TraceEvent] = field(default_factory=list)


class Signer:
    """SRS, DKIM and ARC for routing's copies, with the keys and secrets read from their files."""

    def __init__(self) -> None:
        self.files = FileCache()
        self._keys: KeyStore | None = None

    @property
    def keys(self) -> KeyStore:
        """The private keys, read from their files; dkimpy and cryptography are imported with the first
        (a policy without ``dkim.domains`` and ``arc`` never loads them)."""
        if self._keys is None:
            from mailmoat_mail.dkimsign import KeyStore

            self._keys = KeyStore(self.files)
        return self._keys

    @staticmethod
    def active(policy: Policy) -> bool:
        return bool(policy.dkim.domains) or policy.arc.enabled or policy.srs.enabled

    def _secrets(self, policy: Policy) -> list[bytes]:
        assert policy.srs.secret_file is not None
        return self.files.get(policy.srs.secret_file, lambda raw: srs.read_secrets(raw.decode("utf-8")), "srs")

    def _info(self, envelope: Envelope, detail: str, recipients: list[str] | None = None, **data: object) -> TraceEvent:
        return TraceEvent(event="AGENTINFO", message_id=envelope.id, service="routing",
                          recipients=recipients if recipients is not None else list(envelope.rcpt_to),
                          detail=detail, data=dict(data))

    # --- before routes ------------------------------------------------------------------------

    def reverse_recipients(self, envelope: Envelope, policy: Policy, now: float | None = None
                           ) -> tuple[Envelope, list[TraceEvent]]:
        """Recipients that are our SRS addresses, turned into the address the bounce must reach."""
        if not policy.srs.enabled or not any(_domain(r) == policy.srs.domain for r in envelope.rcpt_to):
            return envelope, []
        events: list[TraceEvent] = []
        try:
            secrets = self._secrets(policy)
        except (OSError, UnicodeDecodeError) as exc:
            SIGNING.labels("srs_reverse", "error").inc()
            return envelope, [self._info(envelope, f"SRS recipients not reversed: {exc}")]
        assert policy.srs.domain is not None
        out: list[str] = []
        for rcpt in envelope.rcpt_to:
            if _domain(rcpt) != policy.srs.domain or not srs.is_srs(rcpt.rpartition("@")[0]):
                out.append(rcpt)
                continue
            try:
                back = srs.reverse(rcpt, policy.srs.domain, secrets, policy.srs.max_age_days, now)
            except srs.SrsError as exc:
                SIGNING.labels("srs_reverse", "invalid").inc()
                events.append(self._info(envelope, f"SRS address {rcpt} not reversed: {exc}", [rcpt]))
                out.append(rcpt)
                continue
            SIGNING.labels("srs_reverse", "done").inc()
            events.append(self._info(envelope, f"SRS address {rcpt} reversed to {back.address}", [back.address],
                                     srs=rcpt))
            if back.address not in out:
                out.append(back.address)
        return envelope.model_copy(update={"rcpt_to": out}), events

    # --- each copy ------------------------------------------------------------------------------

    def treat(self, copies: list[Envelope], data: bytes, changed: bool, policy: Policy,
              now: float | None = None) -> Treated:
        """Every copy with its final bytes and sender. Runs in a worker thread (RSA signing, hashing)."""
        result = Treated([])
        if not copies:
            return result
        first = copies[0]
        signed = self._dkim(first, data, policy, result.events)
        sealed: bytes | None = None
        for copy in copies:
            out = signed
            if needs_seal(copy, changed, policy):
                if sealed is None:
                    sealed = self._seal(copy, signed, policy, result.events)
                out = sealed
            if needs_srs(copy, policy):
                copy = self._srs(copy, policy, result.events, now)
            if out is not data:
                copy = copy.model_copy(update={"size": len(out)})
            result.copies.append((copy, out))
        return result

    def _dkim(self, envelope: Envelope, data: bytes, policy: Policy, events: list[TraceEvent]) -> bytes:
        if not policy.dkim.domains:
            return data  # what signing_plan says too, without loading dkimpy
        from mailmoat_mail.dkimsign import KeyFileError, sign, signing_plan

        plan = signing_plan(envelope, data, policy)
        if not plan.keys:
            return data
        try:
            keys = [self.keys.key(entry) for entry in plan.keys]
        except KeyFileError as exc:
            log.error("DKIM key for %s cannot be used, %s goes unsigned: %s", plan.domain, envelope.id, exc,
                      extra={"message_id": envelope.id})
            SIGNING.labels("dkim", "error").inc()
            events.append(self._info(envelope, f"not DKIM-signed: {exc}", dkim_domain=plan.domain))
            return data
        headers = sign(data, plan.domain, keys)
        SIGNING.labels("dkim", "done").inc()
        selectors = [k.selector for k in keys]
        events.append(self._info(envelope, f"DKIM-signed d={plan.domain} s={','.join(selectors)}",
                                 dkim_domain=plan.domain, selectors=selectors))
        return headers + data

    def _seal(self, envelope: Envelope, data: bytes, policy: Policy, events: list[TraceEvent]) -> bytes:
        arc = policy.arc
        assert arc.domain is not None and arc.selector is not None and arc.key_file is not None
        from mailmoat_mail.dkimsign import KeyFileError, arc_seal

        try:
            key = self.keys.load(arc.key_file, "rsa")
            fields = arc_seal(data, arc.domain, arc.selector, key, authserv_id(policy))
        except KeyFileError as exc:
            log.error("ARC key cannot be used, %s goes unsealed: %s", envelope.id, exc)
            SIGNING.labels("arc", "error").inc()
            events.append(self._info(envelope, f"not ARC-sealed: {exc}"))
            return data
        except Exception as exc:  # dkimpy on a message it cannot seal (a header it cannot parse): unsealed
            SIGNING.labels("arc", "error").inc()
            events.append(self._info(envelope, f"not ARC-sealed: {type(exc).__name__}: {exc}"))
            return data
        if fields is None:
            SIGNING.labels("arc", "skipped").inc()
            events.append(self._info(envelope, "not ARC-sealed: no Authentication-Results of ours to vouch for"))
            return data
        SIGNING.labels("arc", "done").inc()
        events.append(self._info(envelope, f"ARC-sealed d={arc.domain} s={arc.selector}"))
        return fields + data

    def _srs(self, copy: Envelope, policy: Policy, events: list[TraceEvent], now: float | None) -> Envelope:
        assert policy.srs.domain is not None
        try:
            secrets = self._secrets(policy)
            if not secrets:
                raise ValueError("the secret file is empty")
        except (OSError, ValueError) as exc:
            SIGNING.labels("srs", "error").inc()
            log.error("SRS secret cannot be used, %s keeps its sender: %s", copy.id, exc)
            events.append(self._info(copy, f"sender not rewritten (SRS): {exc}", list(copy.rcpt_to)))
            return copy
        try:
            rewritten = srs.forward(copy.mail_from, policy.srs.domain, secrets[0], time.time() if now is None else now)
        except srs.SrsError as exc:
            rewritten, problem = "", str(exc)
        else:
            problem = addresses.sendable(rewritten, utf8=copy.smtputf8 or not rewritten.isascii()) or ""
        if problem:  # a quoted local part, say: SRS would make an address no MTA takes
            SIGNING.labels("srs", "skipped").inc()
            events.append(self._info(copy, f"sender not rewritten (SRS): {problem}", list(copy.rcpt_to)))
            return copy
        SIGNING.labels("srs", "done").inc()
        events.append(self._info(copy, f"sender {copy.mail_from} rewritten to {rewritten} (SRS)",
                                 list(copy.rcpt_to), srs=rewritten, original_sender=copy.mail_from))
        return copy.model_copy(update={"mail_from": rewritten})


__all__ = ["SIGNING", "Signer", "Treated", "authserv_id", "needs_seal", "needs_srs", "outside"]
