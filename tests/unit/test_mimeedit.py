"""Byte-level MIME edits: part spans agree with the antivirus walk, and untouched bytes stay identical."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from mailmoat_antivirus import mime
from mailmoat_mail import mimeedit

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

HEAD = (
    b"Received: from a by b; Sun, 29 Nov 2026 04:00:00 +0000\r\n"
    b"From: S <s@sender.test>\r\nTo: a@example.com\r\n"
    b"Subject: quarterly\r\n report\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=x;\r\n\tbh=abc; b=def\r\n"
    b"MIME-Version: 1.0\r\n"
)


def nested() -> bytes:
    attachment = base64.encodebytes(EICAR).replace(b"\n", b"\r\n")
    inner = (
        b"From: x@y\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n"
        b"--in\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
        b"--in\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.exe\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--in--\r\n"
    )
    return HEAD + (
        b'Content-Type: multipart/mixed; boundary="outer b"\r\n\r\n'
        b"This is a multi-part message in MIME format.\r\n"
        b"--outer b\r\n"
        b"Content-Type: multipart/alternative; boundary=alt\r\n\r\n"
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello \xc3\xa9\r\n"
        b"--alt\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n--alt--\r\n"
        b"--outer b\r\n"
        b'Content-Type: application/octet-stream; name="eicar.com"\r\n'
        b'Content-Disposition: attachment; filename="eicar.com"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment +
        b"--outer b\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
        b"--outer b--\r\nepilogue\r\n"
    )


def test_paths_match_the_antivirus_walk() -> None:
    raw = nested()
    leaves = [s for s in mimeedit.flatten(mimeedit.parts(raw)) if s.leaf]
    walked = mime.walk(raw)
    assert [s.path for s in leaves] == [p.path for p in walked]
    assert [s.filename for s in leaves] == [p.filename for p in walked]
    assert [s.path for s in mimeedit.attachments(raw)] == ["1.2", "1.3.1.2"]


def test_replace_one_part_keeps_every_other_byte() -> None:
    raw = nested()
    span = mimeedit.find(mimeedit.parts(raw), "1.2")
    assert span is not None
    new, done = mimeedit.replace_parts(raw, ["1.2"], "malware detected (Eicar-Test-Signature)")
    assert done == ["1.2"]
    assert new[: span.start] == raw[: span.start]
    suffix = raw[span.end :]
    assert new.endswith(suffix) and suffix.startswith(b"\r\n--outer b\r\nContent-Type: message/rfc822")
    replaced = new[span.start : len(new) - len(suffix)]
    assert replaced.startswith(b"Content-Type: text/plain; charset=us-ascii\r\n")
    assert b'"eicar.com"' in replaced
    assert base64.b64encode(EICAR)[:20] not in new
    parsed = email.message_from_bytes(new, policy=email.policy.default)
    kinds = [p.get_content_type() for p in parsed.walk()]
    assert kinds.count("text/plain") == 3 and "application/octet-stream" in kinds  # the inner exe remains


def test_replace_nested_and_several() -> None:
    raw = nested()
    new, done = mimeedit.replace_parts(raw, ["1.3.1.2", "1.2", "9.9", "1.1"], "blocked")
    assert done == ["1.2", "1.3.1.2"]  # 1.1 is a container, 9.9 does not exist
    assert b"TVqQ" not in new and b"inner text" in new and b"<p>Hello</p>" in new
    assert [p.path for p in mime.walk(new)] == [p.path for p in mime.walk(raw)]


def test_replace_single_part_message_keeps_its_other_headers() -> None:
    raw = HEAD + b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n"
    new, done = mimeedit.replace_parts(raw, ["1"], "malware")
    assert done == ["1"]
    assert new.startswith(HEAD) and b"QUJD" not in new
    assert b"Content-Type: text/plain; charset=us-ascii\r\n" in new


def test_uuencoded_block_replaces_its_text_part() -> None:
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
           b"see\r\nbegin 644 x.exe\r\n#35H`\r\n`\r\nend\r\n--b--\r\n")
    new, done = mimeedit.replace_parts(raw, ["1.1.uu1"], "blocked")
    assert done == ["1.1"] and b"begin 644" not in new


@pytest.mark.parametrize(
    ("head", "prefix", "expected"),
    [
        (b"Subject: hello\r\n", "[SPAM] ", b"Subject: [SPAM] hello\r\n"),
        (b"Subject:hello\r\n", "[SPAM] ", b"Subject: [SPAM] hello\r\n"),
        (b"subject: quarterly\r\n report\r\n", "[SPAM] ", b"subject: [SPAM] quarterly\r\n report\r\n"),
        (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n", "[SPAM] ", b"Subject: [SPAM] =?utf-8?q?caf=C3=A9?=\r\n"),
        (b"Subject: [SPAM] hello\r\n", "[SPAM] ", b"Subject: [SPAM] hello\r\n"),
        (b"Subject: \r\n", "[SPAM] ", b"Subject: [SPAM]\r\n"),
    ],
)
def test_prepend_subject(head: bytes, prefix: str, expected: bytes) -> None:
    tail = b"To: c@d\r\n\r\nSubject: not this one\r\n"
    raw = b"From: a@b\r\n" + head + tail
    assert mimeedit.prepend_subject(raw, prefix) == b"From: a@b\r\n" + expected + tail


@pytest.mark.parametrize("original", [b"plain words", b"=?utf-8?b?w6l0w6k=?="])
def test_non_ascii_prefix_is_an_encoded_word_that_decodes(original: bytes) -> None:
    raw = b"Subject: " + original + b"\r\n\r\nbody\r\n"
    new = mimeedit.prepend_subject(raw, "[Spä m] ")
    assert new.isascii()
    decoded = email.message_from_bytes(new, policy=email.policy.default)["Subject"]
    plain = email.message_from_bytes(raw, policy=email.policy.default)["Subject"]
    assert decoded == "[Spä m] " + plain


def test_missing_subject_is_added_in_the_header_section() -> None:
    raw = b"From: a@b\r\nTo: c@d\r\n\r\nbody\r\n"
    assert mimeedit.prepend_subject(raw, "[SPAM] ") == b"From: a@b\r\nTo: c@d\r\nSubject: [SPAM]\r\n\r\nbody\r\n"
    assert mimeedit.prepend_subject(b"From: a@b\r\n", "[SPAM] ") == b"From: a@b\r\nSubject: [SPAM]\r\n"


def test_long_subject_line_is_folded_after_the_prefix() -> None:
    raw = b"Subject: " + b"x" * 990 + b"\r\n\r\nbody\r\n"
    new = mimeedit.prepend_subject(raw, "[SPAM] ")
    assert new == b"Subject: [SPAM]\r\n " + b"x" * 990 + b"\r\n\r\nbody\r\n"
    assert max(len(line) for line in new.split(b"\r\n")) <= 998


def test_path_inside_an_encoded_attached_message_replaces_that_message() -> None:
    inner = base64.encodebytes(b"Subject: in\r\nContent-Type: application/x-msdownload; name=a.exe\r\n\r\nMZ\r\n")
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + inner.replace(b"\n", b"\r\n") + b"--b--\r\n")
    assert [p.path for p in mime.walk(raw)] == ["1.1", "1.2.1"]
    new, done = mimeedit.replace_parts(raw, ["1.2.1"], "blocked")
    assert done == ["1.2"] and inner.strip() not in new and b"\r\n\r\nhi\r\n" in new
    assert mimeedit.replace_parts(raw, ["1.1.7"], "x") == (raw, [])  # a text part is not a message


def test_hostile_headers_do_not_stop_the_tree() -> None:
    from tests.unit.test_antivirus_mime import FROGS
    from tests.unit.test_mimeparts import nested

    (frogs,) = mimeedit.attachments(FROGS)
    assert frogs.filename == "Fr\u00f6sche.txt" and FROGS[frogs.body_start:frogs.end] == b"frog"
    eight = (b"Content-Type: multipart/mixed; boundary=\"\xe4\"\r\n\r\n--\xe4\r\nContent-Type: text/plain\r\n"
             b"Content-Disposition: attachment\r\n\r\nx\r\n--\xe4--\r\n")
    assert [s.path for s in mimeedit.attachments(eight)] == ["1.1"]
    deep = nested(3000)
    assert mimeedit.parts(deep).path == "1"
    assert mimeedit.replace_parts(deep, ["1" + ".1" * 2000], "gone") == (deep, [])


def test_prepend_subject_skips_folded_lines_that_open_the_message() -> None:
    raw = b" subject: not a field\r\n\tstill not\r\nSubject: real\r\n\r\nbody\r\n"
    assert mimeedit.prepend_subject(raw, "[EXT] ") == raw.replace(b"Subject: real", b"Subject: [EXT] real")
    assert mimeedit.header_fields(raw, 0, len(raw))[0] == (b"", 0, raw.index(b"Subject"))


def test_find_follows_the_path_and_names_nothing_else() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\na\r\n"
           b"--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nb\r\n--i\r\n\r\nc\r\n--i--\r\n"
           b"--o--\r\n")
    tree = mimeedit.parts(raw)
    for span in mimeedit.flatten(tree):
        assert mimeedit.find(tree, span.path) is span
    for path in ("", "2", "1.", "1.3", "1.0", "1.01", "1.2.3", "1.1.1", "1.x", "1.\u0661", "1." + "9" * 5000):
        assert mimeedit.find(tree, path) is None, path
