"""The rule hook of the routing handler against real Redis (trace, quarantine): what each rule outcome
makes of a message — routes, TLS, the verdict action after a rule's SCL, quarantine, delete, NDRs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import parse_policy
from mailmoat_records.quarantine import QuarantineStore
from mailmoat_records.trace import TraceStore
from mailmoat_routing.service import RULE_HITS, Router

pytestmark = pytest.mark.integration

POLICY = """
accepted_domains:
  - {domain: example.com, route: onprem}
routes:
  onprem: {hosts: ["127.0.0.1:2526"], tls: none}
connectors:
  outbound:
    - {name: legal, rule_only: true, smart_hosts: ["relay.legal.test:587"], tls: verify}
rules:
  - name: legal-hold
    conditions: {header_matches: {header: X-Legal-Case, patterns: ['^LC-\\d+$']}}
    actions: {route_to_connector: legal}
  - name: tls-only
    conditions: {recipient_domain: [partner.test]}
    actions: {require_tls: true}
  - name: trusted-sender
    conditions: {sender_domain: [trusted.test]}
    actions: {bypass_spam_filtering: true}
  - name: scl-by-header
    conditions: {header_contains: {header: X-Suspect, words: ["yes"]}}
    actions: {set_scl: 9}
  - name: hold
    conditions: {subject_contains: [hold me]}
    actions: {quarantine: true, set_header: {X-Held-By: rule}}
  - name: drop
    conditions: {subject_contains: [drop me]}
    actions: {delete: true}
  - name: refuse
    conditions: {subject_contains: [refuse me]}
    actions: {reject: {code: 5.7.950, text: Not here}}
  - name: quoted-refusal
    conditions: {body_contains: [refuse me]}
    actions: {delete: true}
  - name: blocked-types-refused
    conditions: {verdict: [blocked-type]}
    actions: {reject: {code: 5.7.920, text: Attachment type not accepted}}
  - name: watch
    mode: test
    conditions: {subject_contains: [watch]}
    actions: {delete: true}
"""
HCSPAM = Verdict(stage="antispam", result="hcspam", detail={"scl": 8, "category": "hcspam", "categories": ["hcspam"]})


@pytest.fixture
async def router(redis_url: str) -> AsyncIterator[Router]:
    client = redisclient.from_url(redis_url)
    trace = TraceStore(client)
    runtime = SimpleNamespace(policy=SimpleNamespace(current=parse_policy(POLICY)), redis=client,
                              trace=trace, record=trace.record)
    yield Router(runtime, QuarantineStore(client))  # type: ignore[arg-type]
    await client.aclose()


def envelope(**fields: object) -> Envelope:
    return Envelope(**{"mail_from": "s@outside.test", "rcpt_to": ["a@example.com"],
                       "itinerary": ["routing", "egress"], **fields})


def message(subject: str, extra: bytes = b"") -> bytes:
    return b"From: s@outside.test\r\n" + extra + b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n"


async def events(router: Router, message_id: str) -> list[tuple[str, str]]:
    return [(e.event, e.data.get("rule", "")) for e in await router.runtime.trace.events(message_id)]


async def test_a_rule_routes_through_a_named_connector_and_raises_tls(router: Router) -> None:
    env = envelope(rcpt_to=["a@example.com", "b@partner.test"])
    out = await router.handle(env, message("case", b"X-Legal-Case: LC-1234\r\n"))
    routes = {o.envelope.route.name: o.envelope.route for o in out if o.envelope.route}
    assert list(routes) == ["connector:legal"] and routes["connector:legal"].tls == "verify"
    assert out[0].envelope.rcpt_to == ["a@example.com", "b@partner.test"]
    out = await router.handle(envelope(rcpt_to=["a@example.com", "b@partner.test"]), message("plain"))
    tls = {o.envelope.route.name: o.envelope.route.tls for o in out if o.envelope.route}
    # the rule's recipient condition scopes its routing action: only the partner's copy needs TLS
    assert tls == {"route:onprem": "none", "mx:partner.test+tls": "required"}
    assert ("RULE", "tls-only") in await events(router, out[0].envelope.id)


async def test_bypass_and_set_scl_change_the_verdict_action(router: Router) -> None:
    spam = envelope(mail_from="news@trusted.test", verdicts={"antispam": HCSPAM})
    out = await router.handle(spam, message("offer"))
    assert [o.envelope.route.name for o in out if o.envelope.route] == ["route:onprem"]  # delivered
    assert out[0].envelope.verdicts["antispam"].detail["scl_rule"] == "trusted-sender"
    clean = envelope()
    out = await router.handle(clean, message("hello", b"X-Suspect: yes\r\n"))
    assert out == []
    got = await router.runtime.trace.events(clean.id)
    quarantined = [e for e in got if e.event == "QUARANTINE"]
    assert quarantined and quarantined[0].data["cause"] == "hcspam"


async def test_rule_quarantine_delete_and_reject(router: Router) -> None:
    held = envelope()
    assert await router.handle(held, message("please hold me")) == []
    record = await QuarantineStore(router.runtime.redis).get(held.id, data=True)
    assert record is not None and (record.reason, record.result) == ("rule", "hold")
    assert record.data is not None and record.data.startswith(b"X-Held-By: rule\r\n")
    assert [e for e, _ in await events(router, held.id)] == ["RULE", "QUARANTINE"]

    dropped = envelope()
    assert await router.handle(dropped, message("drop me now")) == []
    assert [e for e, _ in await events(router, dropped.id)] == ["RULE", "DELETE"]

    refused = envelope()
    (ndr,) = await router.handle(refused, message("refuse me"))
    assert ndr.envelope.kind == "dsn" and ndr.envelope.rcpt_to == ["s@outside.test"]
    assert b"5.7.950" in ndr.data and b"Not here" in ndr.data
    assert [e for e, _ in await events(router, refused.id)] == ["RULE", "FAIL", "DSN"]
    # The report quotes the original headers (so "quoted-refusal" would delete it), but reports the
    # gateway makes are not subject to rules.
    again = await router.handle(ndr.envelope.model_copy(update={"itinerary": ["routing", "egress"]}), ndr.data)
    assert [o.envelope.route.name for o in again if o.envelope.route] == ["mx:outside.test"]

    null_sender = envelope(mail_from="")
    assert await router.handle(null_sender, message("refuse me")) == []
    assert [e for e, _ in await events(router, null_sender.id)] == ["RULE", "FAIL", "AGENTINFO"]


async def test_test_mode_and_released_messages(router: Router) -> None:
    before = RULE_HITS.labels("watch", "test")._value.get()
    watched = envelope()
    out = await router.handle(watched, message("watch this"))
    assert len(out) == 1 and out[0].data == message("watch this")
    got = await router.runtime.trace.events(watched.id)
    assert [(e.event, e.data.get("mode")) for e in got][:1] == [("RULE", "test")]
    assert RULE_HITS.labels("watch", "test")._value.get() == before + 1
    released = envelope(released_from="Q1")
    out = await router.handle(released, message("drop me"))
    assert len(out) == 1
    assert "RULE" not in [e for e, _ in await events(router, released.id)]


async def test_rules_run_before_the_verdict_actions_and_see_the_verdicts(router: Router) -> None:
    blocked = Verdict(stage="antivirus", result="blocked-type", detail={"action": "quarantine"})
    env = envelope(verdicts={"antivirus": blocked})
    (ndr,) = await router.handle(env, message("invoice"))
    assert b"5.7.920" in ndr.data  # the rule's reject, not the antivirus quarantine
    assert await QuarantineStore(router.runtime.redis).get(env.id) is None
    assert [e for e, _ in await events(router, env.id)] == ["RULE", "FAIL", "DSN"]
