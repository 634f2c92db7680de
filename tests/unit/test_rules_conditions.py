"""Each mail-flow rule condition, alone: what matches and what does not."""

from __future__ import annotations

import base64
import zipfile

import pytest

from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import Policy, RuleConditions, parse_policy
from mailmoat_routing.rules import CONDITIONS
from mailmoat_routing.rules.message import Facts
from tests.support.attachments import message, mz_executable, zip_of

POLICY = parse_policy("""
organization: {internal_networks: [192.0.2.0/24]}
accepted_domains: [{domain: example.com}]
""")
PLAIN = b"From: a@sender.org\r\nTo: alice@example.com\r\nSubject: Quarterly report\r\n\r\nHello there.\r\n"


def facts(data: bytes = PLAIN, policy: Policy = POLICY, scl: int | None = None, **envelope: object) -> Facts:
    env = Envelope(**{"mail_from": "a@sender.org", "rcpt_to": ["alice@example.com"], **envelope})
    return Facts(env, data, policy, list(env.rcpt_to), scl)


def check(name: str, value: object, f: Facts) -> bool:
    return CONDITIONS[name](f, RuleConditions.model_validate({name: value}))


def test_every_condition_field_has_a_predicate() -> None:
    assert list(CONDITIONS) == list(RuleConditions.model_fields)


@pytest.mark.parametrize(("values", "sender", "expected"), [
    (["a@sender.org"], "a@sender.org", True),
    (["A@Sender.ORG"], "a@sender.org", True),
    (["b@sender.org", "a@sender.org"], "a@sender.org", True),
    (["*@sender.org"], "x@sender.org", True),
    (["ceo*@sender.org"], "ceo.office@sender.org", True),
    (["b@sender.org"], "a@sender.org", False),
    (["*@sender.org"], "", False),
])
def test_sender_address(values: list[str], sender: str, expected: bool) -> None:
    assert check("sender_address", values, facts(mail_from=sender)) is expected


@pytest.mark.parametrize(("values", "sender", "expected"), [
    (["sender.org"], "a@sender.org", True),
    (["sender.org"], "a@mail.sender.org", False),
    (["*.sender.org"], "a@mail.sender.org", True),
    (["*.sender.org"], "a@sender.org", False),
    (["other.org", "sender.org"], "a@SENDER.org", True),
])
def test_sender_domain(values: list[str], sender: str, expected: bool) -> None:
    assert check("sender_domain", values, facts(mail_from=sender)) is expected


def test_recipient_address_and_domain_match_any_recipient() -> None:
    f = facts(rcpt_to=["bob@partner.org", "alice@example.com"])
    assert check("recipient_address", ["alice@example.com"], f)
    assert check("recipient_address", ["*@partner.org"], f)
    assert not check("recipient_address", ["carol@example.com"], f)
    assert check("recipient_domain", ["partner.org"], f)
    assert not check("recipient_domain", ["other.org"], f)


def test_sender_inside_needs_an_accepted_domain_and_our_own_servers() -> None:
    ours = facts(mail_from="bob@example.com", client_ip="192.0.2.9", direction="outbound")
    forged = facts(mail_from="bob@example.com", client_ip="203.0.113.5")
    outside = facts(mail_from="a@sender.org", client_ip="203.0.113.5")
    assert check("sender_location", "inside", ours) and not check("sender_location", "outside", ours)
    assert check("sender_location", "outside", forged)
    assert check("sender_location", "outside", outside)
    assert check("sender_location", "outside", facts(mail_from=""))


def test_header_contains_words_in_any_field_of_that_name_decoded() -> None:
    data = (b"X-Tag: first\r\nX-Tag: =?utf-8?b?" + base64.b64encode(b"Geheim vertraulich") + b"?=\r\n"
            b"Subject: hi\r\n\r\nbody\r\n")
    assert check("header_contains", {"header": "x-tag", "words": ["VERTRAULICH"]}, facts(data))
    assert check("header_contains", {"header": "X-Tag", "words": ["nothing", "first"]}, facts(data))
    assert not check("header_contains", {"header": "X-Tag", "words": ["vertrau"]}, facts(data))  # whole words
    assert not check("header_contains", {"header": "X-Other", "words": ["first"]}, facts(data))


def test_header_matches_a_pattern() -> None:
    data = b"X-Partner-Route: lane-42\r\nSubject: hi\r\n\r\nbody\r\n"
    assert check("header_matches", {"header": "X-Partner-Route", "patterns": [r"^lane-\d+$"]}, facts(data))
    assert not check("header_matches", {"header": "X-Partner-Route", "patterns": [r"^lane-\d$"]}, facts(data))


def test_subject_contains_and_matches() -> None:
    assert check("subject_contains", ["quarterly report"], facts())
    assert not check("subject_contains", ["quarter"], facts())
    assert check("subject_matches", [r"report$"], facts())
    encoded = b"Subject: =?iso-8859-1?q?R=E9sum=E9_attached?=\r\n\r\nx\r\n"
    assert check("subject_contains", ["résumé"], facts(encoded))


def _single(cte: bytes, charset: bytes, body: bytes, subtype: bytes = b"plain") -> bytes:
    return (b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/" + subtype + b"; charset=" + charset
            + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + body + b"\r\n")


def test_body_contains_decodes_base64_quoted_printable_and_charsets() -> None:
    text = "Bitte überweisen Sie den Betrag".encode("iso-8859-1")
    assert check("body_contains", ["überweisen"], facts(_single(b"base64", b"iso-8859-1", base64.b64encode(text))))
    qp = b"Bitte =C3=BCberweisen Sie den Be=\r\ntrag"
    assert check("body_contains", ["betrag"], facts(_single(b"quoted-printable", b"utf-8", qp)))
    assert check("body_contains", ["überweisen"], facts(_single(b"quoted-printable", b"utf-8", qp)))
    html = _single(b"7bit", b"us-ascii", b"<html><body><p>wire&nbsp;<b>transfer</b> now</p></body></html>", b"html")
    assert check("body_contains", ["transfer now"], facts(html))
    assert not check("body_contains", ["body"], facts(html))  # tags are not text
    hidden = _single(b"7bit", b"us-ascii", b"<title>wire</title><!-- a > wire -->con<b>fiden</b><!-- -->tial", b"html")
    assert check("body_contains", ["confidential"], facts(hidden))  # one word as shown, whatever splits it
    assert not check("body_contains", ["wire"], facts(hidden))  # the title and comments are not shown
    assert check("subject_or_body_contains", ["hello"], facts())
    assert check("subject_or_body_contains", ["quarterly"], facts())
    assert not check("body_contains", ["quarterly"], facts())


def test_body_does_not_include_attachments() -> None:
    data = message([("notes.txt", "text/plain", b"secret project", "7bit")])
    assert not check("body_contains", ["secret"], facts(data))
    assert check("body_contains", ["hello"], facts(data))


EXE_AS_TXT = message([("invoice.txt", "text/plain", mz_executable(), "base64")])


def test_attachment_name_extension_and_true_type() -> None:
    f = facts(EXE_AS_TXT)
    assert check("attachment_name", ["invoice.*"], f)
    assert check("attachment_name", ["INVOICE.TXT"], f)
    assert not check("attachment_name", ["*.exe"], f)
    assert check("attachment_extension", [".txt"], f)
    assert not check("attachment_extension", ["exe"], f)
    assert check("attachment_type", ["exe"], f)  # the content, not the name
    assert not check("attachment_type", ["exe"], facts(message([("a.exe", "text/plain", b"plain text", "7bit")])))
    docm = zip_of([("[Content_Types].xml", b"<x/>"), ("word/document.xml", b"<x/>"), ("word/vbaProject.bin", b"x")])
    assert check("attachment_type", ["docm"], facts(message([("report.zip", "application/zip", docm, "base64")])))


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_attachments_of_a_message_attached_transfer_encoded(encoding: str) -> None:
    """RFC 2046 forbids encoding a message/rfc822 part; the conditions still read the files inside it."""
    data = message([("fwd.eml", "message/rfc822", EXE_AS_TXT, encoding)], boundary="outer")
    assert check("attachment_name", ["invoice.txt"], facts(data))
    assert check("attachment_type", ["exe"], facts(data))


def test_subject_with_an_encoded_word_in_a_charset_the_library_refuses() -> None:
    """A NUL in the charset name (read as U+FFFD) made the library raise CharsetError: routing failed."""
    data = b"From: a@example.org\r\nSubject: =?ut\x00f-8?q?Gr=C3=BC=C3=9Fe?= deal\r\n\r\nx\r\n"
    assert check("subject_contains", ["deal"], facts(data))


def test_a_message_that_is_a_single_named_file_is_an_attachment() -> None:
    data = (b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(mz_executable()) + b"\r\n")
    assert check("attachment_type", ["exe"], facts(data))
    assert check("attachment_name", ["a.bin"], facts(data))
    assert not check("attachment_size_over", 0, facts())  # a plain text message has none


def test_attachment_size_over() -> None:
    data = message([("big.bin", "application/octet-stream", b"x" * 5000, "base64")])
    assert check("attachment_size_over", 4999, facts(data))
    assert not check("attachment_size_over", 5000, facts(data))
    assert not check("attachment_size_over", 0, facts())


def _encrypted_zip() -> bytes:
    data = bytearray(zip_of([("secret.txt", b"hidden")], compression=zipfile.ZIP_STORED))
    data[data.find(b"PK\x03\x04") + 6] |= 1
    data[data.find(b"PK\x01\x02") + 8] |= 1
    return bytes(data)


def test_attachment_password_protected_from_zip_flags_or_the_antivirus_verdict() -> None:
    locked = facts(message([("x.zip", "application/zip", _encrypted_zip(), "base64")]))
    open_zip = facts(message([("x.zip", "application/zip", zip_of([("a.txt", b"a")]), "base64")]))
    assert check("attachment_password_protected", True, locked)
    assert not check("attachment_password_protected", True, open_zip)
    assert check("attachment_password_protected", False, open_zip)
    av = Verdict(stage="antivirus", result="clean", detail={"encrypted_allowed": ["part 1.2: x.zip/a"]})
    assert check("attachment_password_protected", True, facts(verdicts={"antivirus": av}))
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100 + "EncryptedPackage".encode("utf-16-le")
    assert check("attachment_password_protected", True, facts(message([("a.docx", "application/x", ole, "base64")])))


def test_message_size_over() -> None:
    assert check("message_size_over", len(PLAIN) - 1, facts())
    assert not check("message_size_over", len(PLAIN), facts())


def test_sender_ip_in_ranges() -> None:
    assert check("sender_ip", ["198.51.100.0/24", "2001:db8::/32"], facts(client_ip="198.51.100.7"))
    assert check("sender_ip", ["2001:db8::/32"], facts(client_ip="2001:db8::5"))
    assert check("sender_ip", ["198.51.100.7"], facts(client_ip="::ffff:198.51.100.7"))
    assert not check("sender_ip", ["198.51.100.0/24"], facts(client_ip="203.0.113.1"))


def test_scl_and_bcl_at_least_from_the_verdicts() -> None:
    spam = Verdict(stage="antispam", result="spam", detail={"scl": 5, "bcl": 7, "category": "spam"})
    f = facts(verdicts={"antispam": spam})
    assert check("scl_at_least", 5, f) and not check("scl_at_least", 6, f)
    assert check("bcl_at_least", 7, f) and not check("bcl_at_least", 8, f)
    assert not check("scl_at_least", 0, facts())  # no verdict: no SCL
    allow = Verdict(stage="connection_filter", result="allow", detail={"scl": -1})
    assert check("scl_at_least", -1, facts(verdicts={"connection_filter": allow}))
    assert not check("scl_at_least", 0, facts(verdicts={"connection_filter": allow}))
    assert check("scl_at_least", 9, facts(verdicts={"antispam": spam}, scl=9))  # set by an earlier rule


def test_verdict_names() -> None:
    av = Verdict(stage="antivirus", result="blocked-type", detail={})
    spam = Verdict(stage="antispam", result="phish", detail={"scl": 9, "categories": ["phish", "spoof"],
                                                              "dmarc": {"result": "fail", "policy": "reject"}})
    conn = Verdict(stage="connection_filter", result="listed", detail={"reason": "dnsbl"})
    f = facts(verdicts={"antivirus": av, "antispam": spam, "connection_filter": conn})
    for name in ("malware", "blocked-type", "phish", "spoof", "dmarc_reject", "dnsbl"):
        assert check("verdict", [name], f), name
    assert not check("verdict", ["spam", "bulk", "hcphish"], f)
    assert not check("verdict", ["malware"], facts(verdicts={"antivirus": Verdict(stage="antivirus", result="clean")}))


def test_inbound_connector() -> None:
    assert check("inbound_connector", ["Partner-A"], facts(inbound_connector="partner-a"))
    assert not check("inbound_connector", ["partner-a"], facts(inbound_connector="partner-b"))
    assert not check("inbound_connector", ["partner-a"], facts())
