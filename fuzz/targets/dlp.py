"""The DLP stage's text extraction and detection on arbitrary bytes: the bytes as a whole message, and as
the payload of an attachment whose name the first byte picks (PDF, DOCX, XLSX, archives, text, HTML),
scanned with every built-in type and a custom type on; then the verdict's report header, its wire form
in the envelope frame and the rule condition on it, and the detectors on the bytes read as text.

Nothing may raise, the verdict must be consistent (counts, confidence, at most four digits shown), and
no card number, IBAN or SSN a detector finds in the bytes may appear in the verdict or its header."""

from __future__ import annotations

import base64
import json
import time

from mailmoat_dlp.confidence import LEVELS, rank
from mailmoat_dlp.detect import find_all
from mailmoat_dlp.policy import BUILTIN_TYPES as BUILTIN
from mailmoat_dlp.policy import Dlp
from mailmoat_dlp.rules import SensitiveInfoCondition, matches
from mailmoat_dlp.scan import result_of, scan
from mailmoat_dlp.service import report_header
from mailmoat_dlp.verdict import DlpVerdict
from mailmoat_platform.bus import decode, encode
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import ArchiveLimits

POLICY = Dlp(
    min_confidence="low",
    custom_types=[{"name": "employee_id", "pattern": r"\bEMP-\d{6}\b", "keywords": ["employee", "staff id"]},
                  {"name": "loyalty_card", "pattern": r"\b9\d{3}(?:[ -]?\d{4}){3}\b", "checksum": "luhn"},
                  {"name": "account_ref", "pattern": r"\b[A-Z]{2}\d{2}[A-Z0-9]{8,20}\b", "checksum": "mod97"}],
    limits={"max_seconds": 3.0, "max_parts": 50, "max_text": 200_000, "pdf_max_pages": 20},
)
"""Every built-in type, three custom types (keywords, Luhn, mod 97), every confidence recorded; limits below
the defaults so that one input stays well inside libFuzzer's time limit."""
ARCHIVES = ArchiveLimits(max_depth=3, max_members=50, max_total_size=8 * 1024 * 1024)
NAMES = ("a.pdf", "a.docx", "a.xlsx", "a.zip", "a.gz", "a.7z", "a.tar", "a.txt", "a.csv", "a.html", "a.bin")
CONDITIONS = [SensitiveInfoCondition(type=name, min_confidence="low") for name in POLICY.type_names()]


def as_attachment(data: bytes) -> bytes:
    """A message with ``data[1:]`` attached under a name ``data[0]`` picks."""
    name = NAMES[data[0] % len(NAMES)] if data else NAMES[0]
    payload = base64.encodebytes(data[1:]).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: attached\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="fz"\r\n\r\n--fz\r\nContent-Type: text/plain\r\n\r\nsee file\r\n'
            b"--fz\r\nContent-Type: application/octet-stream\r\n"
            + f'Content-Disposition: attachment; filename="{name}"\r\n'.encode()
            + b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"--fz--\r\n")


def check(detail: DlpVerdict, values: set[str]) -> None:
    """The verdict is consistent, survives the bus, and shows none of ``values``."""
    assert detail.error is None, detail.error
    assert detail.scanned >= 0
    known = set(POLICY.type_names())
    for finding in detail.findings:
        assert finding.type in known, finding.type
        assert finding.count >= 1 and sum(finding.counts.values()) == finding.count, finding
        assert rank(finding.confidence) == max(rank(level) for level in finding.counts), finding
        assert len(finding.evidence) <= min(finding.count, 10), finding
        for evidence in finding.evidence:
            assert evidence.confidence in LEVELS
            assert evidence.last4 is None or (len(evidence.last4) <= 4 and evidence.last4.isdigit()), evidence
    result = result_of(detail)
    header = report_header(result, detail)
    assert header.isascii() and header.endswith(b"\r\n"), header
    assert all(len(line) <= 78 for line in header.split(b"\r\n")), header
    wire = detail.as_detail()
    envelope = Envelope(mail_from="a@example.org", rcpt_to=["b@example.com"], itinerary=["dlp", "routing"])
    envelope.add_verdict(Verdict(stage="dlp", result=result, detail=wire))
    assert decode(encode(envelope, header))[0].verdicts["dlp"].detail == wire
    assert matches(CONDITIONS, envelope) == bool(detail.findings)
    shown = json.dumps(wire, ensure_ascii=False) + header.decode()
    for value in values:
        assert value not in shown, "a value found in the input is in the verdict"


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    found = find_all(text, POLICY)
    for match in found:
        assert 0 <= match.start < match.end <= len(text), match
    values = {m.value for m in found if m.type in BUILTIN and sum(c.isdigit() for c in m.value) >= 8}
    for raw in (data, as_attachment(data)):
        check(scan(raw, POLICY, ARCHIVES, clock=time.thread_time), values)


def seeds() -> list[bytes]:
    import gzip

    from tests.support.attachments import message, tar_of, zip_of
    from tests.support.hostile import cases
    from tests.unit.test_dlp_extract import docx_with_text, pdf_with_text, seven_zip_of, xlsx_with_rows

    body = (b"Card 4111 1111 1111 1111, mastercard 5555555555554444, IBAN DE89 3704 0044 0532 0130 00,\r\n"
            b"SSN 536-90-4399, employee EMP-123456, loyalty 9000 0000 0000 0009\r\n")
    lines = [line.decode() for line in body.split(b"\r\n") if line]
    documents = {
        "a.pdf": pdf_with_text(lines), "a.docx": docx_with_text([[line] for line in lines]),
        "a.xlsx": xlsx_with_rows([[line] for line in lines]), "a.zip": zip_of([("cards.txt", body)]),
        "a.gz": gzip.compress(body), "a.7z": seven_zip_of([("c.csv", body)]), "a.tar": tar_of([("c.txt", body)]),
        "a.txt": body, "a.html": b"<p>" + body + b"</p>", "a.bin": b"",
    }
    # As attachments under the name the first byte picks (as_attachment), and inside whole messages.
    picked = [bytes([NAMES.index(name)]) + doc for name, doc in documents.items()]
    messages = [message([("report.pdf", "application/pdf", documents["a.pdf"], "base64"),
                         ("sheet.xlsx", "application/octet-stream", documents["a.xlsx"], "base64")], body=body),
                message([("n.zip", "application/zip", zip_of([("in.zip", documents["a.zip"])]), "base64")])]
    return [*picked, *messages, *(case.data for case in cases()), body, b"", b"\r\n"]
