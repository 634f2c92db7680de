"""The antivirus stage's built-in checks on arbitrary message bytes, without clamd: MIME walk,
attachment filter, archives, macros, the verdict with engine answers folded in, its report header, the
envelope frame that carries it, and the strip routing would carry out on it: the path of each part the
walk reads names that same part in the editor's tree (or no part, which routing holds)."""

from __future__ import annotations

from mailmoat_antivirus.clamd import ScanResult
from mailmoat_antivirus.decide import add_engine_results, analyse, decide, report_header
from mailmoat_antivirus.mime import walk
from mailmoat_mail import mimeedit
from mailmoat_platform.bus import decode, encode
from mailmoat_platform.models import Envelope
from mailmoat_policy import Antimalware

POLICY = Antimalware(action="strip")
"""``strip``: the verdict then names the parts to strip, which routing must be able to strip."""


def _crlf_only(data: bytes) -> bool:
    rest = data.replace(b"\r\n", b"")
    return b"\r" not in rest and b"\n" not in rest


def test_one_input(data: bytes) -> None:
    findings, items = analyse(data, POLICY)
    # The engine's answers, made up: a signature in the second item, an error in the third.
    answers = {1: ScanResult(found="Fuzz.Test.Signature"), 2: ScanResult(error="fuzz: engine error")}
    add_engine_results(findings, [(item, answers.get(i, ScanResult())) for i, item in enumerate(items)])
    verdict = decide(findings, POLICY)
    header = report_header(verdict)
    assert header.isascii() and header.endswith(b"\r\n") and header.count(b"\n") == 1, header
    envelope = Envelope(mail_from="s@example.org", rcpt_to=["r@example.com"], itinerary=["antivirus", "routing"])
    envelope.add_verdict(verdict)
    assert decode(encode(envelope, header + data))[1] == header + data
    if _crlf_only(data):  # as ingress takes it (the library also ends a line at a bare CR or LF; the editor not)
        tree = mimeedit.parts(data)
        for part in walk(data):  # the filters' path names the part the editor strips, or none (then held)
            span = mimeedit.find(tree, part.path) if part.strip_path == part.path else None
            assert span is None or (span.content_type, span.filename) == (part.content_type, part.filename), part.path
    strip = verdict.detail.get("strip")
    if strip:
        stripped, done = mimeedit.replace_parts(data, list(strip), "fuzz")
        assert not done or stripped != data or not data


def seeds() -> list[bytes]:
    from tests.support.attachments import message, zip_of
    from tests.support.clamd import EICAR
    from tests.support.hostile import cases

    return [case.data for case in cases()] + [
        message([("a.zip", "application/zip", zip_of([("x.exe", b"MZ" + b"\0" * 100)]), "base64"),
                 ("e.com", "application/octet-stream", EICAR, "base64")]),
        b"", b"\r\n", b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n",
    ]
