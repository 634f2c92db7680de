"""The antivirus stage in the pipeline, as processes with a real clamd: clean mail delivered byte-identical
after the prepended report header; EICAR quarantined (the default) or its part stripped (``action: strip``)."""

from __future__ import annotations

import base64
import smtplib
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.attachments import message, zip_of
from tests.support.clamd import EICAR, ClamdServer
from tests.support.office import ooxml
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SERVICES = ("ingress", "antivirus", "routing", "egress")
FILTER = """
pipeline:
  filters: [antivirus]
antimalware:
  action: strip
"""
TERMINAL = ("DELIVER", "QUARANTINE", "REJECT", "DSN", "DEADLETTER", "DELETE")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with ClamdServer(Path(tmp_path_factory.mktemp("clamd-e2e"))) as server:
        yield server


def send(port: int, data: bytes, rcpt: str = "alice@example.com") -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.sender.test")
        client.sendmail("sender@outside.test", [rcpt], data)
    return rcpt


def events_for(needle: str, until: tuple[str, ...], timeout: float = 60) -> list[dict]:
    """Trace events of the one message indexed under ``needle`` (a Message-ID), once one in ``until`` and the
    antivirus stage's are there (each stage publishes its trace on its own: the recorder may write routing's
    events before the scan's)."""
    def complete(events: list[dict]) -> bool:
        return any(e["event"] in until for e in events) and any(e["service"] == "antivirus" for e in events)

    return records.wait_until(lambda: sorted(records.events_by("msgid", needle), key=lambda e: e["at"]),
                              complete, f"{until} of {needle}", timeout)


def split_headers(data: bytes) -> tuple[list[bytes], bytes]:
    """The gateway's prepended header lines (report header, Received) and the original bytes after them."""
    prepended = []
    rest = data
    for name in (b"X-Mailmoat-Malware-Report: ", b"Received: "):
        assert rest.startswith(name), rest[:200]
        end = rest.index(b"\r\n", 0)
        while rest[end + 2 : end + 3] in (b" ", b"\t"):
            end = rest.index(b"\r\n", end + 2)
        prepended.append(rest[: end + 2])
        rest = rest[end + 2 :]
    return prepended, rest


def test_clean_message_with_attachments_is_delivered_byte_identical(gateway_factory, sink: SmtpSink,
                                                                    clamd: ClamdServer) -> None:
    gateway = gateway_factory(textwrap.dedent(POLICY) + textwrap.dedent(FILTER), services=SERVICES,
                              env={"MAILMOAT_CLAMD_ADDRESS": clamd.address})
    raw = message([
        ("report.pdf", "application/pdf", b"%PDF-1.4\n% harmless\n" * 50, "base64"),
        ("notes.txt", "text/plain", "caf\u00e9 = 3\u20ac\r\n".encode(), "quoted-printable"),
        ("photos.zip", "application/zip", zip_of([("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 400)]), "base64"),
        ("letter.docx", "application/octet-stream", ooxml("word", macros=False), "base64"),
    ])
    send(gateway.smtp_port, raw)
    (got,) = sink.wait_for(1, timeout=60)
    (report, received), original = split_headers(got.data)
    assert report == b"X-Mailmoat-Malware-Report: result=clean\r\n"
    assert b"by gw.mailmoat.test" in received
    assert original == raw
    events = events_for("av-test@outside.test", ("DELIVER",))
    scan = next(e for e in events if e["service"] == "antivirus")
    assert scan["event"] == "SCAN" and scan["data"]["result"] == "clean"


def eicar_message() -> bytes:
    return message([("ok.txt", "text/plain", b"harmless", "7bit"),
                    ("eicar.com", "application/octet-stream", EICAR, "base64")])


def malware_scan(events: list[dict], action: str) -> dict:
    (scan,) = [e for e in events if e["service"] == "antivirus"]
    assert scan["event"] == "MALWARE"
    assert scan["data"]["result"] == "malware"
    assert any(n.startswith("Eicar-Test-Signature") for n in scan["data"]["names"])
    assert scan["data"]["action"] == action and scan["data"]["strip"] == ["1.3"]
    assert "eicar.com" in scan["detail"]
    return scan


def test_eicar_message_is_quarantined_not_delivered(gateway_factory, sink: SmtpSink, clamd: ClamdServer) -> None:
    gateway = gateway_factory(textwrap.dedent(POLICY) + "pipeline:\n  filters: [antivirus]\n", services=SERVICES,
                              env={"MAILMOAT_CLAMD_ADDRESS": clamd.address})
    send(gateway.smtp_port, eicar_message())
    events = events_for("av-test@outside.test", TERMINAL)
    malware_scan(events, "quarantine")
    assert [e["event"] for e in events if e["event"] in TERMINAL] == ["QUARANTINE"]
    # A clean message sent after it arrives, the malware never does.
    clean = message([("ok.txt", "text/plain", b"harmless", "7bit")]).replace(b"av-test@", b"av-clean@")
    send(gateway.smtp_port, clean)
    (got,) = sink.wait_for(1, timeout=60)
    assert got.data.endswith(clean)
    time.sleep(1)
    assert len(sink.messages) == 1


def test_eicar_attachment_stripped_with_action_strip(gateway_factory, sink: SmtpSink, clamd: ClamdServer) -> None:
    gateway = gateway_factory(textwrap.dedent(POLICY) + textwrap.dedent(FILTER), services=SERVICES,
                              env={"MAILMOAT_CLAMD_ADDRESS": clamd.address})
    raw = eicar_message()
    send(gateway.smtp_port, raw)
    events = events_for("av-test@outside.test", TERMINAL)
    malware_scan(events, "strip")
    (got,) = sink.wait_for(1, timeout=60)
    (report, _), delivered = split_headers(got.data)
    assert report.startswith(b"X-Mailmoat-Malware-Report: result=malware; names=Eicar-Test-Signature")
    assert report.endswith(b"; action=strip\r\n")
    # The EICAR part is replaced by a notice; the bytes before it (headers, body, ok.txt) are untouched.
    cut = raw.index(b'Content-Type: application/octet-stream; name="eicar.com"')
    assert delivered[:cut] == raw[:cut]
    assert base64.b64encode(EICAR)[:40] in raw and base64.b64encode(EICAR)[:40] not in delivered
    assert b"eicar.com" in delivered[cut:]
    assert delivered.endswith(b"--=_mm_b0undary--\r\n")
