"""DLP text extraction (pure): text parts in their charsets, HTML as text, PDF, DOCX, XLSX and text in
archives, within the limits; an attachment that cannot be read is noted, never fatal. Also the
document builders the end-to-end test uses."""

from __future__ import annotations

import gzip
import io
import itertools
import time
import zipfile

import py7zr
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from mailmoat_dlp.policy import Dlp, DlpLimits
from mailmoat_dlp.scan import scan
from mailmoat_policy import ArchiveLimits
from tests.support import hostile
from tests.support.attachments import message, tar_of, zip_of

VISA = "4111 1111 1111 1111"
MASTERCARD = "5555555555554444"
IBAN_DE = "DE89 3704 0044 0532 0130 00"
SSN = "536-90-4399"


# --- document builders ---------------------------------------------------------------------------


def pdf_with_text(lines: list[str]) -> bytes:
    """A one-page PDF showing ``lines`` in Helvetica (the text layer pypdf reads)."""
    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx_with_text(paragraphs: list[list[str]]) -> bytes:
    """A Word document: each paragraph a list of runs (a number split across runs stays one line)."""
    body = "".join("<w:p>" + "".join(f'<w:r><w:t xml:space="preserve">{run}</w:t></w:r>' for run in runs) + "</w:p>"
                   for runs in paragraphs)
    return zip_of([
        ("[Content_Types].xml", b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                                b'content-types"><Override PartName="/word/document.xml" ContentType="application/'
                                b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'),
        ("word/document.xml", f'<?xml version="1.0"?><w:document {_W}><w:body>{body}</w:body></w:document>'.encode()),
    ])


def xlsx_with_rows(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def seven_zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(data, name)
    return buffer.getvalue()


def scanned(data: bytes, policy: Dlp | None = None, limits: ArchiveLimits | None = None, **kwargs):
    return scan(data, policy or Dlp(), limits or ArchiveLimits(), **kwargs)


def types(verdict) -> dict[str, tuple[int, str]]:
    return {f.type: (f.count, f.confidence) for f in verdict.findings}


def parts(verdict, type_name: str) -> list[str]:
    return [e.part for e in verdict.finding(type_name).evidence]


# --- text parts ----------------------------------------------------------------------------------


def test_text_parts_in_their_charset_html_as_text_and_the_subject() -> None:
    data = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: =?utf-8?q?Karte_4111=C2=A01111_?=\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"Kreditkarte f=FCr Sie: 5555 5555 5555 4444=\r\n.\r\n"
            b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><head><style>.x{}</style></head><body><p>IBAN&nbsp;:</p><p>DE89&#32;3704 0044 0532 0130 00</p>"
            b"<script>var ssn='536-90-4399';</script></body></html>\r\n--b--\r\n")
    verdict = scanned(data)
    assert types(verdict) == {"credit_card": (1, "high"), "iban": (1, "high")}  # script text is not read
    assert parts(verdict, "credit_card") == ["1.1"] and parts(verdict, "iban") == ["1.2"]
    assert verdict.scanned == 2 and verdict.notes == []


def test_a_folded_subject_is_read_as_the_one_line_a_reader_shows() -> None:
    verdict = scanned(b"From: a@example.org\r\nSubject: card 4111 1111\r\n 1111 1111 exp\r\n\r\nhello\r\n")
    assert parts(verdict, "credit_card") == ["subject"]


def test_a_plain_message_without_anything_sensitive() -> None:
    verdict = scanned(b"From: a@example.org\r\nSubject: hello\r\n\r\nCall me on 0044 20 7946 0958, order 20240512.\r\n")
    assert verdict.findings == [] and verdict.scanned == 1


# --- attachments ---------------------------------------------------------------------------------


def test_a_message_attached_transfer_encoded_is_read_decoded() -> None:
    inner = message([("card.txt", "text/plain", f"Card: {VISA}".encode(), "base64")], boundary="inner")
    for encoding in ("base64", "quoted-printable"):
        verdict = scanned(message([("fwd.eml", "message/rfc822", inner, encoding)], boundary="outer"))
        assert parts(verdict, "credit_card") == ["1.2.1.2 card.txt"], encoding
    nested = inner
    for _ in range(4):
        nested = message([("fwd.eml", "message/rfc822", nested, "base64")], boundary=f"b{len(nested)}")
    verdict = scanned(nested)
    assert verdict.findings == [] and any("nested too deep" in note for note in verdict.notes)


def test_pdf_docx_and_xlsx_attachments() -> None:
    data = message([
        ("statement.pdf", "application/pdf", pdf_with_text(["Card number:", VISA]), "base64"),
        ("letter.docx", "application/octet-stream",
         docx_with_text([["Please wire to IBAN "], ["DE89 3704 ", "0044 0532 0130 00"]]), "base64"),
        ("staff.xlsx", "application/vnd.ms-excel", xlsx_with_rows([["name", "SSN"], ["Jo", SSN]]), "base64"),
    ])
    verdict = scanned(data)
    assert types(verdict) == {"credit_card": (1, "high"), "iban": (1, "high"), "us_ssn": (1, "high")}
    assert parts(verdict, "credit_card") == ["1.2 statement.pdf"]
    assert parts(verdict, "iban") == ["1.3 letter.docx"] and parts(verdict, "us_ssn") == ["1.4 staff.xlsx"]
    assert verdict.notes == []


def test_text_inside_archives_nested_and_compressed() -> None:
    inner = zip_of([("cards.txt", f"credit card {VISA}".encode()),
                    ("letter.docx", docx_with_text([[f"IBAN {IBAN_DE}"]]))])
    data = message([
        ("bundle.zip", "application/zip", zip_of([("inner.zip", inner), ("photo.jpg", b"\xff\xd8\xff" + b"\0" * 64)]),
         "base64"),
        ("notes.tar.gz", "application/gzip", gzip.compress(tar_of([("ssn.csv", f"ssn,{SSN}\n".encode())])), "base64"),
        ("dump.txt.gz", "application/gzip", gzip.compress(f"mastercard {MASTERCARD}".encode()), "base64"),
        ("more.7z", "application/x-7z-compressed", seven_zip_of([("a/card.txt", b"amex 3782 822463 10005")]),
         "base64"),
    ])
    verdict = scanned(data)
    assert types(verdict) == {"credit_card": (3, "high"), "iban": (1, "high"), "us_ssn": (1, "high")}
    assert sorted(parts(verdict, "credit_card")) == [
        "1.2 bundle.zip/inner.zip/cards.txt", "1.4 dump.txt.gz/dump.txt", "1.5 more.7z/a/card.txt"]
    assert parts(verdict, "iban") == ["1.2 bundle.zip/inner.zip/letter.docx"]
    assert parts(verdict, "us_ssn") == ["1.3 notes.tar.gz/ssn.csv"]


def test_an_unreadable_attachment_is_noted_and_the_rest_still_read() -> None:
    data = message([
        ("broken.pdf", "application/pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ntrailer<<>>\n",
         "base64"),
        ("broken.docx", "application/octet-stream", zip_of([("word/document.xml", b"<w:document")]), "base64"),
        ("broken.zip", "application/zip", b"PK\x03\x04" + b"\x00" * 40, "base64"),
        ("ok.txt", "text/plain", f"credit card {VISA}".encode(), "7bit"),
    ])
    verdict = scanned(data)
    assert types(verdict) == {"credit_card": (1, "high")}
    assert any(n.startswith("1.3 broken.docx:") for n in verdict.notes), verdict.notes
    assert any(n.startswith("1.4 broken.zip:") for n in verdict.notes), verdict.notes


def test_attachments_off_reads_only_the_body() -> None:
    data = message([("cards.txt", "text/plain", f"credit card {VISA}".encode(), "7bit")],
                   body=f"IBAN {IBAN_DE}".encode())
    assert types(scanned(data, Dlp(attachments=False))) == {"iban": (1, "high")}


def test_file_names_with_numbers_are_redacted_in_evidence() -> None:
    data = message([("4111111111111111.txt", "text/plain", f"credit card {VISA}".encode(), "7bit")])
    verdict = scanned(data)
    assert parts(verdict, "credit_card") == ["1.2 #.txt"]
    assert "4111111111111111" not in verdict.model_dump_json()


# --- limits --------------------------------------------------------------------------------------


def test_archive_limits_of_the_antimalware_policy_stop_an_archive() -> None:
    many = zip_of([(f"f{i}.txt", b"nothing") for i in range(20)] + [("last.txt", f"visa {VISA}".encode())])
    data = message([("many.zip", "application/zip", many, "base64")])
    verdict = scanned(data, limits=ArchiveLimits(max_members=10))
    assert verdict.findings == [] and any("max_members" in n for n in verdict.notes)
    nested = zip_of([("card.txt", f"visa {VISA}".encode())])
    for _ in range(3):
        nested = zip_of([("n.zip", nested)])
    verdict = scanned(message([("deep.zip", "application/zip", nested, "base64")]), limits=ArchiveLimits(max_depth=2))
    assert verdict.findings == [] and any("max_depth" in n for n in verdict.notes)


def test_a_bomb_is_stopped_by_the_ratio_and_size_limits() -> None:
    bomb = zip_of([("zeros.txt", b"0" * 3_000_000)])
    verdict = scanned(message([("bomb.zip", "application/zip", bomb, "base64")]),
                      limits=ArchiveLimits(max_ratio=100, min_ratio_size=1_048_576))
    assert any("max_ratio" in n for n in verdict.notes), verdict.notes


def test_part_size_parts_and_text_limits() -> None:
    policy = Dlp(limits=DlpLimits(max_part_size=2048, max_parts=2, max_text=1000))
    big = message([("big.txt", "text/plain", b"x " * 2000 + f"visa {VISA}".encode(), "base64")])
    verdict = scanned(big, policy)
    assert verdict.findings == [] and any("max_part_size" in n for n in verdict.notes)
    many = message([(f"{i}.txt", "text/plain", f"visa {VISA}".encode(), "7bit") for i in range(5)])
    verdict = scanned(many, policy)
    assert verdict.scanned == 2 and any("max_parts" in n for n in verdict.notes)
    long = message([], body=b"y " * 600 + f"visa {VISA}".encode())
    verdict = scanned(long, policy)
    assert verdict.findings == [] and any("max_text" in n for n in verdict.notes)


def test_the_time_budget_stops_the_scan_and_keeps_what_was_found() -> None:
    ticks = itertools.count(0.0, 1.0)  # each look at the clock: one second later
    data = message([(f"{i}.txt", "text/plain", f"visa {VISA}".encode(), "7bit") for i in range(50)],
                   body=f"mastercard {MASTERCARD}".encode())
    verdict = scanned(data, Dlp(limits=DlpLimits(max_seconds=5)), clock=lambda: next(ticks))
    assert "credit_card" in types(verdict) and verdict.scanned < 50
    assert any("max_seconds" in n for n in verdict.notes)


def test_a_member_above_the_part_size_is_skipped_not_read() -> None:
    tarball = gzip.compress(tar_of([("big.txt", b"z" * 20_000), ("small.txt", f"visa {VISA}".encode())]))
    data = message([("t.tar.gz", "application/gzip", tarball, "base64")])
    verdict = scanned(data, Dlp(limits=DlpLimits(max_part_size=16_384)))
    assert types(verdict) == {"credit_card": (1, "high")}
    assert any("big.txt" in n and "max_part_size" in n for n in verdict.notes), verdict.notes


def test_docx_with_a_doctype_is_refused() -> None:
    evil = zip_of([("word/document.xml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')])
    verdict = scanned(message([("evil.docx", "application/octet-stream", evil, "base64")]))
    assert any("document type declaration" in n for n in verdict.notes), verdict.notes


def test_zip_members_are_not_named_by_zip_module_only() -> None:
    # a zip whose member is a stored docx: read through libarchive, then as a Word document
    data = zip_of([("a.docx", docx_with_text([[f"credit card {VISA}"]]))], compression=zipfile.ZIP_STORED)
    verdict = scanned(message([("a.zip", "application/zip", data, "base64")]))
    assert parts(verdict, "credit_card") == ["1.2 a.zip/a.docx"]


def test_hostile_messages_are_read_without_an_error_and_quickly() -> None:
    for case in hostile.cases():
        started = time.perf_counter()
        verdict = scanned(case.data)
        assert time.perf_counter() - started < 5, case.name
        assert verdict.error is None, case.name
    nested = scanned(next(c.data for c in hostile.cases() if c.name == "nested-200"))
    assert any("nested deeper than" in n for n in nested.notes), nested.notes


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=3000), name=st.sampled_from(["a.pdf", "a.docx", "a.xlsx", "a.zip", "a.gz", "a.7z",
                                                              "a.txt", "a.html"]),
       prefix=st.sampled_from([b"", b"%PDF-1.4\n", b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07"]))
def test_random_attachments_never_break_the_scan(blob: bytes, name: str, prefix: bytes) -> None:
    verdict = scanned(message([(name, "application/octet-stream", prefix + blob, "base64")]))
    assert verdict.scanned >= 1 and verdict.error is None
