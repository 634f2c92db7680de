"""espoofer's server cases (USENIX Security 2020, "Composition Kills"; tests/data/espoofer) end to end: each
attack sent byte for byte over SMTP into a gateway with the antispam stage, DNS answered locally.

attack.com is the attacker's: SPF passes 127.0.0.1 for it and each name below it a case uses, and it publishes the DKIM
key the cases sign with wherever a signature's ``s=``/``d=`` could lead a verifier (the key is made here).
legitimate.com is the spoofed domain: ``v=spf1 -all``, no DKIM key, ``_dmarc`` ``p=reject``. victim.com is
ours. No case may be delivered as authenticated mail from legitimate.com: it is refused during SMTP with the
right reply, or DMARC fails for legitimate.com with its ``p=reject``, and what the gateway writes in
``Authentication-Results`` names no pass for legitimate.com.

Two gateways: ``author_check: reject`` (the default: a From that is not one mailbox is refused at DATA) and
``author_check: evaluate`` with ``dmarc_reject: quarantine`` (every author domain judged; the message held, so
its ``Authentication-Results`` as written can be read back). Run time: about 20 s (two gateways, 19 cases
each); the outcome of every case is printed as a table (``-s``).
"""

from __future__ import annotations

import json
import re
import socket
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import dkim
import pytest
from dnslib import QTYPE, RR, TXT, DNSLabel

from tests.support import records
from tests.support.dkimkeys import make_key
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink
from tests.support.smtpwire import command, reply

pytestmark = pytest.mark.e2e

DATA = Path(__file__).parents[1] / "data" / "espoofer" / "server-cases.json"
CASES: list[dict[str, Any]] = json.loads(DATA.read_text())["cases"]
KEY = make_key()

POLICY = """
organization:
  hostname: gw.victim.com
  internal_networks: [127.0.0.10/32]
accepted_domains:
  - domain: victim.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
limits:
  max_message_size: {max_size}
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [antispam]
antispam:
  author_check: {mode}
  actions:
    dmarc_reject: {dmarc_reject}
"""

ZONE = """
legitimate.com. 60 IN TXT "v=spf1 -all"
_dmarc.legitimate.com. 60 IN TXT "v=DMARC1; p=reject"
legitimate.com. 60 IN A 192.0.2.1
"""


def _b(text: str) -> bytes:
    return text.encode("latin-1")


def _attacker_names() -> set[str]:
    """Every name below attack.com a case could make a receiver ask for (the attacker's wildcard, spelled out)."""
    names = {"attack.com"}
    for case in CASES:
        for value in (case["helo"], case["mailfrom"]):
            names.add(value.strip("<>").rpartition("@")[2])
        if case["dkim"]:
            selector, domain = case["dkim"]["s"], case["dkim"]["d"]
            names.add(f"{selector}._domainkey.{domain}")
            names.add(f"{selector.split(chr(0))[0].rstrip('.')}")  # a C resolver stops at the NUL
    return {n for n in names if n.endswith("attack.com") and "\x00" not in n}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        for name in _attacker_names():
            label = DNSLabel([part.encode("latin-1") for part in name.split(".")])
            record = KEY.record if "._domainkey." in name else "v=spf1 ip4:127.0.0.1 -all"
            chunks = [record[i:i + 250] for i in range(0, len(record), 250)]
            server.rrs.append(RR(label, QTYPE.TXT, ttl=60, rdata=TXT(chunks)))
        yield server


def message(case: dict[str, Any], tag: str) -> bytes:
    """The case's message as espoofer puts it together (the DKIM-Signature made with ``KEY``)."""
    parts = {k: _b(v.replace("${date}", formatdate(usegmt=True).replace("GMT", "+0000")).replace("${id}", tag))
             for k, v in case["data"].items()}
    signature = b""
    if case["dkim"]:
        para = {k: _b(v) for k, v in case["dkim"].items()}
        signed = para["sign_header"] + b"\r\n\r\n" + parts["body"]
        signature = dkim.sign(signed, para["s"], para["d"], KEY.private_pem, canonicalize=(b"simple", b"relaxed"),
                              include_headers=[b"from"]).strip() + b"\r\n"
    return (parts["from_header"] + signature + parts["to_header"] + parts["subject_header"] + parts["other_headers"]
            + parts["body"])


@dataclass
class Sent:
    case: str
    tag: str
    replies: list[str]

    @property
    def accepted(self) -> bool:
        return bool(self.replies) and self.replies[-1].startswith("250")


def send(port: int, case: dict[str, Any], tag: str) -> Sent:
    """The SMTP dialogue espoofer has (EHLO, MAIL, RCPT, DATA), stopping at the first refusal."""
    replies: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.settimeout(30)
        assert reply(sock).startswith("220")
        for line in (b"ehlo " + _b(case["helo"]), b"mail from: " + _b(case["mailfrom"]),
                     b"rcpt to: " + _b(case["rcptto"]), b"data"):
            answer = command(sock, line)
            replies.append(answer)
            if not answer.startswith(("250", "354")):
                return Sent(case["id"], tag, replies)
        data = re.sub(rb"(?m)^\.", b"..", message(case, tag))
        sock.sendall(data + b"\r\n.\r\n")
        replies.append(reply(sock))
        command(sock, b"quit")
    return Sent(case["id"], tag, replies)


def _tag(mode: str, index: int) -> str:
    return f"{mode[0].upper()}X{index:04d}"


def _msgid(tag: str) -> str:
    return f"1538085644648.096e3d4e-bc38-4027-b57e-{tag}@message-ids.attack.com".lower()


def outcome(sent: Sent, *, timeout: float = 30) -> dict[str, Any]:
    """What became of an accepted message: the antispam stage's event and routing's decision."""
    qid = records.wait_id("msgid", _msgid(sent.tag), timeout)
    final = ("DELIVER", "FAIL", "QUARANTINE", "DELETE", "REDIRECT", "DEADLETTER")
    evs = records.wait_until(lambda: records.events(qid), lambda es: any(e["event"] in final for e in es),
                             f"the routing decision on {sent.case}", timeout)
    spam = next((e for e in evs if e["service"] == "antispam" and e["event"] in ("SPAM", "AGENTINFO", "ERROR")), None)
    decision = next(e for e in evs if e["event"] in final)
    return {"qid": qid, "antispam": spam, "decision": decision, "events": [e["event"] for e in evs]}


def _policy(mode: str, dmarc_reject: str) -> str:
    return textwrap.dedent(POLICY).replace("{mode}", mode).replace("{dmarc_reject}", dmarc_reject)


BAD_SYNTAX = "501 5.1.7 Bad sender address syntax"
NOT_COMPLIANT = "550 5.7.512 Message must be RFC 5322 section 3.6.2 compliant"
EXPECTED_AT_SMTP = {  # case -> (the reply under author_check reject, under evaluate); the rest are accepted
    # A2, A5-A6: MAIL FROM that is not an address (RFC 5321 4.1.2): refused before any SPF look-up
    "server_a2": (BAD_SYNTAX,) * 2,
    "server_a5": (BAD_SYNTAX,) * 2,
    "server_a6": (BAD_SYNTAX,) * 2,
    # A8-A19: the From shapes; evaluate accepts those whose every author domain can be judged
    "server_a8": (f"{NOT_COMPLIANT} (2 From fields)", None),
    "server_a9": (f"{NOT_COMPLIANT} (ambiguous From field)",) * 2,
    "server_a10": (f"{NOT_COMPLIANT} (2 From fields)", None),
    "server_a11": (f"{NOT_COMPLIANT} (ambiguous From field)",) * 2,
    "server_a12": (f"{NOT_COMPLIANT} (ambiguous From field)",) * 2,
    "server_a13": (f"{NOT_COMPLIANT} (ambiguous From field)",) * 2,
    "server_a14": (f"{NOT_COMPLIANT} (From names 2 mailboxes)", None),
    "server_a15": (f"{NOT_COMPLIANT} (From does not parse)", None),
    "server_a17": (f"{NOT_COMPLIANT} (From does not parse)", None),
    "server_a18": (f"{NOT_COMPLIANT} (From names 2 mailboxes)", None),
    "server_a19": (f"{NOT_COMPLIANT} (From does not parse)", None),
}
DKIM_RESULT = {"server_a3": "permerror", "server_a4": "permerror"}
"""A3 (NUL in s=) and A4 (a quote in d=): names no verifier may look up, so no pass for anyone."""


def _naive(header: str, prop: str) -> list[tuple[str, str]]:
    """(result, value) of every resinfo naming ``prop``, read as a careless reader does: comments dropped, the
    value up to the first character that is not a letter, digit, dot or hyphen (a quote, a parenthesis)."""
    text = re.sub(r"\((?:[^()\\]|\\.)*\)", "", header.replace("\r\n", ""))
    out = []
    for resinfo in text.split(";")[1:]:
        method = re.match(r"\s*(\w+)=(\w+)", resinfo)
        value = re.search(re.escape(prop) + r"=\"?([A-Za-z0-9.-]*)", resinfo)
        if method and value:
            out.append((method.group(2), value.group(1).lower()))
    return out


def _ours(data: bytes) -> str:
    """The Authentication-Results field the gateway wrote (the first of the header, unfolded)."""
    match = re.search(rb"(?mi)^Authentication-Results: gw\.victim\.com;.*?\r\n(?![ \t])", data, re.S)
    assert match, data[:2000]
    return match.group(0).decode("ascii")


def _judge(case: str, mode: str, out: dict[str, Any]) -> str:
    """Assert what the gateway made of an accepted case; the table's outcome."""
    assert out["antispam"] is not None, (case, out["events"])
    data = out["antispam"]["data"]
    auth = data["authentication"]
    assert (data["dmarc"]["result"], data["dmarc"]["domain"], data["dmarc"]["policy"]) == (
        "fail", "legitimate.com", "reject"), (case, data)
    assert "legitimate.com" in data["author"]["domains"], (case, data["author"])
    assert auth["compauth"]["result"] == "fail" and data["forged"], (case, auth)
    assert not (auth["spf"]["result"] == "pass" and auth["spf"]["domain"].endswith("legitimate.com")), (case, auth)
    for dkim_result in auth["dkim"]:
        assert dkim_result["result"] != "pass" or not dkim_result["domain"].endswith("legitimate.com"), (case, auth)
    if case in DKIM_RESULT:
        assert [d["result"] for d in auth["dkim"]] == [DKIM_RESULT[case]], (case, auth)
    decision = out["decision"]
    if mode == "reject":
        assert decision["event"] == "FAIL" and "5.7.509" in decision["detail"], (case, decision)
        return "DMARC fail, p=reject: rejected 5.7.509"
    assert decision["event"] == "QUARANTINE", (case, decision)
    header = _ours(records.held_bytes(out["qid"]) or b"")
    assert "dmarc=pass" not in header and "compauth=pass" not in header, (case, header)
    assert ("fail", "legitimate.com") in _naive(header, "header.from"), (case, header)
    for prop in ("header.d", "smtp.mailfrom", "smtp.helo"):
        assert ("pass", "legitimate.com") not in _naive(header, prop), (case, prop, header)
    return "DMARC fail, p=reject: quarantined"


@pytest.mark.parametrize("mode,dmarc_reject", [("reject", "reject"), ("evaluate", "quarantine")])
def test_espoofer_server_cases(gateway_factory, sink: SmtpSink, dns: DnsServer, mode: str, dmarc_reject: str) -> None:
    """Every server case, in one SMTP session each; then what became of each, as a table (printed)."""
    gateway = gateway_factory(_policy(mode, dmarc_reject), services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port)
    sent = [send(gateway.smtp_port, case, _tag(mode, i)) for i, case in enumerate(CASES)]
    table: dict[str, str] = {}
    for s in sent:
        expected = EXPECTED_AT_SMTP.get(s.case, (None, None))[0 if mode == "reject" else 1]
        if expected is not None:
            assert not s.accepted and s.replies[-1].startswith(expected), (s.case, s.replies)
            table[s.case] = s.replies[-1]
            continue
        assert s.accepted, (s.case, s.replies)
        table[s.case] = _judge(s.case, mode, outcome(s))
    time.sleep(0.5)
    print(f"\nauthor_check: {mode}", *(f"{k}: {v}" for k, v in table.items()), sep="\n  ")
    assert sink.messages == []
    assert len(table) == len(CASES) == 19
