"""TLS reports (RFC 8460) from the running gateway: egress's periodic task mails the day before's
report to the rua of the domain's ``_smtp._tls`` record (a local DNS server), routing routes it as
outbound mail by MX, egress delivers it into the sink; the JSON validates against the RFC 8460 schema."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import redis.asyncio

from mailmoat_common.models import utcnow
from mailmoat_egress import tlsrpt
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "tlsrpt.schema.json").read_text())
ZONE = """
rpt.test. 60 IN MX 10 mx.rpt.test.
mx.rpt.test. 60 IN A 127.0.0.1
_smtp._tls.rpt.test. 60 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@rpt.test"
"""
POLICY = """
organization: {{name: Contoso, hostname: gw.contoso.test}}
outbound:
  mx_port: {sink_port}
  tls_rpt: {{enabled: true, contact: tls-admin@contoso.test, interval: 10}}
delivery: {{retry_delays: [1, 2], expire_after: 600}}
dns: {{nameservers: ["127.0.0.1"], port: {dns_port}, timeout: 2}}
"""


async def _seed(url: str) -> str:
    client = redis.asyncio.Redis.from_url(url)
    day = utcnow() - timedelta(days=1)
    applied = tlsrpt.AppliedPolicy("sts", ("version: STSv1", "mode: testing", "mx: mx.rpt.test", "max_age: 86400"),
                                   ("mx.rpt.test",))
    try:
        for result in ("successful", "successful", "certificate-not-trusted"):
            await tlsrpt.record(client, "rpt.test", result, day, policy=applied,
                                detail=tlsrpt.FailureDetail(result, "", "mx.rpt.test"))
    finally:
        await client.aclose()
    return f"{day:%Y-%m-%d}"


def test_egress_mails_yesterdays_report(gateway_factory, redis_url: str, sink: SmtpSink) -> None:
    day = asyncio.run(_seed(redis_url))
    with DnsServer(ZONE) as dns:
        gateway = gateway_factory(POLICY, services=("routing", "egress"), dns_port=dns.port)
        (received,) = sink.wait_for(1, timeout=30)
        assert received.mail_from == "tlsrpt-noreply@gw.contoso.test"
        assert received.rcpt_tos == ["tlsrpt@rpt.test"]
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert message.get_content_type() == "multipart/report" and message.get_param("report-type") == "tlsrpt"
        assert (message["TLS-Report-Domain"], message["TLS-Report-Submitter"]) == ("rpt.test", "gw.contoso.test")
        _, attachment = message.iter_parts()
        assert attachment.get_content_type() == "application/tlsrpt+gzip"
        report = json.loads(gzip.decompress(attachment.get_content()))
        jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                                        ).validate(report)
        assert report["date-range"]["start-datetime"] == f"{day}T00:00:00Z"
        assert report["policies"][0]["summary"] == {"total-successful-session-count": 2,
                                                    "total-failure-session-count": 1}
        assert report["policies"][0]["failure-details"] == [
            {"result-type": "certificate-not-trusted", "receiving-mx-hostname": "mx.rpt.test",
             "failed-session-count": 1}]
        metrics = gateway.metrics("egress")
        assert 'mailmoat_tls_rpt_reports_total{outcome="sent"} 1.0' in metrics
