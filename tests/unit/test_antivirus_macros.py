"""Office macros: OOXML with vbaProject.bin and OLE files with a VBA storage, alone and inside archives."""

from __future__ import annotations

import pytest

from mailmoat_antivirus.archives import inspect, zip_kind
from mailmoat_antivirus.filetypes import detect
from mailmoat_antivirus.macros import has_macros, ole_has_vba
from mailmoat_common.policy import ArchiveLimits
from tests.support.attachments import tar_of, zip_of
from tests.support.clamd import TESTFILES
from tests.support.office import ole_doc, ooxml, vba_project


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
