"""Antispam pure logic: content parsing and URLs, GTUBE, policy rules, heuristics, BCL, advanced spam
filter, SCL mapping, allow/block lists, report headers."""

from __future__ import annotations

import base64
import quopri

import pytest

from mailmoat_antispam import asf, bulk, rules, score, uribl
from mailmoat_antispam.check import bayes_hits, content_findings
from mailmoat_antispam.content import extract_urls, parse
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import parse_policy

HEAD = b"From: Ann <ann@sender.test>\r\nTo: bob@example.com\r\nSubject: Hello\r\n" \
       b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@sender.test>\r\n"


def envelope(**kw) -> Envelope:
    return Envelope(**{"client_ip": "192.0.2.7", "helo": "mx.sender.test", "mail_from": "ann@sender.test",
                       "rcpt_to": ["bob@example.com"], **kw})


def verdict_of(data: bytes, policy_text: str = "{}", env: Envelope | None = None) -> Verdict:
    policy = parse_policy(policy_text)
    env = env or envelope()
    content = parse(data)
    findings = content_findings(env, data, content, policy)
    findings.asf = asf.advanced_checks(policy.antispam.advanced, content, {"spf": "", "mail_from": env.mail_from})
    return score.decide(findings, policy.antispam, score.allowance(env, content, policy))


def test_gtube_is_high_confidence_spam() -> None:
    v = verdict_of(HEAD + b"\r\n" + rules.GTUBE.encode() + b"\r\n")
    assert v.result == "hcspam" and v.detail["scl"] == 9 and "GTUBE" in v.detail["rules"]


def test_gtube_inside_a_base64_part_is_found() -> None:
    body = base64.encodebytes(b"hi " + rules.GTUBE.encode()).replace(b"\n", b"\r\n")
    msg = HEAD + b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body
    assert verdict_of(msg).detail["scl"] == 9


def test_a_clean_message_is_scl_0_or_1() -> None:
    v = verdict_of(HEAD + b"\r\nLunch tomorrow?\r\n")
    assert v.result == "clean" and v.detail["scl"] in (0, 1) and v.detail["category"] is None


def test_urls_from_text_and_html_with_qp_and_charset() -> None:
    html = '<p>Caf\u00e9 <a href="http://shop.example.biz/x?a=1&amp;b=2">buy</a> <img src=\'https://img.test/p.gif\'>'
    qp = quopri.encodestring(html.encode("iso-8859-1"))
    msg = (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: text/plain\r\n\r\nsee www.plain.test/page, and https://a.test:8080/x.\r\n--B\r\n"
           b"Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           + qp + b"\r\n--B--\r\n")
    content = parse(msg)
    assert content.urls == ["http://shop.example.biz/x?a=1&b=2", "https://img.test/p.gif", "http://www.plain.test/page",
                            "https://a.test:8080/x"]
    assert "Caf\u00e9" in content.text


def test_extract_urls_ignores_mailto_and_trailing_punctuation() -> None:
    assert extract_urls("write mailto:x@y.test or visit (http://ok.test/a).") == ["http://ok.test/a"]


def test_policy_rules_by_where_regex_and_phrase() -> None:
    policy = """
antispam:
  rules:
    - {name: SUBJ_FREE, where: subject, phrase: "free money", score: 3}
    - {name: BODY_WIRE, where: body, regex: "wire\\\\s+transfer", score: 2.5}
    - {name: URL_BAD, where: url, regex: "bad\\\\.test", score: 1}
    - {name: HDR_MAILER, where: "header:X-Mailer", phrase: "bulkmail pro", score: 1}
    - {name: NOT_HIT, where: body, phrase: "nothing here", score: 9}
"""
    msg = (b"From: a@s.test\r\nTo: b@example.com\r\nSubject: FREE   money now\r\nX-Mailer: BulkMail Pro 2\r\n"
           b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@s.test>\r\n\r\n"
           b"Send a Wire Transfer via http://bad.test/ today\r\n")
    v = verdict_of(msg, policy)
    assert v.detail["rules"][:4] == ["SUBJ_FREE", "BODY_WIRE", "URL_BAD", "HDR_MAILER"]
    assert v.detail["score"] == 7.5 and v.detail["scl"] == 6 and v.result == "spam"


def test_url_rules_see_each_url_as_written_and_as_the_browser_writes_it() -> None:
    policy = """
antispam:
  rules:
    - {name: SHORTENER, where: url, regex: "//(bit\\\\.ly|t\\\\.co)/", score: 1}
    - {name: WRITTEN, where: url, regex: "%2e", score: 1}
"""
    for href in ("http:\\\\Bit.ly\\x", "h&#9;ttp://T.CO/a", "//bit.ly/x"):
        msg = HEAD + b"Content-Type: text/html\r\n\r\n" + f'<a href="{href}">go</a>'.encode() + b"\r\n"
        assert "SHORTENER" in verdict_of(msg, policy).detail["rules"], href
    msg = HEAD + b"Content-Type: text/html\r\n\r\n<a href='http://bit%2ely/'>go</a>\r\n"
    assert "WRITTEN" in verdict_of(msg, policy).detail["rules"]


@pytest.mark.parametrize("bad", [
    "{name: x, where: body}", "{name: x, where: foo, phrase: a}", "{name: 'a b', phrase: a}",
    "{name: x, regex: '(', score: 1}", "{name: x, phrase: a, regex: b}",
])
def test_bad_rules_are_refused(bad: str) -> None:
    from mailmoat_policy import PolicyError
    with pytest.raises(PolicyError):
        parse_policy(f"antispam: {{rules: [{bad}]}}")


def test_malformed_headers_and_forged_received() -> None:
    msg = (b"From: nobody\r\nSubject: a\r\nSubject: b\r\nDate: yesterday\r\n"
           b"Received: from evil (evil [300.1.2.3]) by mx.test; Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nx\r\n")
    names = {h.name for h in rules.header_heuristics(parse(msg))}
    assert {"MALFORMED_FROM", "DUPLICATE_SUBJECT", "MALFORMED_DATE", "MISSING_MESSAGE_ID",
            "RECEIVED_FORGED_IP"} <= names


def test_bcl_from_list_headers_and_bulk_senders() -> None:
    news = HEAD + b"List-Unsubscribe: <https://n.test/u>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" \
                  b"List-Id: <news.n.test>\r\nPrecedence: bulk\r\nX-Mailer: MailChimp\r\n\r\nNews\r\n"
    level, signals = bulk.bulk_level(parse(news), "ann@sender.test", [], 7)
    assert level == 8 and "LIST_UNSUBSCRIBE" in signals and "BULK_MAILER" in signals
    assert bulk.bulk_level(parse(HEAD + b"\r\nhi\r\n"), "ann@sender.test", [], 7)[0] == 0
    assert bulk.bulk_level(parse(HEAD + b"\r\nhi\r\n"), "x@mail.sender.test", ["sender.test"], 6)[0] == 6
    v = verdict_of(news)
    assert v.result == "bulk" and v.detail["bcl"] == 8 and v.detail["scl"] == 6
    v = verdict_of(news, "antispam: {bulk_threshold: 9}")
    assert v.result == "clean" and v.detail["bcl"] == 8


@pytest.mark.parametrize(("value", "scl"), [(0, 0), (2.4, 0), (2.5, 1), (5, 5), (7.5, 6), (10, 7), (15, 8), (20, 9)])
def test_scl_mapping(value: float, scl: int) -> None:
    assert score.scl_for(value, parse_policy("{}").antispam) == scl


def test_allow_lists_give_scl_minus_1_and_blocked_scl_9() -> None:
    msg = HEAD + b"\r\n" + rules.GTUBE.encode() + b"\r\n"
    cf = Verdict(stage="connection_filter", result="allow", detail={"scl": -1})
    env = envelope()
    env.add_verdict(cf)
    v = verdict_of(msg, env=env)
    assert v.result == "allowed" and v.detail["scl"] == -1 and v.detail["sfv"] == "SKN"
    v = verdict_of(msg, "antispam: {allowed_domains: [sender.test]}")
    assert v.detail["scl"] == -1 and v.detail["sfv"] == "SKA"
    v = verdict_of(HEAD + b"\r\nhello\r\n", "antispam: {blocked_senders: [ann@sender.test]}")
    assert v.detail["scl"] == 9 and v.detail["sfv"] == "SKB" and v.result == "hcspam"
    both = "antispam: {blocked_domains: [sender.test], allowed_senders: [ann@sender.test]}"
    v = verdict_of(HEAD + b"\r\nhello\r\n", both)
    assert v.detail["scl"] == -1


def test_partner_connector_with_allow_list_skips_filtering() -> None:
    policy = """
connectors:
  inbound:
    - {name: fab, sender_ips: [192.0.2.0/24], allow_list: true}
"""
    v = verdict_of(HEAD + b"\r\n" + rules.GTUBE.encode() + b"\r\n", policy, envelope(inbound_connector="fab"))
    assert v.detail["scl"] == -1


def test_dnsbl_facts_add_score() -> None:
    env = envelope()
    env.add_verdict(Verdict(stage="connection_filter", result="listed", detail={"dnsbl_score": 4}))
    v = verdict_of(HEAD + b"\r\nhello\r\n", env=env)
    assert "DNSBL" in v.detail["rules"] and v.detail["scl"] == 5


def test_precedence_of_categories() -> None:
    assert score.strongest(["bulk", "spam", "spoof", "hcspam"]) == "hcspam"
    assert score.strongest(["bulk", "spoof"]) == "spoof"
    assert score.strongest([]) is None


def test_advanced_spam_filter_on_and_test() -> None:
    html = (b"<html><body><script>x()</script><form action=\"http://f.test/\"></form><iframe src=x></iframe>"
            b"<img width=1 height=1 src=\"http://t.test/b.gif\"><a href=\"http://10.0.0.1:8080/\">ip</a>"
            b"<a href=\"http://s.info/\">i</a>cheap viagra</body></html>")
    msg = HEAD + b"Content-Type: text/html\r\n\r\n" + html + b"\r\n"
    checks = ["javascript", "form_tags", "frame_tags", "web_bugs", "image_links_remote", "numeric_ip_url",
              "url_other_port", "biz_info_url", "sensitive_words"]
    on = verdict_of(msg, "antispam: {advanced: {" + ", ".join(f"{c}: on" for c in checks) + "}}")
    assert set(on.detail["asf"]) == set(checks) and on.detail["scl"] == 9
    test_mode = "antispam: {advanced: {" + ", ".join(f"{c}: test" for c in checks) + "}}"
    v = verdict_of(msg, test_mode)
    assert v.detail["scl"] < 5 and not any(r.startswith("ASF_") for r in v.detail["rules"])
    v = verdict_of(msg, "antispam: {advanced: {numeric_ip_url: on, biz_info_url: on}}")
    assert v.detail["score"] == 8 and v.detail["scl"] == 6 and "ASF_NUMERIC_IP_URL" in v.detail["rules"]
    hits = asf.advanced_checks(parse_policy(test_mode).antispam.advanced, parse(msg), {})
    assert asf.custom_spam_headers(hits).count(b"X-CustomSpam: ") == len(checks)
    assert b"X-CustomSpam: Web bug\r\n" in asf.custom_spam_headers(hits)


def test_asf_empty_message_spf_hard_fail_and_backscatter() -> None:
    settings = parse_policy("antispam: {advanced: {empty_message: on, spf_hard_fail: on, ndr_backscatter: test}}")
    ndr = (b"From: MAILER-DAEMON@x.test\r\nSubject: Undeliverable: hi\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=Z\r\n\r\n--Z--\r\n")
    hits = asf.advanced_checks(settings.antispam.advanced, parse(ndr), {"spf": "fail", "mail_from": ""})
    assert {(h.check, h.mode) for h in hits} == {("spf_hard_fail", "on"), ("ndr_backscatter", "test")}
    hits = asf.advanced_checks(settings.antispam.advanced, parse(HEAD + b"\r\n \r\n"), {"mail_from": "a@b.test"})
    assert [h.check for h in hits] == ["empty_message"]


def test_bayes_hits_only_when_trained() -> None:
    settings = parse_policy("{}").antispam.bayes
    assert bayes_hits(None, settings) == []
    assert bayes_hits(0.995, settings)[0].name == "BAYES_99"
    assert bayes_hits(0.95, settings)[0].score == 5.0
    assert bayes_hits(0.85, settings) == []  # below the a priori spam cutoff (0.90)
    assert bayes_hits(0.001, settings)[0].score == -2.0
    lower = parse_policy("antispam: {bayes: {spam_cutoff: 0.8}}").antispam.bayes
    assert [h.name for h in bayes_hits(0.85, lower)] == ["BAYES_SPAM"]
    assert bayes_hits(0.995, parse_policy("antispam: {bayes: {spam_cutoff: 0.999}}").antispam.bayes) == []


def test_a_calibrated_cutoff_counts_unless_the_policy_sets_one() -> None:
    default = parse_policy("{}").antispam.bayes
    assert [h.name for h in bayes_hits(0.45, default, calibrated=0.4)] == ["BAYES_SPAM"]
    assert bayes_hits(0.95, default, calibrated=0.97) == []
    assert [h.name for h in bayes_hits(0.995, default, calibrated=0.4)] == ["BAYES_99"]
    explicit = parse_policy("antispam: {bayes: {spam_cutoff: 0.9}}").antispam.bayes
    assert bayes_hits(0.45, explicit, calibrated=0.4) == []  # the policy's own cutoff wins


def test_uribl_names_and_answers() -> None:
    urls = ["http://www.shop.example.co.uk/a", "http://x.evil.test/", "http://192.0.2.9/p", "http://x.evil.test/b"]
    assert uribl.lookup_names(urls, 10) == ["example.co.uk", "evil.test", "9.2.0.192"]
    assert uribl.lookup_names(urls, 1) == ["example.co.uk"]
    assert uribl.listed(("127.0.1.2",)) and not uribl.listed(("127.255.255.254",)) and not uribl.listed(())


def test_report_headers_are_folded_ascii_with_the_facts() -> None:
    env = envelope()
    env.add_verdict(Verdict(stage="connection_filter", result="pass",
                            detail={"ptr": {"names": ["mx.sender.test"]}}))
    v = verdict_of(HEAD + b"\r\n" + rules.GTUBE.encode() + b"\r\n", env=env)
    out = score.headers(v, env)
    unfolded = out.replace(b"\r\n\t", b"")
    assert unfolded.startswith(
        b"X-Mailmoat-Antispam-Report: CIP:192.0.2.7;H:mx.sender.test;PTR:mx.sender.test;IPV:NLI;")
    assert out.endswith(b"X-Mailmoat-SCL: 9\r\n")
    assert b"SFV:SPM;SCL:9;BCL:0;CAT:HSPM;" in unfolded and b"RULES:GTUBE" in unfolded
    assert all(len(line) <= 100 for line in out.split(b"\r\n"))


def test_phishing_rules_set_their_category() -> None:
    policy = """
antispam:
  rules:
    - {name: PHISH_LOGIN, where: body, phrase: "verify your password", score: 1, category: phish}
    - {name: PHISH_KIT, where: url, regex: "secure-login[.]", score: 1, category: hcphish}
"""
    v = verdict_of(HEAD + b"\r\nPlease verify your password today.\r\n", policy)
    assert v.result == "phish" and v.detail["categories"] == ["phish"] and v.detail["scl"] == 8
    v = verdict_of(HEAD + b"\r\nverify your password at http://secure-login.bank.test/\r\n", policy)
    assert v.result == "hcphish" and v.detail["categories"] == ["hcphish", "phish"] and v.detail["scl"] == 9


def test_incoming_custom_spam_fields_are_removed_and_nothing_else() -> None:
    msg = b"X-CustomSpam: Web bug\r\nFrom: a@b.test\r\nX-Customspam: folded\r\n\tline\r\nSubject: s\r\n\r\n" \
          b"X-CustomSpam: in the body stays\r\n"
    assert asf.strip_custom_spam(msg) == b"From: a@b.test\r\nSubject: s\r\n\r\nX-CustomSpam: in the body stays\r\n"
    clean = b"From: a@b.test\r\n\r\nbody\r\n"
    assert asf.strip_custom_spam(clean) is clean


@pytest.mark.parametrize("src", ["http:\\\\t.test/b.gif", "h&#9;ttp://t.test/b.gif", "//t.test/b.gif",
                                 "http:/t.test/b.gif", " HTTPS://t.test/b.gif", "http://t.test/b.gif"])
def test_remote_images_and_web_bugs_however_the_link_is_written(src: str) -> None:
    """The image checks read ``src`` as a browser does (``content.link_url``), as the URL checks do."""
    settings = parse_policy("antispam: {advanced: {web_bugs: on, image_links_remote: on}}").antispam.advanced
    for markup, expected in ((f'<img width=1 height=1 src="{src}">', {"web_bugs", "image_links_remote"}),
                             (f"<img src='{src}' width=600>", {"image_links_remote"}),
                             ('<img src="cid:logo@x" width=1>', set()), ('<img src="b.gif" height=0>', set())):
        msg = HEAD + b"Content-Type: text/html\r\n\r\n" + markup.encode() + b"\r\n"
        assert {hit.check for hit in asf.advanced_checks(settings, parse(msg), {})} == expected, markup
