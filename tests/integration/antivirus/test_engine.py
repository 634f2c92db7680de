"""Scanning with the real clamd: EICAR in every wrapping, renamed executables, ClamAV's test files."""

from __future__ import annotations

import base64

import pytest

from mailmoat_antivirus.clamd import ClamdClient, ClamdUnavailable
from mailmoat_antivirus.decide import add_engine_results, analyse, decide
from mailmoat_antivirus.service import scan_items
from mailmoat_common.models import Verdict
from mailmoat_common.policy import Antimalware
from tests.support.attachments import message, mz_executable, nested_zip, zip_of
from tests.support.clamd import EICAR, TESTFILES, ClamdServer
from tests.support.infra import free_port

pytestmark = pytest.mark.integration


async def scan(raw: bytes, clamd: ClamdServer, policy: Antimalware | None = None) -> Verdict:
    policy = policy or Antimalware()
    findings, items = analyse(raw, policy)
    add_engine_results(findings, await scan_items(ClamdClient(clamd.address), items))
    return decide(findings, policy)


async def test_client_ping_and_plain_eicar(clamd: ClamdServer) -> None:
    client = ClamdClient(clamd.address)
    assert await client.ping() and client.available
    result = await client.scan(EICAR)
    assert result.found is not None and result.found.startswith("Eicar-Test-Signature")
    assert (await client.scan(b"nothing to see here\r\n")).clean


async def test_stream_limit_is_answered_not_hung(clamd: ClamdServer, tmp_path) -> None:
    with ClamdServer(tmp_path / "small", stream_max="100K") as small:
        client = ClamdClient(small.address, stream_max_length=10_000_000, scan_timeout=20)
        result = await client.scan(b"A" * 3_000_000)
        assert result.error is not None and "size limit" in result.error
    client = ClamdClient(clamd.address, stream_max_length=1000)
    assert (await client.scan(b"A" * 2000)).error is not None


async def test_unreachable_clamd_raises_unavailable() -> None:
    client = ClamdClient(f"127.0.0.1:{free_port()}", connect_timeout=1)
    with pytest.raises(ClamdUnavailable):
        await client.scan(EICAR)
    assert client.available is False and not await client.ping()


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "x-uuencode", "7bit"])
async def test_eicar_attachment_in_each_transfer_encoding(clamd: ClamdServer, encoding: str) -> None:
    verdict = await scan(message([("eicar.txt", "text/plain", EICAR, encoding)]), clamd)
    assert verdict.result == "malware"
    assert any(n.startswith("Eicar-Test-Signature") for n in verdict.detail["names"])
    assert any("part 1.2 (eicar.txt)" in f for f in verdict.detail["findings"]["malware"])


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_eicar_in_zip_in_zip(clamd: ClamdServer, depth: int) -> None:
    archive = nested_zip(EICAR, "eicar.txt", depth)
    verdict = await scan(message([("files.zip", "application/zip", archive, "base64")]), clamd)
    assert verdict.result == "malware"
    assert verdict.detail["members"] == depth


async def test_eicar_inside_an_attached_message(clamd: ClamdServer) -> None:
    inner = message([("eicar.txt", "text/plain", EICAR, "base64")], boundary="inner")
    verdict = await scan(message([("fwd.eml", "message/rfc822", inner, "rfc822")], boundary="outer"), clamd)
    assert verdict.result == "malware"
    assert any("part 1.2.1.2 (eicar.txt)" in f for f in verdict.detail["findings"]["malware"])


async def test_executable_renamed_txt_is_blocked(clamd: ClamdServer) -> None:
    verdict = await scan(message([("notes.txt", "text/plain", mz_executable(), "base64")]), clamd)
    assert verdict.result == "blocked-type"
    assert verdict.detail["findings"]["blocked-type"] == ["part 1.2 (notes.txt): type:exe"]


async def test_clean_message_with_harmless_attachments(clamd: ClamdServer) -> None:
    raw = message([
        ("report.pdf", "application/pdf", b"%PDF-1.4\n% harmless\n", "base64"),
        ("notes.txt", "text/plain", "caf\u00e9 = 3\u20ac\r\n".encode(), "quoted-printable"),
        ("photos.zip", "application/zip", zip_of([("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)]), "base64"),
    ])
    verdict = await scan(raw, clamd)
    assert verdict.result == "clean", verdict.detail
    assert verdict.detail["parts"] == 4 and verdict.detail["members"] == 1


def clamav_testfiles() -> list[str]:
    return sorted(p.name for p in TESTFILES.iterdir() if p.is_file()) if TESTFILES.is_dir() else []


async def test_every_clamav_test_file_attached_to_a_message_is_caught(clamd: ClamdServer) -> None:
    names = clamav_testfiles()
    assert len(names) >= 40, "clamav-testfiles is not installed (scripts/setup.sh --test)"
    # Each file alone in its own message, attached under a harmless name so only content counts.
    policy = Antimalware(file_filter=False)
    missed = []
    for name in names:
        raw = message([("document.dat", "application/octet-stream", (TESTFILES / name).read_bytes(), "base64")])
        verdict = await scan(raw, clamd, policy)
        if verdict.result != "malware" or not any(n.startswith("ClamAV-Test-File") for n in verdict.detail["names"]):
            missed.append((name, verdict.result))
    caught = len(names) - len(missed)
    print(f"\nclamav-testfiles detection rate: {caught}/{len(names)} ({100 * caught / len(names):.1f}%)")
    assert missed == []


async def test_the_message_is_never_rewritten(clamd: ClamdServer) -> None:
    raw = message([("eicar.txt", "text/plain", base64.b64encode(EICAR), "7bit")])
    copy = bytes(raw)
    await scan(raw, clamd)
    assert raw == copy
