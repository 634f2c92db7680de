"""Byte-level edits of rule actions: only the touched header fields or parts change."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy

import pytest

from mailmoat_mail import mimeparts
from mailmoat_routing.rules.edits import append_disclaimer, remove_header, set_header
from tests.support.attachments import message, mz_executable

PLAIN = (b"Received: from x by y; Sun, 1 Nov 2026 00:00:00 +0000\r\nFrom: a@sender.org\r\nX-Old: 1\r\n"
         b"To: alice@example.com\r\nX-Old: 2\r\n  folded\r\nSubject: hi\r\n\r\nHello.\r\n")


def test_remove_header_removes_every_field_of_that_name_and_nothing_else() -> None:
    out, count = remove_header(PLAIN, "x-old")
    assert count == 2
    assert out == PLAIN.replace(b"X-Old: 1\r\n", b"").replace(b"X-Old: 2\r\n  folded\r\n", b"")
    same, none = remove_header(PLAIN, "X-Missing")
    assert same == PLAIN and none == 0


def test_remove_header_never_touches_the_body() -> None:
    data = b"Subject: s\r\n\r\nX-Old: in the body\r\n"
    assert remove_header(data, "X-Old") == (data, 0)


def test_set_header_replaces_in_place_or_adds_at_the_top() -> None:
    out = set_header(PLAIN, "X-Old", "new")
    assert out == PLAIN.replace(b"X-Old: 1\r\n", b"X-Old: new\r\n").replace(b"X-Old: 2\r\n  folded\r\n", b"")
    added = set_header(PLAIN, "X-Class", "internal")
    assert added == b"X-Class: internal\r\n" + PLAIN
    utf8 = set_header(PLAIN, "X-Class", "vertraulich \u2013 intern")
    assert utf8.isascii()
    parsed = email.message_from_bytes(utf8, policy=email.policy.default)
    assert str(parsed["X-Class"]) == "vertraulich \u2013 intern"


def _body(data: bytes, subtype: str = "plain") -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    part = parsed.get_body(preferencelist=(subtype,))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


def test_disclaimer_on_a_plain_7bit_message_appends_only() -> None:
    out, paths, why = append_disclaimer(PLAIN, "Confidential.", None)
    assert why is None and paths == ["1"]
    assert out == PLAIN + b"\r\nConfidential.\r\n"


def test_disclaimer_on_a_message_without_a_body() -> None:
    out, paths, _ = append_disclaimer(b"Subject: s\r\nFrom: a@b.test\r\n", "Confidential.", None)
    assert paths == ["1"] and out == b"Subject: s\r\nFrom: a@b.test\r\n\r\nConfidential.\r\n"


ALTERNATIVE = (
    b"From: a@example.com\r\nTo: b@partner.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes("Grüße aus Köln\r\n".encode()).replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n"
    b"--alt\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"<html><body><p>Gr=FC=DFe</p></body></html>\r\n"
    b"--alt--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="a.bin"\r\nContent-Disposition: attachment; filename="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(mz_executable()[:30]) + b"\r\n"
    b"--outer--\r\n"
)


def test_disclaimer_goes_into_text_and_html_parts_decoded_and_reencoded() -> None:
    out, paths, why = append_disclaimer(ALTERNATIVE, "Vertraulich \u2013 nur für den Empfänger.", None)
    assert why is None and paths == ["1.1.1", "1.1.2"]
    assert _body(out) == "Grüße aus Köln\n\nVertraulich \u2013 nur für den Empfänger.\n"
    html = _body(out, "html")
    assert html.startswith("<html><body><p>Grüße</p><p>Vertraulich &#8211; nur für den Empfänger.</p>")
    assert html.rstrip().endswith("</body></html>")
    # Everything outside the two text parts is byte-identical: the headers and the attachment.
    head = ALTERNATIVE[: ALTERNATIVE.index(b"--alt\r\n")]
    assert out.startswith(head)
    tail = ALTERNATIVE[ALTERNATIVE.index(b"--alt--"):]
    assert out.endswith(tail)


def test_disclaimer_that_the_charset_cannot_carry_turns_the_part_into_utf8() -> None:
    data = (b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii; format=flowed\r\n"
            b"\r\nplain ascii\r\n")
    out, paths, why = append_disclaimer(data, "Ünterschrift", None)
    assert paths == ["1"] and why is None
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed.get_content_charset() == "utf-8" and parsed.get_param("format") == "flowed"
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content().replace("\r\n", "\n") == "plain ascii\n\nÜnterschrift\n"
    assert out.startswith(b"Subject: s\r\nMIME-Version: 1.0\r\n")


def test_signed_messages_and_attachments_are_left_alone() -> None:
    signed = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; boundary="b"; '
              b'protocol="application/pkcs7-signature"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n')
    out, paths, why = append_disclaimer(signed, "x", None)
    assert out == signed and paths == [] and why == "multipart/signed message"
    with_text_attachment = message([("notes.txt", "text/plain", b"notes", "7bit")])
    out, paths, _ = append_disclaimer(with_text_attachment, "Disclaimer.", None)
    assert paths == ["1.1"]
    assert out.count(b"Disclaimer.") == 1
    assert out.index(b"Disclaimer.") < out.index(b"notes.txt")


def test_disclaimer_on_a_part_whose_parameter_charset_holds_raw_8bit_bytes() -> None:
    data = (b"From: a@sender.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1; name*=\x91tf-8''n%6Fte\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe.\r\n")
    out, paths, why = append_disclaimer(data, "Vertraulich \u2013 intern.", None)
    assert why is None and paths == ["1"]
    assert b'name="note"' in out and "Vertraulich \u2013 intern." in _body(out)


@pytest.mark.parametrize("charset", [b"punycode", b"idna", b"raw-unicode-escape", b"undefined"])
def test_disclaimer_leaves_a_part_in_a_codec_that_is_no_charset_alone(charset: bytes) -> None:
    data = b"Subject: s\r\nContent-Type: text/plain; charset=" + charset + b"\r\n\r\nCaf\xe9 text\r\n"
    assert append_disclaimer(data, "Vertraulich \u2013 intern.", None) == (data, [], "no text part")


def test_disclaimer_on_a_part_in_a_charset_that_does_not_write_ascii_as_ascii() -> None:
    data = (b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=cp037\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "Gr\u00fc\u00dfe".encode("cp037") + b"\r\n")
    out, paths, why = append_disclaimer(data, "Vertraulich.\nIntern.", None)
    assert paths == ["1"] and why is None
    assert b"\r" not in out.replace(b"\r\n", b"") and b"\n" not in out.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed.get_content_charset() == "utf-8"
    assert parsed.get_content().startswith("Gr\u00fc\u00dfe") and "Vertraulich.\r\nIntern.\r\n" in parsed.get_content()


def test_disclaimer_keeps_line_breaks_encoded_in_quoted_printable_as_they_were() -> None:
    data = (b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\nfirst=0D=0Asecond=0Dthird=0Aend=\r\n\r\n")
    out, paths, _ = append_disclaimer(data, "Confidential.", None)
    assert paths == ["1"]
    body = binascii.a2b_qp(out.split(b"\r\n\r\n", 1)[1])
    assert body == b"first\r\nsecond\rthird\nend\r\n\r\nConfidential.\r\n"


def test_disclaimer_never_turns_quoted_printable_text_into_a_mime_delimiter() -> None:
    hidden = b"=2D-b\r\nContent-Type: application/x-msdownload; name=\"x.exe\"\r\n\r\nMZ\r\n"
    data = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"hello\r\n" + hidden + b"--b--\r\n")
    out, paths, _ = append_disclaimer(data, "Confidential.", None)
    assert paths == ["1.1"]
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain"]
    assert _body(out).startswith('hello\n--b\nContent-Type: application/x-msdownload; name="x.exe"\n\nMZ\n')


@pytest.mark.parametrize("fields", [b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit",
                                    b"Content-Type: text/plain\r\nX-Note: kept"])
def test_disclaimer_in_a_part_without_a_blank_line_goes_into_its_body(fields: bytes) -> None:
    data = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            + fields + b"\r\n--b--\r\n")
    out, paths, _ = append_disclaimer(data, "Note: vertraulich \u2013 intern.", None)
    assert paths == ["1.1"]
    part = next(email.message_from_bytes(out, policy=email.policy.default).iter_parts())
    assert part.get_content().strip() == "Note: vertraulich \u2013 intern."
    assert (part["X-Note"] == "kept") == (b"X-Note" in fields)


def test_html_disclaimer_that_makes_a_7bit_line_too_long_turns_the_part_quoted_printable() -> None:
    markup = b"<html><body><p>" + b"x" * 960 + b"</p></body></html>"
    data = b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n" + markup + b"\r\n"
    out, paths, _ = append_disclaimer(data, "Confidential.", "<p>Confidential, for the addressee only.</p>")
    assert paths == ["1"]
    assert max(len(line) for line in out.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert _body(out, "html") == markup.decode().replace(
        "</body>", "<p>Confidential, for the addressee only.</p>\n</body>") + "\n"


def test_rewritten_content_type_with_a_long_parameter_is_folded_into_continuations() -> None:
    data = (b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii; format=flowed;\r\n"
            b" name*0=" + b"a" * 900 + b";\r\n name*1=" + b"b" * 900 + b"\r\n\r\nText.\r\n")
    out, paths, _ = append_disclaimer(data, "Vertraulich \u2013 intern.", None)
    assert paths == ["1"]
    assert max(len(line) for line in out.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed.get_content_charset() == "utf-8" and parsed.get_param("format") == "flowed"
    assert parsed.get_param("name") == "a" * 900 + "b" * 900


def test_set_header_never_takes_the_folded_lines_a_message_opens_with_into_its_value() -> None:
    data = b" stray: folded\r\n\tline\r\nSubject: s\r\n\r\nbody\r\n"
    out = set_header(data, "X-Class", "internal")
    assert out == b" stray: folded\r\n\tline\r\nX-Class: internal\r\nSubject: s\r\n\r\nbody\r\n"


def test_rewritten_content_fields_take_the_place_of_the_old_ones() -> None:
    """The other fields stay, in their order. A line that is no header line (a name with raw 8-bit bytes)
    ends the fields, as the library's parser reads it, and is the first line of the body."""
    data = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"X-First: 1\r\nContent-Type: text/html; charset=iso-8859-1\r\nX-Last: 2\r\n"
            b"X-\xff\xff: not a field name\r\n\r\n<p>Gr\xfc\xdfe</p>\r\n--b--\r\n")
    out, paths, _ = append_disclaimer(data, "x", "<p>F\u00fcr den Empf\u00e4nger.</p>")
    assert paths == ["1.1"]
    assert (b"--b\r\nX-First: 1\r\nContent-Type: text/html; charset=\"iso-8859-1\"\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\nX-Last: 2\r\n\r\nX-=FF=FF: not a field name\r\n") in out
    assert "<p>Gr\u00fc\u00dfe</p>\n<p>F\u00fcr den Empf\u00e4nger.</p>" in _body(out, "html")


def test_disclaimer_in_a_last_part_without_body_or_close_delimiter_keeps_the_final_crlf() -> None:
    data = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n")
    out, paths, _ = append_disclaimer(data, "Confidential.", None)
    assert paths == ["1.1"]
    assert out == data + b"\r\nConfidential.\r\n"


def test_rewritten_content_type_drops_parameter_names_it_cannot_write() -> None:
    data = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain; format=flowed; c\x98\x9e=x; a b=c\r\n\r\nText.\r\n--b--\r\n")
    out, paths, _ = append_disclaimer(data, "Vertraulich \u2013 intern.", None)
    assert paths == ["1.1"]
    assert b'\r\nContent-Type: text/plain; format="flowed"; charset="utf-8"\r\n' in out


def test_a_part_without_charset_that_becomes_quoted_printable_declares_none() -> None:
    line = b"<html><body><p>" + "Gr\u00fc\u00dfe ".encode() * 118 + b"</p></body></html>"
    data = b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n" + line + b"\r\n"
    out, paths, _ = append_disclaimer(data, "x", "<p>Confidential, for the addressee only.</p>")
    assert paths == ["1"] and b"\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n" in out
    part = mimeparts.parse(out)
    text = mimeparts.decode(mimeparts.payload(part), mimeparts.charset(part))
    assert text.startswith(line.decode().removesuffix("</p></body></html>") + "</p><p>Confidential")


def test_an_empty_part_whose_delimiter_line_ends_in_the_next_delimiter_gets_no_disclaimer() -> None:
    """``--alt`` then ``--outer--``: the one CRLF between them belongs to the outer delimiter, so the inner
    part is empty and has no line of its own. Written into, its new fields ran into ``--alt`` and the part
    was gone from the structure; now it is left as it is."""
    raw = (b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\n"
           b"Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\n--outer--\r\n")
    out, paths, _ = append_disclaimer(raw, "Confidential.", None)
    assert b"--altContent" not in out and b"--alt\r\n" in out
    assert "1.1.1" not in paths


def test_two_delimiter_lines_in_a_row_make_no_part_to_write_a_disclaimer_into() -> None:
    """``--b`` right after ``--b`` (CPython's msg_37, Mime4j's multipartemptypart): the filters' parser makes
    no part between them, and the editor no longer does either. Its empty part there took a disclaimer
    that ran on into the next delimiter (``...only.--b``), and the parts after it were lost."""
    raw = (b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\n--b\r\nContent-Type: text/x-two\r\n\r\nBlah\r\n--b\r\nContent-Type: text/plain\r\n\r\nText\r\n"
           b"--b\r\n--b\r\n--b\r\nContent-Type: text/x-two\r\n\r\nBlah\r\n--b--\r\n")
    out, paths, _ = append_disclaimer(raw, "Confidential.", None)
    assert paths == ["1.2"]
    parts = mimeparts.parse(out).get_payload()
    assert [p.get_content_type() for p in parts] == ["text/x-two", "text/plain", "text/x-two"]
    assert mimeparts.payload(parts[1]) == b"Text\r\n\r\nConfidential."
    assert out == raw.replace(b"Text\r\n", b"Text\r\n\r\nConfidential.\r\n")
