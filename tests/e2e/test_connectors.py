"""Partner connectors through the whole gateway, against real TLS peers with certificates of a test CA.

Inbound: a partner that must use STARTTLS with a client certificate naming it is accepted over TLS
and refused in clear text, without a certificate, with another name's certificate, and with a
certificate of a CA the gateway does not trust. Outbound: a connector that requires a verified
certificate delivers to the right server, and defers then bounces (never sending in clear text)
for a wrong name, an expired certificate, and a server that does not offer STARTTLS.
"""

from __future__ import annotations

import email
import smtplib
import ssl
from collections.abc import Iterator

import pytest
import trustme

from tests.support import records
from tests.support.certs import client_context, expired_cert, server_context, write_ca, write_leaf
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

GATEWAY_NAME = "gw.mailmoat.test"
PARTNER_NAME = "mail.fabrikam.example"

INBOUND = """
organization:
  hostname: gw.mailmoat.test
  internal_networks: [127.0.0.10/32]
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
connectors:
  inbound:
    - name: fabrikam
      sender_domains: [fabrikam.example]
      tls_cert_name: mail.fabrikam.example
    - name: contoso
      sender_ips: [127.0.0.7]
      require_tls: true
"""

OUTBOUND = """
organization:
  hostname: gw.mailmoat.test
  internal_networks: [127.0.0.10/32]
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
delivery:
  retry_delays: [1]
  expire_after: 4
connectors:
  outbound:
    - {{name: good, recipient_domains: [good.partner.example], smart_hosts: ["127.0.0.1:{good}"],
       tls: verify, tls_name: mx.partner.example}}
    - {{name: wrongname, recipient_domains: [wrong.partner.example], smart_hosts: ["127.0.0.1:{wrong}"],
       tls: verify, tls_name: mx.partner.example}}
    - {{name: expired, recipient_domains: [expired.partner.example], smart_hosts: ["127.0.0.1:{expired}"],
       tls: verify, tls_name: mx.partner.example}}
    - {{name: expiredca, recipient_domains: [expiredca.partner.example], smart_hosts: ["127.0.0.1:{expired}"],
       tls: verify-ca}}
    - {{name: plain, recipient_domains: [plain.partner.example], smart_hosts: ["127.0.0.1:{plain}"],
       tls: required}}
"""


def message(subject: str) -> bytes:
    return (
        f"From: a@fabrikam.example\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@test>\r\n\r\nHello partner.\r\n"
    ).encode()


def send(port: int, sender: str, rcpts: list[str], data: bytes, *, tls: ssl.SSLContext | None = None,
         source: str = "127.0.0.1") -> tuple[int, str]:
    """One transaction, over STARTTLS when ``tls`` is given; the DATA reply or the first refusal."""
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as client:
        client.ehlo("client.fabrikam.example")
        if tls is not None:
            code, reply = client.starttls(context=tls)
            assert code == 220, reply
            client.ehlo("client.fabrikam.example")
        code, reply = client.mail(sender)
        if code != 250:
            return code, reply.decode()
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            if code != 250:
                return code, reply.decode()
        code, reply = client.data(data)
        return code, reply.decode()


def trace_for_sender(sender: str, event: str, timeout: float = 30) -> list[dict]:
    """Every trace event of the messages of ``sender``, once one of them is ``event``."""
    events = records.wait_until(lambda: records.events_by("sender", sender),
                                lambda evs: any(e["event"] == event for e in evs), f"{event} of {sender}", timeout)
    return sorted(events, key=lambda e: e["at"])


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certs(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Files: the test CA, the gateway's certificate, partner client certificates, a stranger CA's."""
    d = tmp_path_factory.mktemp("certs")
    stranger = trustme.CA()
    return {
        "ca": write_ca(ca, d / "ca.pem"),
        "gateway": write_leaf(ca.issue_cert(GATEWAY_NAME, "127.0.0.1"), d, "gateway"),
        "partner": write_leaf(ca.issue_cert(PARTNER_NAME, common_name=PARTNER_NAME), d, "partner"),
        "other": write_leaf(ca.issue_cert("mail.other.example", common_name="mail.other.example"), d, "other"),
        "stranger": write_leaf(stranger.issue_cert(PARTNER_NAME, common_name=PARTNER_NAME), d, "stranger"),
        "mx": write_leaf(ca.issue_cert("mx.partner.example"), d, "mx"),
        "wrong": write_leaf(ca.issue_cert("mx.wrong.example"), d, "wrong"),
        "expired": expired_cert(ca, "mx.partner.example", d),
    }


def tls_env(certs: dict) -> dict[str, str]:
    cert, key = certs["gateway"]
    return {"MAILMOAT_TLS_CERT": cert, "MAILMOAT_TLS_KEY": key, "MAILMOAT_TLS_CLIENT_CA": certs["ca"],
            "MAILMOAT_EGRESS_CA_FILE": certs["ca"]}


def test_inbound_partner_must_use_tls_with_its_certificate(gateway_factory, sink: SmtpSink, certs) -> None:
    gateway = gateway_factory(INBOUND, env=tls_env(certs), services=("ingress", "routing", "egress"))
    port = gateway.smtp_port
    trusted = certs["ca"]

    # clear text: refused at MAIL FROM, traced with the connector's name
    code, reply = send(port, "clear@fabrikam.example", ["alice@example.com"], message("clear"))
    assert (code, reply) == (530, "5.7.0 Must issue a STARTTLS command first")
    (event,) = [e for e in trace_for_sender("clear@fabrikam.example", "REJECT") if e["event"] == "REJECT"]
    assert event["detail"].startswith("530 5.7.0") and event["data"]["connector"] == "fabrikam"

    # TLS without a client certificate
    code, reply = send(port, "nocert@fabrikam.example", ["alice@example.com"], message("nocert"),
                       tls=client_context(trusted))
    assert code == 550 and reply.startswith("5.7.51 ") and "none was presented" in reply, reply
    rejects = [e for e in trace_for_sender("nocert@fabrikam.example", "REJECT") if e["event"] == "REJECT"]
    assert rejects[0]["data"]["connector"] == "fabrikam" and rejects[0]["detail"].startswith("550 5.7.51")

    # a trusted certificate of another name
    code, reply = send(port, "other@fabrikam.example", ["alice@example.com"], message("other"),
                       tls=client_context(trusted, certs["other"]))
    assert code == 550 and reply.startswith("5.7.51 ") and "does not match" in reply, reply
    trace_for_sender("other@fabrikam.example", "REJECT")

    # the right name from a CA the gateway does not trust: the handshake itself fails
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        send(port, "stranger@fabrikam.example", ["alice@example.com"], message("stranger"),
             tls=client_context(trusted, certs["stranger"]))

    # the partner's own certificate over STARTTLS: accepted, delivered, marked with the connector
    code, reply = send(port, "good@fabrikam.example", ["alice@example.com"], message("good"),
                       tls=client_context(trusted, certs["partner"]))
    assert code == 250, reply
    (got,) = sink.wait_for(1)
    assert got.mail_from == "good@fabrikam.example" and got.rcpt_tos == ["alice@example.com"]
    assert b"Subject: good\r\n" in got.data
    events = trace_for_sender("good@fabrikam.example", "DELIVER")
    (receive,) = [e for e in events if e["event"] == "RECEIVE"]
    assert receive["data"]["connector"] == "fabrikam" and receive["data"]["tls"] is True
    assert not any(e["event"] == "REJECT" for e in events)
    assert len(sink.messages) == 1  # nothing refused above was delivered


def test_inbound_partner_by_ip_and_others_unaffected(gateway_factory, sink: SmtpSink, certs) -> None:
    gateway = gateway_factory(INBOUND, env=tls_env(certs))
    port = gateway.smtp_port
    # the partner's IP in clear text, whatever the sender: refused
    code, reply = send(port, "x@anything.example", ["alice@example.com"], message("ip clear"), source="127.0.0.7")
    assert (code, reply) == (530, "5.7.0 Must issue a STARTTLS command first")
    event = next(e for e in trace_for_sender("x@anything.example", "REJECT") if e["event"] == "REJECT")
    assert event["data"]["connector"] == "contoso"
    # over STARTTLS (no certificate needed for this connector): accepted
    code, reply = send(port, "y@anything.example", ["alice@example.com"], message("ip tls"),
                       tls=client_context(certs["ca"]), source="127.0.0.7")
    assert code == 250, reply
    # any other sender in clear text is not a partner: accepted as before, no connector
    code, reply = send(port, "z@elsewhere.example", ["alice@example.com"], message("stranger clear"))
    assert code == 250, reply
    got = sink.wait_for(2)
    assert sorted(m.mail_from for m in got) == ["y@anything.example", "z@elsewhere.example"]
    tls_receive = [e for e in trace_for_sender("y@anything.example", "DELIVER") if e["event"] == "RECEIVE"]
    plain_receive = [e for e in trace_for_sender("z@elsewhere.example", "DELIVER") if e["event"] == "RECEIVE"]
    assert tls_receive[0]["data"]["connector"] == "contoso"
    assert plain_receive[0]["data"]["connector"] is None


@pytest.fixture
def partner_sinks(certs) -> Iterator[dict[str, SmtpSink]]:
    """Partner servers: the right certificate, a wrong name, an expired one, and one without STARTTLS."""
    sinks = {
        "good": SmtpSink(tls_context=server_context(*certs["mx"]), hostname="mx.partner.example"),
        "wrong": SmtpSink(tls_context=server_context(*certs["wrong"]), hostname="mx.wrong.example"),
        "expired": SmtpSink(tls_context=server_context(*certs["expired"]), hostname="mx.partner.example"),
        "plain": SmtpSink(hostname="plain.partner.example"),
    }
    for server in sinks.values():
        server.start()
    yield sinks
    for server in sinks.values():
        server.stop()


def test_outbound_connector_verifies_the_partner(gateway_factory, sink: SmtpSink, partner_sinks, certs) -> None:
    ports = {name: s.port for name, s in partner_sinks.items()}
    gateway = gateway_factory(OUTBOUND, env=tls_env(certs), **ports)
    port = gateway.smtp_port
    cases = {
        "good": "bob@good.partner.example",
        "wrongname": "bob@wrong.partner.example",
        "expired": "bob@expired.partner.example",
        "expiredca": "bob@expiredca.partner.example",
        "plain": "bob@plain.partner.example",
    }
    for name, rcpt in cases.items():
        code, reply = send(port, f"{name}@example.com", [rcpt], message(f"out {name}"), source="127.0.0.10")
        assert code == 250, (name, reply)

    # the right certificate and name: delivered over TLS
    (got,) = partner_sinks["good"].wait_for(1)
    assert got.tls and got.rcpt_tos == ["bob@good.partner.example"] and got.mail_from == "good@example.com"
    events = trace_for_sender("good@example.com", "DELIVER")
    route = next(e for e in events if e["event"] == "ROUTE")
    assert route["detail"] == "connector:good" and route["data"]["route"]["tls"] == "verify"

    # every other case: deferred, then bounced to the sender when the message expires
    dsns = {m.rcpt_tos[0]: m for m in sink.wait_for(4, timeout=60) if m.mail_from == ""}
    assert sorted(dsns) == sorted(f"{n}@example.com" for n in cases if n != "good")
    why = {
        "wrongname": "4.7.5 TLS with 127.0.0.1 failed: [SSL: CERTIFICATE_VERIFY_FAILED]",
        "expired": "certificate has expired",
        "expiredca": "certificate has expired",
        "plain": "4.7.4 TLS is required, but was not offered",
    }
    for name, text in why.items():
        events = trace_for_sender(f"{name}@example.com", "DSN")
        kinds = [e["event"] for e in events]
        assert "DEFER" in kinds and "FAIL" in kinds and "DELIVER" not in kinds, (name, kinds)
        defer = next(e for e in events if e["event"] == "DEFER")
        assert text in defer["detail"] and defer["data"]["route"] == f"connector:{name}", (name, defer)
        report = email.message_from_bytes(dsns[f"{name}@example.com"].data)
        assert report.get_content_type() == "multipart/report"
        assert "4.4.7" in report.get_payload()[1].as_string()

    # never sent in clear text, never sent at all to a server that could not be verified
    for name in ("wrong", "expired", "plain"):
        assert partner_sinks[name].messages == [] and partner_sinks[name].refused == [], name
    assert len(partner_sinks["good"].messages) == 1


ALLOW = """
organization:
  hostname: gw.mailmoat.test
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
pipeline:
  filters: [connection_filter]
connection_filter:
  ip_block: [127.0.0.0/29]
  ptr: false
  helo: false
connectors:
  inbound:
    - name: contoso
      sender_ips: [127.0.0.7]
      require_tls: true
      allow_list: true
"""


def test_partner_ips_on_the_allow_list(gateway_factory, sink: SmtpSink, certs) -> None:
    gateway = gateway_factory(ALLOW, env=tls_env(certs),
                              services=("ingress", "connection_filter", "routing", "egress"))
    # a neighbour in the blocked range is refused at the greeting; the partner is allow-listed
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        send(gateway.smtp_port, "n@anything.example", ["alice@example.com"], message("blocked"), source="127.0.0.6")
    assert refused.value.smtp_code == 550
    code, reply = send(gateway.smtp_port, "p@contoso.example", ["alice@example.com"], message("allowed"),
                       tls=client_context(certs["ca"]), source="127.0.0.7")
    assert code == 250, reply
    (got,) = sink.wait_for(1)
    header = got.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "X-Mailmoat-Connection-Report:" in header and "IPV:CAL" in header, header
