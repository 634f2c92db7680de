"""Built-in checks, the verdict and the report header; clamd replies and addresses."""

from __future__ import annotations

import pytest

from mailmoat_antivirus.clamd import Address, ScanResult, parse_address, parse_reply
from mailmoat_antivirus.decide import add_engine_results, analyse, decide, report_header, unscanned
from mailmoat_policy import Antimalware, ArchiveLimits
from tests.support.attachments import message, mz_executable, nested_zip, uuencode, zip_of
from tests.support.office import ole_doc, ooxml, rar4_stored

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def verdict_of(raw: bytes, policy: Antimalware | None = None, engine: dict[str, str] | None = None):
    policy = policy or Antimalware()
    findings, items = analyse(raw, policy)
    add_engine_results(findings, [(i, ScanResult(found=(engine or {}).get(i.label))) for i in items])
    return decide(findings, policy), items


def test_clean_message_lists_the_whole_message_and_each_part_once() -> None:
    raw = message([("a.txt", "text/plain", b"same", "base64"), ("b.txt", "text/plain", b"same", "base64")])
    verdict, items = verdict_of(raw)
    assert verdict.result == "clean" and "action" not in verdict.detail
    assert [i.label for i in items] == ["message", "part 1.1", "part 1.2 (a.txt)"]  # b.txt is the same bytes
    assert verdict.detail["parts"] == 3


def test_engine_finding_is_malware_with_names_and_action() -> None:
    raw = message([("e.com", "application/octet-stream", EICAR, "base64")])
    verdict, _ = verdict_of(raw, Antimalware(action="reject"), {"part 1.2 (e.com)": "Eicar-Test-Signature"})
    assert verdict.result == "malware" and verdict.stage == "antivirus"
    assert verdict.detail["names"] == ["Eicar-Test-Signature"]
    assert verdict.detail["action"] == "reject"
    assert report_header(verdict) == (
        b"X-Mailmoat-Malware-Report: result=malware; names=Eicar-Test-Signature; blocked-type=1; action=reject\r\n"
    )


def test_renamed_executable_is_a_blocked_type() -> None:
    verdict, _ = verdict_of(message([("readme.txt", "text/plain", mz_executable(), "base64")]))
    assert verdict.result == "blocked-type"
    assert verdict.detail["findings"]["blocked-type"] == ["part 1.2 (readme.txt): type:exe"]


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_a_message_attached_transfer_encoded_is_examined_decoded(encoding: str) -> None:
    """RFC 2046 forbids encoding a message/rfc822 part; senders do it, and what it holds is still examined,
    and stripped as the whole attachment."""
    inner = message([("tool.exe", "application/octet-stream", mz_executable(), "base64")], boundary="inner")
    raw = message([("fwd.eml", "message/rfc822", inner, encoding)], boundary="outer")
    verdict, _ = verdict_of(raw, Antimalware(action="strip"))
    assert verdict.result == "blocked-type"
    assert verdict.detail["findings"]["blocked-type"] == ["part 1.2.1.2 (tool.exe): extension:exe"]
    assert verdict.detail["strip"] == ["1.2"]


def test_attached_messages_encoded_inside_one_another_are_examined_three_deep() -> None:
    nested = message([("tool.exe", "application/octet-stream", mz_executable(), "base64")], boundary="inner")
    for level in range(1, 5):
        nested = message([("fwd.eml", "message/rfc822", nested, "base64")], boundary=f"b{level}")
        verdict, _ = verdict_of(nested)
        if level <= 3:
            assert verdict.result == "blocked-type", level
        else:
            assert verdict.result == "unscannable"
            assert "one inside another" in verdict.detail["findings"]["unscannable"][0]


def test_blocked_type_inside_an_archive_and_filter_switch() -> None:
    raw = message([("docs.zip", "application/zip", zip_of([("run.bat", b"echo hi")]), "base64")])
    verdict, _ = verdict_of(raw)
    assert verdict.result == "blocked-type" and "docs.zip/run.bat: extension:bat" in verdict.detail["findings"][
        "blocked-type"][0]
    assert verdict_of(raw, Antimalware(file_filter=False))[0].result == "clean"
    assert verdict_of(raw, Antimalware(file_types=["exe"]))[0].result == "clean"


def test_archive_bomb_outranks_blocked_type_and_malware_outranks_all() -> None:
    raw = message([
        ("deep.zip", "application/zip", nested_zip(b"x", "x.txt", 10), "base64"),
        ("tool.exe", "application/octet-stream", b"MZ" + b"\0" * 100, "base64"),
    ])
    verdict, _ = verdict_of(raw, Antimalware(archives=ArchiveLimits(max_depth=3)))
    assert verdict.result == "archive-bomb"
    assert set(verdict.detail["findings"]) == {"archive-bomb", "blocked-type"}
    verdict, _ = verdict_of(raw, Antimalware(archives=ArchiveLimits(max_depth=3)), {"message": "Some.Virus"})
    assert verdict.result == "malware"


def test_encrypted_and_unscannable_follow_the_policy() -> None:
    from mailmoat_antivirus.decide import Findings

    findings = Findings(encrypted=["part 1.2 (x.zip): x.zip/secret.txt"], unscannable=["part 1.3: too big"])
    assert decide(findings, Antimalware()).result == "encrypted"
    allowed = decide(findings, Antimalware(encrypted="allow"))
    assert allowed.result == "unscannable" and allowed.detail["encrypted_allowed"]
    assert decide(findings, Antimalware(encrypted="allow", unscannable="allow")).result == "clean"


def test_parts_above_the_stream_limit_are_unscannable_and_the_message_goes_part_by_part() -> None:
    big = b"A" * 300_000
    raw = message([("big.txt", "text/plain", big, "7bit"), ("small.txt", "text/plain", b"tiny", "7bit")])
    findings, items = analyse(raw, Antimalware(stream_max_length=200_000))
    assert "message" not in [i.label for i in items]
    assert [i.label for i in items] == ["part 1.1", "part 1.3 (small.txt)"]
    assert findings.unscannable and decide(findings, Antimalware()).result == "unscannable"


def test_engine_errors_count_as_unscannable() -> None:
    findings, items = analyse(message(), Antimalware())
    add_engine_results(findings, [(items[0], ScanResult(error="INSTREAM size limit exceeded."))])
    assert decide(findings, Antimalware()).result == "unscannable"


def test_fail_open_verdict_and_header_are_ascii_one_line() -> None:
    assert report_header(unscanned("clamd down")) == (
        b"X-Mailmoat-Malware-Report: result=unscanned; fail_open=true\r\n"
    )
    findings, _ = analyse(message(), Antimalware())
    findings.malware = [("Bad\r\nName;é" * 200, "message")]
    header = report_header(decide(findings, Antimalware()))
    assert header.endswith(b"\r\n") and header.count(b"\r\n") == 1 and len(header) < 1000
    header.decode("ascii")


@pytest.mark.parametrize(("reply", "result"), [
    (b"stream: OK\0", ScanResult()),
    (b"stream: Eicar-Test-Signature FOUND\0", ScanResult(found="Eicar-Test-Signature")),
    (b"stream: Win.Test.EICAR_HDB-1 FOUND\n", ScanResult(found="Win.Test.EICAR_HDB-1")),
    (b"INSTREAM size limit exceeded. ERROR\0", ScanResult(error="INSTREAM size limit exceeded.")),
    (b"something odd\0", ScanResult(error="unexpected reply 'something odd'")),
])
def test_parse_reply(reply: bytes, result: ScanResult) -> None:
    assert parse_reply(reply) == result


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:3310", Address(host="127.0.0.1", port=3310)),
    ("tcp://clamav:3310", Address(host="clamav", port=3310)),
    ("[::1]:3310", Address(host="::1", port=3310)),
    ("unix:/run/clamav/clamd.ctl", Address(path="/run/clamav/clamd.ctl")),
    ("/run/clamav/clamd.ctl", Address(path="/run/clamav/clamd.ctl")),
])
def test_parse_address(text: str, address: Address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["clamav", "host:99999", "unix:", ":3310"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


# --- macros and strip paths ------------------------------------------------------------------------


def test_macro_documents_give_the_macro_verdict_after_blocked_type() -> None:
    raw = message([("letter.doc", "application/msword", ole_doc(True), "base64"),
                   ("plain.docx", "application/octet-stream", ooxml("word", macros=False), "base64")])
    verdict, _ = verdict_of(raw)
    assert verdict.result == "macro"
    assert verdict.detail["findings"]["macro"] == ["part 1.2 (letter.doc)"]
    assert verdict.detail["strip"] == ["1.2"]
    assert report_header(verdict) == b"X-Mailmoat-Malware-Report: result=macro; macro=1; action=quarantine\r\n"
    # A .docm is also on the common attachment list: blocked-type outranks macro, both are stripped.
    raw = message([("a.docm", "application/octet-stream", ooxml("word"), "base64"),
                   ("b.zip", "application/zip", zip_of([("old.doc", ole_doc(True))]), "base64")])
    verdict, _ = verdict_of(raw)
    assert verdict.result == "blocked-type"
    assert set(verdict.detail["findings"]) == {"blocked-type", "macro"}
    assert verdict.detail["strip"] == ["1.2", "1.3"]


def test_macros_allowed_by_policy_are_only_noted() -> None:
    raw = message([("sheet.xlsm", "application/octet-stream", ooxml("xl"), "base64")])
    verdict, _ = verdict_of(raw, Antimalware(macros="allow", file_types=["exe"]))
    assert verdict.result == "clean"
    assert verdict.detail["macros_allowed"] == ["part 1.2 (sheet.xlsm)"]
    assert "strip" not in verdict.detail


def test_strip_lists_every_offending_part_by_mime_path() -> None:
    inner = message([("e.com", "application/octet-stream", EICAR, "base64"), ("ok.txt", "text/plain", b"ok", "7bit")],
                    boundary="inner")
    raw = message([
        ("ok.pdf", "application/pdf", b"%PDF-1.4\n", "base64"),
        ("fwd.eml", "message/rfc822", inner, "rfc822"),
        ("tool.txt", "text/plain", mz_executable(), "base64"),
        ("same.bin", "application/octet-stream", EICAR, "base64"),
    ], boundary="outer")
    engine = {"message": "Eicar-Test-Signature", "part 1.3.1.2 (e.com)": "Eicar-Test-Signature"}
    verdict, _ = verdict_of(raw, engine=engine)
    assert verdict.result == "malware"
    # e.com and same.bin are the same bytes, scanned once: both parts are stripped.
    assert verdict.detail["strip"] == ["1.3.1.2", "1.4", "1.5"]


def test_strip_is_null_when_the_finding_is_not_tied_to_a_part() -> None:
    raw = message([("a.txt", "text/plain", b"harmless", "base64")])
    verdict, _ = verdict_of(raw, engine={"message": "Heuristics.Something"})
    assert verdict.result == "malware" and verdict.detail["strip"] is None
    assert verdict.detail["action"] == "quarantine"
    verdict, _ = verdict_of(raw, Antimalware(action="strip"), engine={"message": "Heuristics.Something"})
    assert verdict.detail["strip"] is None and verdict.detail["action"] == "quarantine"
    assert "not tied" in verdict.detail["action_reason"]


def test_uuencoded_file_is_stripped_as_its_text_part() -> None:
    body = b"see below\r\n" + b"\r\n".join(uuencode(mz_executable(), "run.exe")) + b"\r\n"
    raw = message([], body=body)
    verdict, _ = verdict_of(raw)
    assert verdict.result == "blocked-type"
    assert verdict.detail["strip"] == ["1.1"]


def test_archive_findings_strip_the_archive_part() -> None:
    raw = message([("x.rar", "application/octet-stream", rar4_stored([("e.com", EICAR)]), "base64")])
    verdict, items = verdict_of(raw, engine={"part 1.2 (x.rar): x.rar/e.com": "Eicar-Test-Signature"})
    assert "part 1.2 (x.rar): x.rar/e.com" in [i.label for i in items]
    assert verdict.result == "malware" and verdict.detail["strip"] == ["1.2"]
