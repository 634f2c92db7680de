"""The antispam stage's content view of hostile MIME: read, never raised on."""

from __future__ import annotations

from mailmoat_antispam.content import parse
from tests.unit.test_antivirus_mime import FROGS
from tests.unit.test_mimeparts import nested


def test_raw_8bit_disposition_counts_as_an_attachment() -> None:
    content = parse(FROGS)
    assert (content.parts, content.attachments, content.text.strip()) == (2, 1, "hi")


def test_unknown_charset_text_is_read_as_utf8_or_latin1() -> None:
    raw = (b"Subject: =?x-unknown?q?caf=E9?=\r\nContent-Type: text/plain; charset=x-klingon\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nVisit http://caf\xe9.example/ now\r\n")
    content = parse(raw)
    assert "caf\u00e9" in content.text and content.urls


def test_deep_nesting_and_nuls_are_read() -> None:
    assert parse(nested(3000)).parts >= 1
    assert parse(nested(150)).parts in (0, 1)
    content = parse(b"Subject: a\x00b\r\nContent-Type: text/plain; charset=\"\x00\"\r\n\r\nnul \x00 body\r\n")
    assert "nul" in content.text
