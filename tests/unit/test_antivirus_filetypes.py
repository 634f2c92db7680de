"""True file types from magic bytes and the common attachment filter."""

from __future__ import annotations

import pytest

from mailmoat_antivirus.filetypes import check, detect, extension, refine_zip
from mailmoat_policy import COMMON_ATTACHMENT_TYPES
from tests.support.attachments import mz_executable, tar_of


@pytest.mark.parametrize(("head", "kind"), [
    (mz_executable(), "exe"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 20, "elf"),
    (b"\xcf\xfa\xed\xfe" + b"\0" * 20, "macho"),
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x02", "macho"),
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x34", "class"),
    (b"PK\x03\x04" + b"\0" * 30, "zip"),
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z"),
    (b"Rar!\x1a\x07\x01\x00", "rar"),
    (b"MSCF\0\0\0\0", "cab"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"%PDF-1.7\n", "pdf"),
    (b"L\0\0\0\x01\x14\x02\0\0\0\0\0", "lnk"),
    (b"\xfd7zXZ\x00\x00", "xz"),
    (b"\x1f\x9d\x90", "z"),
    (b"dex\n035\0", "dex"),
    (b"\0\0-lh5-", "lzh"),
    (b"\0" * 7 + b"**ACE**", "ace"),
    (b"REGEDIT4\r\n", "reg"),
    (b"\0" * 0x8001 + b"CD001", "iso"),
    (tar_of([("a.txt", b"hello")]), "tar"),
    (b"Just some text", None),
    (b"", None),
])
def test_detect(head: bytes, kind: str | None) -> None:
    assert detect(head) == kind


def test_refine_zip_by_member_names() -> None:
    assert refine_zip(["AndroidManifest.xml", "classes.dex"]) == "apk"
    assert refine_zip(["META-INF/MANIFEST.MF", "a/B.class"]) == "jar"
    assert refine_zip(["[Content_Types].xml", "word/document.xml", "word/vbaProject.bin"]) == "docm"
    assert refine_zip(["[Content_Types].xml", "word/document.xml"]) == "ooxml"
    assert refine_zip(["readme.txt"]) == "zip"


@pytest.mark.parametrize(("name", "ext"), [
    ("invoice.PDF", "pdf"), ("a.tar.gz", "gz"), ("noext", None), (None, None), ("C:\\x\\evil.exe", "exe"),
    ("trailing.exe.", "exe"), (".bashrc", "bashrc"),
])
def test_extension(name: str | None, ext: str | None) -> None:
    assert extension(name) == ext


def test_blocked_by_extension_and_by_true_type() -> None:
    types = COMMON_ATTACHMENT_TYPES
    assert check("setup.exe", "exe", types).matched == "extension:exe"
    renamed = check("notes.txt", detect(mz_executable()), types)
    assert renamed is not None and renamed.matched == "type:exe" and renamed.name == "notes.txt"
    assert check("script.VBS", None, types).matched == "extension:vbs"
    assert check("photo.png", detect(b"\x89PNG\r\n\x1a\n"), types) is None
    assert check("report.pdf", "pdf", types) is None
    assert check("notes.txt", "exe", ["pdf"]) is None  # a configured list replaces the default
