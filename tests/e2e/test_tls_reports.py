"""TLS reports (RFC 8460) from the running gateway: egress's periodic task mails the day before's
report to the rua of the domain's ``_smtp._tls`` record (a local DNS server), routing routes it as
outbound mail by MX and signs it with the reporting domain's DKIM key, egress delivers it into the
sink although the domain enforces an MTA-STS policy its MX does not match (section 5.3); the JSON
validates against the RFC 8460 schema and the signature verifies with dkimpy."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
from datetime import timedelta
from pathlib import Path

import dkim
import jsonschema
import pytest
import redis.asyncio

from mailmoat_egress import tlsrpt
from mailmoat_egress.mtasts import StsPolicy
from mailmoat_egress.stspolicies import CACHE_PREFIX
from mailmoat_platform.models import utcnow
from tests.e2e.test_dkim_signing import dnsfunc
from tests.support.dkimkeys import make_key, txt_zone
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "tlsrpt.schema.json").read_text())
ZONE = """
rpt.test. 60 IN MX 10 mx.rpt.test.
mx.rpt.test. 60 IN A 127.0.0.1
_smtp._tls.rpt.test. 60 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@rpt.test"
_mta-sts.rpt.test. 60 IN TXT "v=STSv1; id=1"
"""
KEY = make_key()
POLICY = """
organization: {{name: Contoso, hostname: gw.contoso.test}}
accepted_domains: [{{domain: contoso.test, route: onprem}}]
routes: {{onprem: {{hosts: ["127.0.0.1:{sink_port}"], tls: none}}}}
outbound:
  mx_port: {sink_port}
  mx_loopback: true
  tls_rpt: {{enabled: true, contact: tls-admin@contoso.test, sender: tlsrpt@contoso.test, interval: 10}}
dkim:
  domains:
    - {{domain: contoso.test, keys: [{{selector: rpt, key_file: "{key_file}"}}]}}
delivery: {{retry_delays: [1, 2], expire_after: 600}}
dns: {{nameservers: ["127.0.0.1"], port: {dns_port}, timeout: 2}}
"""


async def _seed(url: str) -> str:
    client = redis.asyncio.Redis.from_url(url)
    day = utcnow() - timedelta(days=1)
    applied = tlsrpt.AppliedPolicy("sts", ("version: STSv1", "mode: testing", "mx: mx.rpt.test", "max_age: 86400"),
                                   ("mx.rpt.test",))
    try:
        # rpt.test enforces a policy its MX does not match (cached, as egress caches a fetched one).
        await client.set(CACHE_PREFIX + "rpt.test", json.dumps(
            {"id": "1", "policy": StsPolicy("enforce", 86400, ("mx.elsewhere.test",)).to_json()}))
        for result in ("successful", "successful", "certificate-not-trusted"):
            await tlsrpt.record(client, "rpt.test", result, day, policy=applied,
                                detail=tlsrpt.FailureDetail(result, "", "mx.rpt.test"))
    finally:
        await client.aclose()
    return f"{day:%Y-%m-%d}"


def test_egress_mails_yesterdays_report(gateway_factory, redis_url: str, sink: SmtpSink, tmp_path: Path) -> None:
    day = asyncio.run(_seed(redis_url))
    key_file = tmp_path / "contoso.test.rpt.key"
    key_file.write_bytes(KEY.private_pem)
    with DnsServer(ZONE + txt_zone("rpt._domainkey.contoso.test", KEY.record)) as dns:
        gateway = gateway_factory(POLICY, services=("routing", "egress"), dns_port=dns.port, key_file=key_file)
        (received,) = sink.wait_for(1, timeout=30)
        assert dkim.DKIM(received.data).verify(dnsfunc=dnsfunc(dns)), "signed by the reporting domain"
        assert received.mail_from == "tlsrpt@contoso.test"
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
        # The sink has the report before egress has heard the reply, recorded the session (or not) and
        # acked: read its metrics once it acked.
        metrics = gateway.metrics_when(
            "egress", lambda text: 'mailmoat_messages_total{outcome="ok",service="egress"}' in text)
        assert 'mailmoat_tls_rpt_reports_total{outcome="sent"} 1.0' in metrics
        assert "mailmoat_tls_rpt_total{" not in metrics, "the report's own session is neither checked nor counted"
