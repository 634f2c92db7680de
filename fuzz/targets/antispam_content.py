"""The antispam stage's content analysis on arbitrary message bytes, without DNS, Redis or engines:
parsing, GTUBE, content and header rules, bulk level, advanced spam filter checks, Bayes tokens, the
verdict, the report headers it prepends and the envelope frame that carries it."""

from __future__ import annotations

from mailmoat_antispam import asf, bayes
from mailmoat_antispam.check import content_findings
from mailmoat_antispam.content import parse
from mailmoat_antispam.score import allowance, decide, headers
from mailmoat_platform.bus import decode, encode
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import Policy

POLICY = Policy.model_validate({
    "antispam": {
        "advanced": {check: "on" for check in (
            "empty_message", "javascript", "form_tags", "frame_tags", "object_tags", "embed_tags", "web_bugs",
            "image_links_remote", "numeric_ip_url", "url_other_port", "biz_info_url", "sensitive_words",
            "spf_hard_fail", "ndr_backscatter")},
        "rules": [
            {"name": "SUBJ_WIN", "where": "subject", "phrase": "you have won", "score": 2},
            {"name": "BODY_PRIZE", "where": "body", "regex": r"claim\s+your\s+prize", "score": 2},
            {"name": "URL_SHORT", "where": "url", "regex": r"bit\.ly", "score": 1},
            {"name": "HDR_MAILER", "where": "header:X-Mailer", "phrase": "mass mailer", "score": 1},
        ],
        "bulk_senders": ["news.example.org"],
    },
})


def test_one_input(data: bytes) -> None:
    envelope = Envelope(mail_from="sender@news.example.org", rcpt_to=["r@example.com"], client_ip="192.0.2.7",
                        helo="mx.example.org", itinerary=["antispam", "routing"])
    envelope.add_verdict(Verdict(stage="connection_filter", result="pass", detail={"scl": 0}))
    content = parse(data)
    allowed = allowance(envelope, content, POLICY)
    findings = content_findings(envelope, data, content, POLICY)
    findings.asf = asf.advanced_checks(POLICY.antispam.advanced, content, {"spf": "fail", "mail_from": ""})
    bayes.tokens(content)
    verdict = decide(findings, POLICY.antispam, allowed)
    envelope.add_verdict(verdict)
    prepended = headers(verdict, envelope) + asf.custom_spam_headers(findings.asf)
    assert prepended.isascii() and prepended.endswith(b"\r\n"), prepended
    assert all(len(line) <= 998 for line in prepended.split(b"\r\n")), prepended
    out = prepended + asf.strip_custom_spam(data)
    assert decode(encode(envelope, out))[1] == out


def seeds() -> list[bytes]:
    from tests.support.hostile import cases

    gtube = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    html = (b"Subject: you have won\r\nX-Mailer: mass mailer 1.0\r\nContent-Type: text/html\r\n\r\n"
            b"<html><script>x()</script><form action=http://192.0.2.1:8080/f><a href='https://bit.ly/x'>claim "
            b"your prize</a><img src=http://t.example/p.gif width=1 height=1><iframe></iframe></html>\r\n")
    return [case.data for case in cases()] + [html, b"Subject: test\r\n\r\n" + gtube + b"\r\n", b"", b"\r\n"]
