"""TLS reports (RFC 8460) end to end through egress, with real parts: counters in Redis, the
``_smtp._tls`` TXT and MX records from a local authoritative DNS server, the report published on the
broker and delivered by the egress service into a recording SMTP sink.

Routing's step is played by the test (the report frame taken from the routing queue and given the MX
route routing gives outbound mail), so the test needs only egress."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from mailmoat_egress import tlsrpt
from mailmoat_egress.mtasts import StsPolicy
from mailmoat_egress.stspolicies import CACHE_PREFIX
from mailmoat_egress.tlsrptsend import REPORTS, TlsReporter, routing_publisher, sent_key
from mailmoat_platform.bus import Publish, decode, stage_queue
from mailmoat_platform.models import Envelope, Route, utcnow
from tests.integration.test_egress_service import DATA, Harness, _events, _harness, _wait_messages
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "tlsrpt.schema.json").read_text())
DAY = datetime(2026, 12, 4, 12, tzinfo=UTC)
DOMAINS = ("rpt.test", "norecord.test", "httpsonly.test", "broken.test", "flaky.test")
ZONE = """
rpt.test. 60 IN MX 10 mx.rpt.test.
mx.rpt.test. 60 IN A 127.0.0.1
_smtp._tls.rpt.test. 60 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@rpt.test,mailto:copy@rpt.test"
_mta-sts.rpt.test. 60 IN TXT "v=STSv1; id=1"
_smtp._tls.httpsonly.test. 60 IN TXT "v=TLSRPTv1; rua=https://reports.httpsonly.test/v1"
_smtp._tls.broken.test. 60 IN TXT "v=TLSRPTv1; rua=ftp://reports.broken.test/"
norecord.test. 60 IN TXT "v=spf1 -all"
_smtp._tls.flaky.test. 60 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@flaky.test"
"""
POLICY = tlsrpt.AppliedPolicy("sts", ("version: STSv1", "mode: enforce", "mx: mx.rpt.test", "max_age: 86400"),
                              ("mx.rpt.test",))


@pytest.fixture
async def setup(amqp_url, redis_url, write_policy) -> AsyncIterator[tuple[Harness, SmtpSink, TlsReporter]]:
    with DnsServer(ZONE, servfail_names={"_smtp._tls.flaky.test"}) as dns, SmtpSink() as sink:
        policy = write_policy(f"""
        organization: {{name: Contoso, hostname: gw.contoso.test}}
        outbound:
          mx_port: {sink.port}
          mx_loopback: true
          tls_rpt: {{enabled: true, contact: tls-admin@contoso.test, sender: tlsrpt@contoso.test}}
        delivery: {{retry_delays: [60], expire_after: 600, connect_timeout: 5, command_timeout: 10}}
        dns: {{nameservers: ["127.0.0.1"], port: {dns.port}, timeout: 2}}
        """)
        async for h in _harness(amqp_url, redis_url, policy):
            redis = h.runtime.redis
            await redis.delete(*[k for d in DOMAINS for k in (tlsrpt.counter_key(d, DAY), tlsrpt.failure_key(d, DAY),
                                                                tlsrpt.policy_key(d, DAY), sent_key(d, DAY))])
            reporter = TlsReporter(lambda r=h.runtime: r.redis, routing_publisher(h.probe),
                                   lambda r=h.runtime: r.policy.current)
            yield h, sink, reporter


async def _count(redis, domain: str, result: str, times: int, **detail: str) -> None:
    for _ in range(times):
        await tlsrpt.record(redis, domain, result, DAY, policy=POLICY,
                            detail=tlsrpt.FailureDetail(result, **detail) if detail else None)


def _reports(outcome: str) -> float:
    return REPORTS.labels(outcome)._value.get()


async def test_daily_report_reaches_the_rua_once(setup) -> None:
    harness, sink, reporter = setup
    redis = harness.runtime.redis
    await _count(redis, "rpt.test", "successful", 5)
    await _count(redis, "rpt.test", "certificate-expired", 2, sending_mta_ip="198.51.100.25",
                 receiving_mx_hostname="mx.rpt.test")
    await _count(redis, "rpt.test", "starttls-not-supported", 1, receiving_mx_hostname="mx.rpt.test")
    for domain in DOMAINS[1:4]:
        await _count(redis, domain, "successful", 1)
    before = {o: _reports(o) for o in ("sent", "no_record", "retry")}

    assert await reporter.send_day(DAY) == ["rpt.test"]
    assert {o: _reports(o) - before[o] for o in before} == {"sent": 1, "no_record": 3, "retry": 0}
    # Another replica (or the next round) finds every domain of the day taken.
    other = TlsReporter(reporter.redis, reporter.publish, reporter.policy)
    assert await other.send_day(DAY) == []
    assert await reporter.send_day(DAY) == []

    # Routing's step: the report is outbound mail to the rua's domain, delivered by MX.
    envelope, data = await _report_frame(harness)
    assert envelope.mail_from == "tlsrpt@contoso.test"
    assert envelope.rcpt_to == ["tlsrpt@rpt.test", "copy@rpt.test"]
    # rpt.test enforces an MTA-STS policy its MX does not match: other mail waits, the report goes out
    # all the same and is not counted for the next report (RFC 8460 5.3).
    route = Route(name="mx:rpt.test", kind="mx", domain="rpt.test", tls="opportunistic")
    await redis.set(CACHE_PREFIX + "rpt.test", json.dumps(
        {"id": "1", "policy": StsPolicy("enforce", 86400, ("mx.elsewhere.test",)).to_json()}))
    other = Envelope(mail_from="s@contoso.test", rcpt_to=["a@rpt.test"], itinerary=["routing", "egress"], route=route)
    await harness.send(other, DATA)
    await _events(harness, other.id, "DEFER")
    assert await tlsrpt.counts(redis, "rpt.test", utcnow()) == {"validation-failure": 1}
    await harness.probe.publish(Publish(stage_queue("egress"), envelope.model_copy(update={"route": route}), data))

    (received,) = await _wait_messages(sink, 1)
    await _events(harness, envelope.id, "DELIVER")
    assert await tlsrpt.counts(redis, "rpt.test", utcnow()) == {"validation-failure": 1}
    assert received.mail_from == "tlsrpt@contoso.test"
    assert sorted(received.rcpt_tos) == ["copy@rpt.test", "tlsrpt@rpt.test"]
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["TLS-Report-Domain"] == "rpt.test"
    assert message["TLS-Report-Submitter"] == "gw.contoso.test"
    assert message["From"] == "tlsrpt@contoso.test"
    assert "Report-ID: <2026-12-04.rpt.test@gw.contoso.test>" in " ".join(str(message["Subject"]).split())
    text, attachment = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "gw.contoso.test!rpt.test!1796342400!1796428799.json.gz"
    report = json.loads(gzip.decompress(attachment.get_content()))
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                                    ).validate(report)
    assert report["organization-name"] == "Contoso"
    assert report["contact-info"] == "tls-admin@contoso.test"
    assert report["date-range"] == {"start-datetime": "2026-12-04T00:00:00Z", "end-datetime": "2026-12-04T23:59:59Z"}
    (entry,) = report["policies"]
    assert entry["policy"] == {"policy-type": "sts", "policy-string": list(POLICY.policy_string),
                               "policy-domain": "rpt.test", "mx-host": ["mx.rpt.test"]}
    assert entry["summary"] == {"total-successful-session-count": 5, "total-failure-session-count": 3}
    assert entry["failure-details"] == [
        {"result-type": "certificate-expired", "sending-mta-ip": "198.51.100.25",
         "receiving-mx-hostname": "mx.rpt.test", "failed-session-count": 2},
        {"result-type": "starttls-not-supported", "receiving-mx-hostname": "mx.rpt.test", "failed-session-count": 1},
    ]


async def _report_frame(harness: Harness):
    """The one report frame on the routing queue."""
    assert harness.probe.channel is not None
    queue = await harness.probe.channel.get_queue(stage_queue("routing"))
    for _ in range(100):
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return decode(message.body)
        await asyncio.sleep(0.05)
    raise AssertionError("no report on the routing queue")


async def test_failure_details_stay_bounded(setup) -> None:
    harness, _, _ = setup
    redis = harness.runtime.redis
    for n in range(tlsrpt.MAX_DETAILS + 20):
        await tlsrpt.record(redis, "rpt.test", "certificate-expired", DAY,
                            detail=tlsrpt.FailureDetail("certificate-expired", "", f"mx{n}.rpt.test"))
    found = await tlsrpt.failures(redis, "rpt.test", DAY)
    assert len(found) == tlsrpt.MAX_DETAILS
    assert found[tlsrpt.FailureDetail("certificate-expired")] == 21
    assert sum(found.values()) == tlsrpt.MAX_DETAILS + 20


async def test_a_failed_lookup_or_publish_gives_the_day_back(setup) -> None:
    harness, _, reporter = setup
    redis = harness.runtime.redis
    await _count(redis, "flaky.test", "successful", 1)
    retries = _reports("retry")
    assert await reporter.send_day(DAY) == [], "SERVFAIL for _smtp._tls.flaky.test"
    assert _reports("retry") - retries == 1
    assert not await redis.exists(sent_key("flaky.test", DAY)), "the next round tries again"

    await _count(redis, "rpt.test", "successful", 1)

    async def broker_down(envelope, data) -> None:
        raise ConnectionError("broker unreachable")

    failing = TlsReporter(reporter.redis, broker_down, reporter.policy)
    with pytest.raises(ConnectionError):
        await failing.send_domain("rpt.test", DAY, utcnow())
    assert not await redis.exists(sent_key("rpt.test", DAY))
    assert await reporter.send_domain("rpt.test", DAY, utcnow())
    assert await redis.exists(sent_key("rpt.test", DAY))
