"""Scanning with the real clamd: EICAR in every wrapping, renamed executables, ClamAV's test files."""

from __future__ import annotations

import base64

import pytest

from mailmoat_antivirus.clamd import ClamdClient, ClamdUnavailable
from mailmoat_antivirus.decide import add_engine_results, analyse, decide
from mailmoat_antivirus.service import scan_items
from mailmoat_platform.models import Verdict
from mailmoat_policy import Antimalware
from tests.support.attachments import message, mz_executable, nested_zip, zip_of
from tests.support.clamd import EICAR, TESTFILES, ClamdServer
from tests.support.infra import free_port
from tests.support.office import ole_doc, ooxml, rar4_stored, sevenzip, zeros

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


async def test_a_refused_connection_is_a_retry_even_if_clamd_answers_a_moment_later(clamd: ClamdServer) -> None:
    """A refused connect sent nothing: it must not be read as clamd refusing the stream (an
    unscannable verdict), even when the ping that tells the two apart already reaches clamd again."""
    back = ClamdClient(f"127.0.0.1:{clamd.port}")

    class BackAMomentLater(ClamdClient):
        async def ping(self) -> bool:
            return await back.ping()

    client = BackAMomentLater(f"127.0.0.1:{free_port()}", connect_timeout=2)
    assert await back.ping()
    with pytest.raises(ClamdUnavailable):
        await client.scan(EICAR)


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


# --- 7z, rar, macros, strip paths -----------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["7z", "rar", "rar-in-zip", "7z-in-rar"])
async def test_eicar_inside_7z_and_rar(clamd: ClamdServer, wrap: str) -> None:
    seven = sevenzip([("eicar.com", EICAR, len(EICAR))])
    data = {
        "7z": seven,
        "rar": rar4_stored([("eicar.com", EICAR)]),
        "rar-in-zip": zip_of([("inner.rar", rar4_stored([("eicar.com", EICAR)]))]),
        "7z-in-rar": rar4_stored([("inner.7z", seven)]),
    }[wrap]
    raw = message([("files.bin", "application/octet-stream", data, "base64")])
    verdict = await scan(raw, clamd, Antimalware(file_filter=False))
    assert verdict.result == "malware", verdict.detail
    assert any(n.startswith("Eicar-Test-Signature") for n in verdict.detail["names"])
    assert verdict.detail["strip"] == ["1.2"]


@pytest.mark.parametrize("name", ["clam.7z", "clam.ole.doc", "clam.ppt"])
async def test_clamav_test_files_7z_and_ole_caught_and_typed(clamd: ClamdServer, name: str) -> None:
    if not (TESTFILES / name).exists():
        pytest.skip("clamav-testfiles is not installed")
    raw = message([("file.dat", "application/octet-stream", (TESTFILES / name).read_bytes(), "base64")])
    verdict = await scan(raw, clamd, Antimalware(file_filter=False))
    assert verdict.result == "malware" and "ClamAV-Test-File" in ",".join(verdict.detail["names"])
    assert "macro" not in verdict.detail["findings"]  # embedded objects, no VBA project
    if name == "clam.7z":
        assert verdict.detail["members"] == 1


async def test_clamav_test_file_in_a_rar_is_caught_by_extraction(clamd: ClamdServer) -> None:
    # clamd here cannot open rar itself: the member is handed to it by the stage.
    exe = (TESTFILES / "clam.exe").read_bytes() if (TESTFILES / "clam.exe").exists() else None
    if exe is None:
        pytest.skip("clamav-testfiles is not installed")
    raw = message([("a.rar", "application/octet-stream", rar4_stored([("setup.txt", exe)]), "base64")])
    verdict = await scan(raw, clamd, Antimalware(file_filter=False))
    assert verdict.result == "malware" and any("a.rar/setup.txt" in f for f in verdict.detail["findings"]["malware"])


async def test_generated_7z_bomb_flagged(clamd: ClamdServer) -> None:
    bomb = sevenzip([("zeros.bin", zeros(16 << 20), 16 << 20)])
    raw = message([("ok.txt", "text/plain", b"hello", "7bit"),
                   ("data.7z", "application/x-7z-compressed", bomb, "base64")])
    verdict = await scan(raw, clamd)
    assert verdict.result == "archive-bomb" and verdict.detail["strip"] == ["1.3"]


async def test_macro_documents_with_the_real_engine(clamd: ClamdServer) -> None:
    raw = message([
        ("budget.xlsm", "application/vnd.ms-excel.sheet.macroEnabled.12", ooxml("xl"), "base64"),
        ("old.doc", "application/msword", ole_doc(True), "base64"),
        ("clean.doc", "application/msword", ole_doc(False), "base64"),
    ])
    verdict = await scan(raw, clamd, Antimalware(file_types=["exe"]))
    assert verdict.result == "macro"
    assert verdict.detail["strip"] == ["1.2", "1.3"]
    allowed = await scan(raw, clamd, Antimalware(file_types=["exe"], macros="allow"))
    assert allowed.result == "clean" and len(allowed.detail["macros_allowed"]) == 2
