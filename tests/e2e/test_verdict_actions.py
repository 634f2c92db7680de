"""Routing carries out the antispam and DMARC actions: envelopes with verdicts set by the test are
published straight to the routing queue of a running gateway, and the sink shows what came out."""

from __future__ import annotations

import email
import email.policy
import textwrap

import pytest

from mailmoat_platform.models import Envelope, Verdict
from tests.e2e.actions_support import events_of, publish_to_routing, quarantine_cli, wait_event
from tests.e2e.conftest import POLICY
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

ACTIONS = """
antispam:
  subject_prefix: "[Suspect] "
  redirect_to: review@example.com
  actions:
    spam: junk
    bulk: prepend_subject
    phish: redirect
    hcspam: quarantine
    spoof: delete
    dmarc_reject: reject
"""


def message(tag: str) -> bytes:
    return (f"From: s@example.com\r\nTo: alice@example.com\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@example.com>\r\n\r\nbody of {tag}\r\n").encode()


def envelope(tag: str, verdict: Verdict, **kw) -> tuple[Envelope, bytes]:
    data = message(tag)
    env = Envelope(mail_from=kw.pop("mail_from", "s@example.com"), rcpt_to=["alice@example.com"],
                   itinerary=["antispam", "routing", "egress"], size=len(data), client_ip="192.0.2.9", **kw)
    env.add_verdict(verdict)
    return env, data


def spam(category: str, scl: int, **detail) -> Verdict:
    return Verdict(stage="antispam", result=category, detail={"scl": scl, "category": category, **detail})


def dmarc_reject(**detail) -> Verdict:
    return Verdict(stage="antispam", result="clean", detail={
        "scl": 1, "dmarc": {"result": "fail", "policy": "reject", "domain": "example.com"}, **detail})


def test_antispam_actions_and_dmarc_reject(gateway_factory, sink: SmtpSink, amqp_url: str) -> None:
    gateway = gateway_factory(textwrap.dedent(POLICY) + textwrap.dedent(ACTIONS))
    junk = envelope("junk", spam("spam", 5))
    prefix = envelope("prefix", spam("bulk", 6))
    redirect = envelope("redirect", spam("phish", 9))
    held = envelope("held", spam("hcspam", 8))
    deleted = envelope("deleted", spam("spoof", 6))
    rejected = envelope("rejected", dmarc_reject())
    forged = envelope("forged", dmarc_reject(forged=True))
    plain = envelope("plain", spam("clean", 1))
    publish_to_routing(amqp_url, [junk, prefix, redirect, held, deleted, rejected, forged, plain])

    # delivered: junk, prefix, redirect, plain, and the NDR of "rejected"
    got = sink.wait_for(5, timeout=60)
    by_subject = {email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]: m for m in got}
    assert by_subject["junk"].data == junk[1] and by_subject["plain"].data == plain[1]
    assert by_subject["[Suspect] prefix"].data == prefix[1].replace(b"Subject: prefix", b"Subject: [Suspect] prefix")
    assert by_subject["redirect"].rcpt_tos == ["review@example.com"] and by_subject["redirect"].data == redirect[1]
    ndr = by_subject["Undelivered Mail Returned to Sender"]
    assert ndr.mail_from == "" and ndr.rcpt_tos == ["s@example.com"]
    assert b"Status: 5.7.509" in ndr.data and b"DMARC policy of reject" in ndr.data
    assert b"Message-ID: <rejected@example.com>" in ndr.data and b"body of rejected" not in ndr.data

    # ended in routing, each with its trace event
    quarantined = wait_event(held[0].id, "QUARANTINE")
    assert quarantined["data"]["cause"] == "hcspam" and quarantined["data"]["quarantine_id"] == held[0].id
    assert wait_event(deleted[0].id, "DELETE")["data"]["cause"] == "spoof"
    assert "5.7.509" in wait_event(rejected[0].id, "FAIL")["detail"]
    assert wait_event(rejected[0].id, "DSN")["data"]["dsn_id"] == rejected[0].id + "N"
    assert "no non-delivery report" in wait_event(forged[0].id, "AGENTINFO")["detail"]
    assert "DSN" not in events_of(forged[0].id)
    assert wait_event(redirect[0].id, "REDIRECT")["data"]["original_recipients"] == ["alice@example.com"]
    assert wait_event(junk[0].id, "SPAM")["data"]["action"] == "junk"
    metrics = gateway.metrics("routing")
    for action, cause in [("junk", "spam"), ("prepend_subject", "bulk"), ("redirect", "phish"),
                          ("quarantine", "hcspam"), ("delete", "spoof"), ("reject", "dmarc_reject"),
                          ("deliver", "none")]:
        assert f'mailmoat_routing_actions_total{{action="{action}",cause="{cause}"}}' in metrics
    listing = quarantine_cli(amqp_url, "list")
    assert listing.returncode == 0 and held[0].id in listing.stdout and "hcspam" in listing.stdout
    assert len(listing.stdout.splitlines()) == 1

    # a user may release hcspam; it is delivered with its bytes unchanged, once
    sink.clear()
    released = quarantine_cli(amqp_url, "release", held[0].id, "--as", "user")
    assert released.returncode == 0, released.stderr
    (again,) = sink.wait_for(1, timeout=30)
    assert again.data == held[1] and again.rcpt_tos == ["alice@example.com"]
    assert all(m.mail_from != "" for m in sink.messages)
