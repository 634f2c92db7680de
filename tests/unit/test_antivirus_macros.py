"""Office macros: OOXML with vbaProject.bin and OLE files with a VBA storage, alone and inside archives;
Excel 4.0 (XLM) macro sheets and VBA stomping through oletools."""

from __future__ import annotations

import pytest

from mailmoat_antivirus.archives import inspect, zip_kind
from mailmoat_antivirus.filetypes import detect
from mailmoat_antivirus.macros import has_macros, ole_has_vba
from mailmoat_antivirus.macros import inspect as inspect_macros
from mailmoat_policy import ArchiveLimits
from tests.support.attachments import tar_of, zip_of
from tests.support.clamd import TESTFILES
from tests.support.office import (
    SYLK_EXEC,
    SYLK_PLAIN,
    ole_doc,
    ooxml,
    vba_project,
    vba_project_pcode,
    xls_workbook,
    xlsx_with_macrosheet,
)


def kind_of(data: bytes) -> str | None:
    kind = detect(data[:65536])
    return zip_kind(data) if kind == "zip" else kind


@pytest.mark.parametrize("app,kind", [("word", "docm"), ("xl", "xlsm"), ("ppt", "pptm")])
def test_ooxml_with_a_vba_project_has_macros(app: str, kind: str) -> None:
    data = ooxml(app, macros=True)
    assert kind_of(data) == kind
    assert has_macros(data, kind)


def test_ooxml_without_vba_project_has_none() -> None:
    data = ooxml("word", macros=False)
    assert kind_of(data) == "ooxml"
    assert not has_macros(data, "ooxml")


def test_ole_document_with_a_macros_storage() -> None:
    assert kind_of(ole_doc(True)) == "ole"
    assert ole_has_vba(ole_doc(True))
    assert not ole_has_vba(ole_doc(False))
    assert ole_has_vba(vba_project())


def test_garbage_and_truncated_ole_are_not_macros() -> None:
    data = ole_doc(True)
    assert not ole_has_vba(data[:600])
    assert not ole_has_vba(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 1000)
    assert not has_macros(b"plain text", None)


@pytest.mark.parametrize("name", ["clam.ole.doc", "clam.ppt"])
def test_clamav_ole_test_files_hold_embedded_objects_not_macros(name: str) -> None:
    path = TESTFILES / name
    if not path.exists():
        pytest.skip("clamav-testfiles is not installed")
    data = path.read_bytes()
    assert kind_of(data) == "ole"
    assert not has_macros(data, "ole")


def test_macro_documents_inside_archives_are_marked() -> None:
    inner = tar_of([("old.doc", ole_doc(True))])
    data = zip_of([
        ("report.docm", ooxml("word")), ("plain.docx", ooxml("word", macros=False)),
        ("letter.doc", ole_doc(True)), ("clean.doc", ole_doc(False)), ("more.tar", inner),
    ])
    report = inspect(data, "zip", "att.zip", ArchiveLimits())
    marked = {m.path for m in report.members if m.macros}
    assert marked == {"att.zip/report.docm", "att.zip/letter.doc", "att.zip/more.tar/old.doc"}


def test_docm_renamed_zip_inside_a_zip_is_still_opened_for_its_vba_project() -> None:
    # A macro document renamed: its kind comes from its content, and its vbaProject.bin is OLE with VBA.
    data = zip_of([("invoice.zip", ooxml("xl"))])
    report = inspect(data, "zip", "att.zip", ArchiveLimits())
    assert [m.kind for m in report.members if m.name == "invoice.zip"] == ["xlsm"]
    assert any(m.macros for m in report.members)


# --- oletools: XLM macro sheets, VBA stomping, mraptor's flags ----------------------------------------

STOMPED = vba_project_pcode("Sub AutoOpen()\r\nEnd Sub", literal="powershell -enc SQBFAFgA")
HONEST = vba_project_pcode('Sub AutoOpen()\r\n  Shell "powershell -enc SQBFAFgA"\r\nEnd Sub',
                           literal="powershell -enc SQBFAFgA")


def test_vba_stomping_is_found_when_the_p_code_holds_what_the_source_does_not() -> None:
    stomped = inspect_macros(STOMPED, kind_of(STOMPED))
    assert stomped.vba and stomped.stomped and stomped.found
    honest = inspect_macros(HONEST, kind_of(HONEST))
    assert honest.vba and not honest.stomped
    assert set(honest.flags) == {"autoexec", "execute"}  # mraptor reads the source: AutoOpen + Shell
    assert "VBA stomping" in stomped.describe()


def test_stomped_project_inside_a_docm_and_an_archive() -> None:
    docm = zip_of([
        ("[Content_Types].xml", b'<?xml version="1.0"?><Types/>'), ("word/document.xml", b"<document/>"),
        ("word/vbaProject.bin", STOMPED),
    ])
    assert inspect_macros(docm, kind_of(docm)).stomped
    report = inspect(zip_of([("invoice.doc", STOMPED)]), "zip", "att.zip", ArchiveLimits())
    assert [m.path for m in report.members if m.macros] == ["att.zip/invoice.doc"]


def test_excel_4_macro_sheet_in_an_xls_is_a_macro() -> None:
    xlm = xls_workbook([("Sheet1", 0), ("Macro1", 1)])
    assert kind_of(xlm) == "ole"
    found = inspect_macros(xlm, "ole")
    assert found.xlm and not found.vba and has_macros(xlm, "ole")
    assert not has_macros(xls_workbook([("Sheet1", 0), ("Sheet2", 0)]), "ole")


def test_excel_4_macro_sheet_without_excels_class_id_is_still_read() -> None:
    # oletools reads BIFF only when the root entry names Excel; Excel itself opens the file without it.
    assert has_macros(xls_workbook([("Macro1", 1)], clsid=False), "ole")
    assert not has_macros(xls_workbook([("Sheet1", 0)], clsid=False), "ole")


def test_excel_4_macro_sheet_in_ooxml_and_sylk() -> None:
    data = xlsx_with_macrosheet()
    assert kind_of(data) == "ooxml"
    assert inspect_macros(data, "ooxml").xlm
    assert not has_macros(ooxml("xl", macros=False), "ooxml")
    assert kind_of(SYLK_EXEC) is None
    assert inspect_macros(SYLK_EXEC, None).xlm
    assert not has_macros(SYLK_PLAIN, None)


def test_xlm_workbook_inside_a_zip_is_marked() -> None:
    report = inspect(zip_of([("q3.xls", xls_workbook([("Macro1", 1)])), ("ok.xls", xls_workbook([("S", 0)]))]),
                     "zip", "att.zip", ArchiveLimits())
    assert [m.path for m in report.members if m.macros] == ["att.zip/q3.xls"]


def test_hostile_bytes_after_an_ole_header_do_not_raise() -> None:
    for data in (STOMPED[:3000], STOMPED[:512] + b"\xff" * 5000, xls_workbook([("Macro1", 1)])[:1500]):
        inspect_macros(data, "ole")  # no exception, whatever it finds
