"""Office macros through the antivirus stage in the pipeline (processes, real clamd): Excel 4.0 (XLM) macro
sheets in a binary workbook and in a SYLK file are found by oletools and the message quarantined with the
``macro`` verdict in the trace; a workbook of plain worksheets is delivered."""

from __future__ import annotations

import textwrap

import pytest

from tests.e2e.conftest import POLICY
from tests.e2e.test_antivirus import SERVICES, TERMINAL, clamd, events_for, send  # noqa: F401 (fixture)
from tests.support.attachments import message
from tests.support.clamd import ClamdServer
from tests.support.office import SYLK_EXEC, xls_workbook
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e


def test_xlm_macro_sheets_are_quarantined_and_plain_workbooks_delivered(gateway_factory, sink: SmtpSink,
                                                                        clamd: ClamdServer) -> None:  # noqa: F811
    gateway = gateway_factory(textwrap.dedent(POLICY) + "pipeline:\n  filters: [antivirus]\n", services=SERVICES,
                              env={"MAILMOAT_CLAMD_ADDRESS": clamd.address})
    macro = message([
        ("notes.txt", "text/plain", b"figures attached", "7bit"),
        ("q3.xls", "application/vnd.ms-excel", xls_workbook([("Sheet1", 0), ("Macro1", 1)]), "base64"),
        ("rates.slk", "application/octet-stream", SYLK_EXEC, "base64"),
    ]).replace(b"av-test@", b"av-xlm@")
    plain = message([("q4.xls", "application/vnd.ms-excel", xls_workbook([("Sheet1", 0)]), "base64")]
                    ).replace(b"av-test@", b"av-xls@")
    send(gateway.smtp_port, macro)
    send(gateway.smtp_port, plain)

    events = events_for("av-xlm@outside.test", TERMINAL)
    (scan,) = [e for e in events if e["service"] == "antivirus"]
    assert scan["event"] == "MALWARE" and scan["data"]["result"] == "macro", scan
    found = scan["data"]["findings"]["macro"]
    assert len(found) == 2 and any("q3.xls" in f for f in found) and any("rates.slk" in f for f in found)
    assert [e["event"] for e in events if e["event"] in TERMINAL] == ["QUARANTINE"]

    (got,) = sink.wait_for(1, timeout=60)
    assert got.data.endswith(plain)
    delivered = events_for("av-xls@outside.test", ("DELIVER",))
    assert [e["data"]["result"] for e in delivered if e["service"] == "antivirus"] == ["clean"]
