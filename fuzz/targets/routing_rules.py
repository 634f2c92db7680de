"""The routing stage's mail-flow rules on arbitrary message bytes: one policy whose rules read every
part of the message (Subject, body, header fields, attachments, author, envelope, verdicts) and run
every edit there is (set and remove header fields, prepend an ASCII and a non-ASCII Subject prefix,
two disclaimers with text and HTML), all enforced, then ``apply_outcome``.

Nothing may raise. For a message whose lines all end in CRLF (as ingress accepts them), the result
has no bare CR or LF either, no line longer than 998 octets when the input had none, and keeps what
the edits promise: the fields set are there once and as set, the fields removed are gone, the Subject
starts with the last prefix, each part a disclaimer went into still holds its text and now the
disclaimer too, and every other part and the bytes before and after those parts are unchanged."""

from __future__ import annotations

import email.errors
import email.header
import html
from datetime import UTC, datetime

from mailmoat_mail import mimeedit, mimeparts
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import parse_policy
from mailmoat_routing.rules import apply_outcome, evaluate
from mailmoat_routing.rules.edits import default_html
from mailmoat_routing.rules.message import decode_header_value

CRLF = b"\r\n"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SET = {"X-Fuzz-Set": "fuzz value", "X-Fuzz-Label": "vertraulich \u2013 nur f\u00fcr den Empf\u00e4nger, " * 6}
REMOVE = ("X-Fuzz-Remove", "X-Spam-Flag")
PREFIX = "[Extern\u00e9] "
TEXT = "Vertraulich \u2013 nur f\u00fcr den Empf\u00e4nger.\nConfidential: for the addressee only."
HTML = "<p>Vertraulich &ndash; nur f\u00fcr den Empf\u00e4nger.</p>"
TEXT2 = "Sent through the fuzz gateway."
TEXT_YAML = TEXT.replace("\n", "\\n")

POLICY = parse_policy(f"""
connectors:
  outbound:
    - {{name: fuzz-relay, rule_only: true, smart_hosts: ["mx.partner.test"], tls: verify}}
organization:
  internal_networks: [192.0.2.0/24]
rules:
  - name: headers
    priority: 10
    actions:
      set_header: {{X-Fuzz-Set: "{SET['X-Fuzz-Set']}", X-Fuzz-Label: "{SET['X-Fuzz-Label']}"}}
      remove_header: [{', '.join(REMOVE)}]
      prepend_subject: "[EXT] "
  - name: prefix
    priority: 11
    exceptions: {{subject_contains: [intern]}}
    actions: {{prepend_subject: "{PREFIX}"}}
  - name: disclaimer
    priority: 20
    exceptions: {{header_contains: {{header: X-Disclaimer, words: [none, "not wanted"]}}}}
    actions:
      append_disclaimer: {{text: "{TEXT_YAML}", html: "{HTML}"}}
  - name: disclaimer-default-html
    priority: 21
    actions: {{append_disclaimer: {{text: "{TEXT2}"}}}}
  - name: subject-words
    priority: 30
    conditions: {{subject_contains: [invoice, "wire transfer"]}}
    exceptions: {{header_contains: {{header: X-Fuzz-Spare, words: [spare]}}}}
    actions: {{set_scl: 6, add_recipients: [audit@example.com]}}
  - name: subject-pattern
    priority: 31
    conditions: {{subject_matches: ['urgent[^a-z]*$', '^re:']}}
    actions: {{set_header: {{X-Fuzz-Hit: subject-pattern}}}}
  - name: body-words
    priority: 32
    conditions: {{body_contains: [confidential, "bank account"]}}
    actions: {{require_tls: true}}
  - name: subject-or-body
    priority: 33
    conditions: {{subject_or_body_contains: [password]}}
    actions: {{set_header: {{X-Fuzz-Hit: subject-or-body}}}}
  - name: header-pattern
    priority: 34
    conditions: {{header_matches: {{header: X-Case, patterns: ['^LC-\\d{{4,}}$']}}}}
    actions: {{route_to_connector: fuzz-relay}}
  - name: author
    priority: 35
    conditions: {{from_domain: [example.org, "*.example.net"]}}
    exceptions: {{from_address: [boss@example.org]}}
    actions: {{set_header: {{X-Fuzz-Hit: author}}}}
  - name: attachments
    priority: 36
    conditions: {{attachment_extension: [exe, docm, zip]}}
    exceptions: {{attachment_name: ["invoice*.pdf"]}}
    actions: {{set_header: {{X-Fuzz-Hit: attachments}}}}
  - name: attachment-content
    priority: 37
    conditions: {{attachment_type: [exe, zip, pdf, docm]}}
    actions: {{prepend_subject: "[FILE] "}}
  - name: attachment-size
    priority: 38
    conditions: {{attachment_size_over: 100, message_size_over: 200}}
    actions: {{set_header: {{X-Fuzz-Hit: size}}}}
  - name: password
    priority: 39
    conditions: {{attachment_password_protected: true}}
    actions: {{set_header: {{X-Fuzz-Hit: password}}}}
  - name: envelope
    priority: 40
    conditions: {{sender_domain: [example.org], recipient_domain: [example.com], sender_location: outside,
                 sender_ip: [203.0.113.0/24], inbound_connector: [fuzz-in], scl_at_least: 5, bcl_at_least: 3,
                 verdict: [spam], impersonation: [user]}}
    actions: {{route_to_connector: fuzz-relay, require_tls: true, notify_sender: {{text: fuzz notice}}}}
  - name: test-mode
    priority: 41
    mode: test
    conditions: {{sender_address: [s@example.org], recipient_address: [r@example.com]}}
    actions: {{redirect_to: [elsewhere@example.com]}}
  - name: quarantine-executables
    priority: 50
    conditions: {{attachment_type: [exe]}}
    actions: {{quarantine: true, set_header: {{X-Fuzz-Hit: quarantined}}}}
""")
"""Every content edit, enforced, on every message; the other rules read each kind of content."""

VERDICTS = {
    "antispam": Verdict(stage="antispam", result="spam", detail={
        "scl": 5, "bcl": 4, "category": "spam", "impersonation": {"kind": "user", "claimed": "boss@example.org"}}),
    "antivirus": Verdict(stage="antivirus", result="clean", detail={}),
}


def envelope() -> Envelope:
    return Envelope(id="fuzz", mail_from="s@example.org", rcpt_to=["r@example.com"], client_ip="203.0.113.7",
                    inbound_connector="fuzz-in", itinerary=["routing", "egress"], verdicts=VERDICTS)


def _clean(data: bytes) -> bool:
    """Every line ends in CRLF (as in SMTP DATA): no bare CR or LF, none at the end."""
    rest = data.replace(CRLF, b"")
    return b"\r" not in rest and b"\n" not in rest and (not data or data.endswith(CRLF))


def _longest(data: bytes) -> int:
    return max(len(line) for line in data.split(CRLF))


def _fields(data: bytes, span: mimeedit.Span | None = None) -> list[tuple[bytes, bytes]]:
    """(lower-case name, bytes without the final CRLF) of the header fields of the message or one part."""
    start, end = (0, len(data)) if span is None else (span.start, span.end)
    stop = mimeedit.sections(data, start, end)[0]
    return [(name, data[s:e].removesuffix(CRLF)) for name, s, e in mimeedit.header_fields(data, start, stop)]


def _text(data: bytes, span: mimeedit.Span) -> str:
    """A part's body as the editor sees it (after the blank line), decoded."""
    header_end, body_start = mimeedit.sections(data, span.start, span.end)
    part = mimeparts.parse(data[span.start:header_end] + CRLF + data[body_start:span.end])
    return mimeparts.decode(mimeparts.payload(part), mimeparts.charset(part)).replace("\r\n", "\n")


def _first_word(value: str) -> str:
    """The first word of a header value, decoded when it is an encoded-word."""
    words = value.split()
    if not words:
        return ""
    try:
        chunks = email.header.decode_header(words[0])
    except email.errors.HeaderParseError:
        return words[0]
    return "".join(c if isinstance(c, str) else c.decode(cs or "latin-1", "replace") for c, cs in chunks)


_EDITED = (b"subject", b"x-fuzz-", b"x-spam-flag")
_CONTENT = (b"content-type", b"content-transfer-encoding", b"mime-version")


def _kept(fields: list[tuple[bytes, bytes]], edited: tuple[bytes, ...]) -> list[bytes]:
    return [raw for name, raw in fields if not name.startswith(edited)]


def check_headers(data: bytes, out: bytes, hits: dict[str, dict]) -> None:
    """The fields set once and as set, the fields removed gone, the Subject prefixed, the others kept."""
    fields = _fields(out)
    for name in REMOVE:
        assert not any(n == name.lower().encode() for n, _ in fields), f"{name} not removed"
    for name in SET:
        found = [raw for n, raw in fields if n == name.lower().encode()]
        assert len(found) == 1, f"{name}: {found!r}"
        assert decode_header_value(found[0].decode("ascii").split(":", 1)[1].strip()) == SET[name], found
    subject = next((raw for n, raw in fields if n == b"subject"), None)
    assert subject is not None, "no Subject"
    last = "[FILE]" if "attachment-content" in hits else PREFIX.strip() if "prefix" in hits else "[EXT]"
    assert _first_word(subject.split(b":", 1)[1].decode("latin-1")) == last, (last, subject)
    read = mimeparts.parse(out[:mimeedit.sections(out)[0]] + CRLF).get_all("Subject") or []
    assert not read or _first_word(mimeparts.text(read[0])) == last, ("as read", last, read[0])
    assert _kept(fields, _EDITED + _CONTENT) == _kept(_fields(data), _EDITED + _CONTENT), "other fields changed"


def _agree(data: bytes, span: mimeedit.Span) -> bool:
    """The library's parser reads the same header fields in the part as the editor does (well-formed)."""
    header_end = mimeedit.sections(data, span.start, span.end)[0]
    fields = mimeedit.header_fields(data, span.start, header_end)
    return len(mimeparts.parse(data[span.start:header_end] + CRLF).keys()) == len(fields)


DISCLAIMERS = {"disclaimer": (TEXT, HTML), "disclaimer-default-html": (TEXT2, default_html(TEXT2))}


def check_disclaimers(data: bytes, out: bytes, hits: dict[str, dict]) -> None:
    """The parts a disclaimer went into, the other parts, and the bytes around them."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for rule, texts in DISCLAIMERS.items():
        for path in hits.get(rule, {}).get("append_disclaimer", {}).get("parts", []):
            wanted.setdefault(path, []).append(texts)
    before, after = mimeedit.parts(data), mimeedit.parts(out)
    for span in mimeedit.flatten(before):
        new = mimeedit.find(after, span.path)
        assert new is not None and new.content_type == span.content_type, f"part {span.path} lost"
        if span.path in wanted and _agree(data, span):
            old_text, new_text = _text(data, span), _text(out, new)
            if span.content_type == "text/html":
                old_text, new_text = html.unescape(old_text), html.unescape(new_text)
                for _, markup in wanted[span.path]:  # inserted before </body>, or at the end, on a line
                    mark = html.unescape(markup)
                    start, found, rest = new_text.rpartition(mark + "\n")
                    if not found and not old_text.endswith("\n") and new_text.endswith(mark):
                        # A part without a line break of its own: the CRLF after it is its delimiter's.
                        start, found, rest = new_text[: -len(mark)], mark, ""
                    assert found, (span.path, new_text[-300:])
                    new_text = start + rest
                assert new_text.rstrip("\n") == old_text.rstrip("\n"), (span.path, old_text[-200:], new_text[-300:])
            else:
                assert all(text in new_text for text, _ in wanted[span.path]), (span.path, new_text[-300:])
                assert new_text.startswith(old_text.rstrip("\n")), (span.path, old_text[-200:], new_text[-300:])
        if span.path in wanted and span.path != "1":
            assert _kept(_fields(out, new), _CONTENT) == _kept(_fields(data, span), _CONTENT), span.path
        elif span.leaf and span.path not in wanted and span.path != "1":
            assert out[new.start:new.end] == data[span.start:span.end], f"part {span.path} changed"
    if wanted and "1" not in wanted:
        spans = [s for s in (mimeedit.find(before, p) for p in wanted) if s is not None]
        body, new_body = mimeedit.sections(data)[1], mimeedit.sections(out)[1]
        first, last = min(s.start for s in spans), max(s.end for s in spans)
        assert out[new_body:new_body + first - body] == data[body:first], "bytes before the disclaimer changed"
        assert out.endswith(data[last:]), "bytes after the disclaimer changed"


def test_one_input(data: bytes) -> None:
    env = envelope()
    outcome = evaluate(env, data, POLICY, NOW)
    out = outcome.data
    assert isinstance(out, bytes)
    after = apply_outcome(env, outcome)
    assert after.size == (len(out) if outcome.data_changed else env.size)
    if not _clean(data):
        return
    rest = out.replace(CRLF, b"")
    assert b"\r" not in rest and b"\n" not in rest, "a bare CR or LF in the output"
    assert not out or out.endswith(CRLF), "the output does not end in CRLF"
    if _longest(data) <= mimeedit.MAX_LINE:
        assert _longest(out) <= mimeedit.MAX_LINE, "a line longer than 998 octets"
    hits = {hit.rule: hit.detail for hit in outcome.hits}
    check_headers(data, out, hits)
    check_disclaimers(data, out, hits)


def seeds() -> list[bytes]:
    import base64

    from tests.support.attachments import message, mz_executable, zip_of
    from tests.support.hostile import cases

    alternative = (
        b"From: Boss <a@example.org>\r\nTo: b@example.com\r\nSubject: Re: invoice urgent\r\nX-Case: LC-12345\r\n"
        b"X-Fuzz-Remove: a\r\n  folded\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes("Gr\u00fc\u00dfe, confidential password\r\n".encode()).replace(b"\n", b"\r\n")
        + b"--alt\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n<html><body><p>Gr=FC=DFe, bank=\r\n account</p></body></html>\r\n--alt--\r\n--outer--\r\n")
    return [case.data for case in cases()] + [
        alternative,
        message([("invoice1.pdf", "application/pdf", b"%PDF-1.4 /Encrypt", "base64"),
                 ("a.zip", "application/zip", zip_of([("x.exe", mz_executable())]), "base64")],
                body=b"Please see the bank account details.\r\n"),
        b"Subject: internal\r\nX-Disclaimer: not wanted\r\nX-Fuzz-Set: old\r\nX-Fuzz-Set: older\r\n\r\nText.\r\n",
        b"From: a@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=koi8-r\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n",
        message([("setup.exe", "application/octet-stream", mz_executable(), "base64")]),
        b'Subject: [EXT] already\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: multipart/signed; boundary="s"; protocol="application/pkcs7-signature"\r\n\r\n'
        b"--s\r\nContent-Type: text/plain\r\n\r\nsigned\r\n--s--\r\n--m--\r\n",
        b"Subject:\r\nContent-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode("Gr\u00fc\u00dfe\r\n".encode("utf-16")) + b"\r\n",
        b"", b"\r\n", b"Subject: s", b"Content-Type: text/html\r\n\r\n<b>x</b>",
    ]
