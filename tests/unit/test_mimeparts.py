"""Reading hostile MIME: raw 8-bit header values, RFC 2231, unknown charsets, NULs, deep nesting."""

from __future__ import annotations

import json

import pytest

from mailmoat_mail import mimeparts


def entity(headers: bytes, body: bytes = b"x\r\n") -> bytes:
    return b"From: a@example.com\r\n" + headers + b"\r\n\r\n" + body


@pytest.mark.parametrize(("field", "name"), [
    (b'Content-Disposition: attachment; filename="Fr\xf6sche.txt"', "Fr\u00f6sche.txt"),  # Latin-1 bytes
    (b'Content-Disposition: attachment; filename="Fr\xc3\xb6sche.txt"', "Fr\u00f6sche.txt"),  # UTF-8 bytes
    (b"Content-Disposition: attachment; filename*0*=utf-8''Fr%C3%B6; filename*1=sche.txt", "Fr\u00f6sche.txt"),
    (b"Content-Disposition: attachment; filename*=x-unknown''Fr%F6sche.txt", "Fr\u00f6sche.txt"),
    (b"Content-Type: application/octet-stream; name*=punycode''a%FFb", "a\u00ffb"),
    (b'Content-Disposition: attachment; filename="a\x00b.exe"', "a\ufffdb.exe"),
])
def test_file_names_become_clean_text(field: bytes, name: str) -> None:
    part = mimeparts.parse(entity(field))
    assert mimeparts.filename(part) == name
    json.dumps(name).encode("utf-8")  # no lone surrogate


def test_raw_8bit_disposition_and_type_are_read_as_text() -> None:
    part = mimeparts.parse(entity(b"Content-Type: text/pl\xe4in\r\nContent-Disposition: attachm\xe4nt"))
    assert mimeparts.disposition(part) == "attachm\u00e4nt"
    assert mimeparts.content_type(part) == "application/octet-stream"  # not a plain ASCII type
    assert mimeparts.header(part, "Content-Disposition") == "attachm\u00e4nt"


def test_broken_rfc2231_is_no_parameter_or_its_best_reading() -> None:
    part = mimeparts.parse(entity(b"Content-Disposition: attachment; filename*0*=''%; filename*1*=%ZZ; filename*2=x"))
    assert mimeparts.disposition(part) == "attachment"
    name = mimeparts.filename(part)
    assert name is None or isinstance(name, str)


@pytest.mark.parametrize("charset", ["x-klingon", "punycode", "base64", "rot13", "idna", "\xff", "utf-7"])
def test_unknown_and_unusable_charsets_decode(charset: str) -> None:
    assert mimeparts.decode("Fr\u00f6sche".encode(), charset) in ("Fr\u00f6sche", "Fr\ufffd\ufffdsche",
                                                                      "Fr\u00c3\u00b6sche", "Fr\ufffdsche")
    assert mimeparts.decode(b"Fr\xf6sche", "x-klingon") == "Fr\u00f6sche"


def test_boundary_with_raw_8bit_bytes_matches_the_body() -> None:
    raw = entity(b'Content-Type: multipart/mixed; boundary="\xe4\xe4"',
                 b"--\xe4\xe4\r\nContent-Type: text/plain\r\n\r\nhi\r\n--\xe4\xe4--\r\n")
    part = mimeparts.parse(raw)
    assert mimeparts.boundary_bytes(part) == b"\xe4\xe4"
    assert part.is_multipart() and mimeparts.payload(part.get_payload()[0]) == b"hi"


def nested(depth: int) -> bytes:
    out = b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
    for level in range(depth):
        out += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
    out += b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for level in reversed(range(depth)):
        out += b"--b%d--\r\n" % level
    return out


def test_nesting_too_deep_for_the_parser_leaves_the_body_whole() -> None:
    raw = nested(3000)
    part = mimeparts.parse(raw)
    assert mimeparts.too_deep(part) and not part.is_multipart()
    assert mimeparts.payload(part).endswith(b"--b0--\r\n")
    assert not mimeparts.too_deep(mimeparts.parse(nested(100)))


@pytest.mark.parametrize("charset", [b"\x91tf-8", b"ut\x00f-8"])
def test_an_rfc2231_charset_with_raw_8bit_bytes_is_an_unknown_charset_not_an_unreadable_message(charset: bytes
                                                                                              ) -> None:
    """The parser reads the boundary itself; with such a charset the library raised UnicodeEncodeError (raw
    8-bit bytes) or ValueError (a NUL) and the whole message could not be read (antispam passed it on
    unchecked, DMARC included; antivirus held it as unscannable; the console could not show it)."""
    raw = entity(b"Content-Type: multipart/mixed; boundary*=" + charset + b"''ab%43",
                 b"--abC\r\nContent-Type: text/plain\r\nContent-Disposition: attachment;"
                 b" filename*=" + charset + b"''inv%6Fice.exe\r\n\r\nhi\r\n--abC--\r\n")
    part = mimeparts.parse(raw)
    assert part.get_boundary() == "abC" and part.is_multipart()
    [leaf] = part.get_payload()
    assert mimeparts.payload(leaf) == b"hi"
    assert leaf.get_filename() == "invoice.exe" == mimeparts.filename(leaf)
    assert mimeparts.collapse(("\udc91tf-8", "", "a%41")) == "a%41"  # as for a charset the library does not know
    assert mimeparts.collapse(("x-klingon", "", "a%41")) == "a%41"
    assert mimeparts.collapse(("ut\x00f-8", "", "a%41")) == "a%41"


def test_parameters_the_library_cannot_decode_are_read_without_it() -> None:
    """A continuation numbered beside an unnumbered one (``filename*=…; filename*0*=…``) makes the library's
    RFC 2231 decoding raise TypeError for every parameter of the field: the boundary too, so the whole message
    was unreadable, and the file name, so an attachment went by without one."""
    raw = entity(b'Content-Type: multipart/mixed; name*=x; name*0=y; boundary="zz"',
                 b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;"
                 b" filename*=a; filename*0*=utf-8''ev%69l; filename*1=.exe\r\n\r\nMZ\r\n--zz--\r\n")
    part = mimeparts.parse(raw)
    assert part.get_boundary() == "zz" and part.is_multipart()
    [leaf] = part.get_payload()
    assert mimeparts.payload(leaf) == b"MZ"
    assert leaf.get_filename() == mimeparts.filename(leaf) == "a.exe"
    assert mimeparts.raw_param("text/plain; name*0*=utf-8''ev%69l; name*1=.exe", "name") == "evil.exe"
    assert mimeparts.raw_param("text/plain; x=1", "name") is None


def test_content_params_when_the_library_cannot_decode_them() -> None:
    """A continuation numbered beside an unnumbered piece of the same parameter: the library raises TypeError."""
    part = mimeparts.parse(entity(b"Content-Type: text/plain; format=flowed; name*=utf-8''a; name*0*=x%41; name*1=b"))
    assert mimeparts.content_params(part) == [("format", "flowed"), ("name", "ab")]  # pieces in order
    plain = mimeparts.parse(entity(b"Content-Type: text/plain; format=flowed; name*=utf-8''%C3%A4.txt"))
    assert mimeparts.content_params(plain) == [("format", "flowed"), ("name", "\u00e4.txt")]


@pytest.mark.parametrize("count", [1, mimeparts.LIBRARY_WORDS, mimeparts.LIBRARY_WORDS + 1, 15_000])
def test_decoded_field_reads_encoded_words_alike_however_many(count: int) -> None:
    """Past LIBRARY_WORDS the words are decoded one by one (the library's decoder is quadratic in them)."""
    value = " ".join(["=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "=?iso-8859-1?b?6Q==?="] * count) + " plain"
    assert mimeparts.decoded_field(value) == "Grüße" + "é" + "Grüßeé" * (count - 1) + " plain"


def test_decoded_field_as_written_where_the_library_refuses() -> None:
    assert mimeparts.decoded_field("=?ut\ufffdf-8?q?a?= b") == "=?ut\ufffdf-8?q?a?= b"


# --- header fields and the Subject ------------------------------------------------------------------


def test_a_folded_field_is_read_unfolded() -> None:
    part = mimeparts.parse(entity(b"Subject: card 4111 1111\r\n 1111 1111\r\n\tend\r\n"
                                  b"Content-Transfer-Encoding:\r\n base64"))
    assert mimeparts.header(part, "subject") == "card 4111 1111 1111 1111\tend"
    assert mimeparts.header(part, "content-transfer-encoding") == " base64"


@pytest.mark.parametrize(("head", "expected"), [
    (b"Subject: =?utf-8?q?caf=C3=A9?= menu", "caf\u00e9 menu"),
    (b"Subject: =?utf-8?b?w6k=?=\r\n =?utf-8?q?t=C3=A9?=", "\u00e9t\u00e9"),  # adjacent words, folded
    (b"Subject: =?utf-8?q?=C3?= =?utf-8?q?=A9?=", "\u00e9"),  # one character split across two words
    (b"Subject: Gr\xc3\xbc\xc3\x9fe", "Gr\u00fc\u00dfe"),  # raw UTF-8
    (b"Subject: Gr\xfc\xdfe", "Gr\u00fc\u00dfe"),  # raw Latin-1
    (b"Subject: =?utf-8?q?a=0D=0ABcc:_x@evil.test=00?=", "a\ufffd\ufffdBcc: x@evil.test\ufffd"),
    (b"Subject: =?x-\x00?q?a?=", "=?x-\ufffd?q?a?="),  # a charset the library refuses: as written
    (b"To: b@example.com", ""),
])
def test_the_subject_of_a_message(head: bytes, expected: str) -> None:
    assert mimeparts.subject(entity(head)) == expected
    assert mimeparts.subject(entity(head).replace(b"\r\n", b"\n")) == expected


def test_the_subject_is_read_from_the_header_section_only() -> None:
    assert mimeparts.subject(b"From: a@b\r\n\r\nSubject: not a field\r\n") == ""
    assert mimeparts.subject(b"Subject: cut short =?utf-8?q?caf=C3=A9?=") == "cut short caf\u00e9"
    assert mimeparts.subject(b"") == ""


def test_many_encoded_words_in_a_subject_are_all_decoded() -> None:
    words = b" ".join(b"=?utf-8?q?w" + str(i).encode() + b"?=" for i in range(5000))
    assert mimeparts.subject(entity(b"Subject: " + words)) == "".join(f"w{i}" for i in range(5000))


@pytest.mark.parametrize("written", [b"base64 ", b"\tBase64\t", b"\r\n base64", b"quoted-printable              ",
                                     b"x-uuencode  "])
def test_a_transfer_encoding_with_whitespace_around_it_is_still_decoded(written: bytes) -> None:
    """``Content-Transfer-Encoding: base64 `` (a trailing space or tab, or folded onto its own line): mail
    programs decode the part, so the filters must read it decoded too, not the encoded text."""
    encoded = {"base64": b"TVqQAAMAAAA=\r\n", "quoted-printable": b"MZ=90=00=03=00=00=00\r\n",
               "x-uuencode": b"begin 644 a.exe\r\n(35J0``,```\"\r\n`\r\nend\r\n"}
    name = written.strip().lower().decode()
    part = mimeparts.parse(entity(b"Content-Transfer-Encoding:" + (b"" if written[:1] == b"\r" else b" ") + written,
                                  encoded[name]))
    assert mimeparts.transfer_encoding(part) == name
    assert mimeparts.payload(part).startswith(b"MZ\x90\x00\x03\x00\x00\x00")


def test_an_encoded_attached_message_whose_text_names_an_unknown_charset_is_decoded() -> None:
    """The library parses the encoded text of a ``message/rfc822`` part as the message; when that text reads
    as fields naming a charset its generator cannot write (found by the antivirus_mime fuzz target), the
    fields and body are taken as read instead of raising."""
    inner = b"Content-Type: text/plain; charset=x-unknown-zz\r\n\r\ncaf\xe9=20there=\r\n!\r\n"  # a raw 8-bit byte
    raw = (b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           + inner + b"--b--\r\n")
    part = next(p for p in mimeparts.parse(raw).walk() if p.get_content_type() == "message/rfc822")
    decoded = mimeparts.encoded_message(part)
    assert decoded is not None and decoded.replace(b"\r\n", b"\n").endswith(b"\n\ncaf\xe9 there!")
    assert b"charset=x-unknown-zz" in decoded
