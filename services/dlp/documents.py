"""The text of documents (pure, bounded): PDF (pypdf), DOCX (its WordprocessingML parts read with the
standard library), XLSX (openpyxl, read-only). A document that cannot be read raises ``Unreadable``
with a reason; the caller notes it and goes on.

OOXML files are zips: their members' declared sizes are checked against the part size limit before
anything is inflated, and XML carrying a document type declaration (never found in Office files, the
way to entity bombs) is refused.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from xml.etree import ElementTree

from mailmoat_dlp.budget import Budget, OutOfTime

logging.getLogger("pypdf").setLevel(logging.ERROR)  # hostile PDFs make it warn at length

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DOCX_PARTS = re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml")


class Unreadable(Exception):
    """The document could not be read (corrupt, encrypted, too big); the message says why."""


def pdf_text(data: bytes, budget: Budget) -> str:
    """The text of a PDF's pages (at most ``pdf_max_pages``); encrypted PDFs with a user password are unreadable."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("encrypted PDF")
        texts = []
        for number, page in enumerate(reader.pages):
            if number >= budget.limits.pdf_max_pages:
                budget.note(f"PDF pages after {number} not read (dlp.limits.pdf_max_pages)")
                break
            budget.check_time()
            texts.append(page.extract_text() or "")
            if sum(len(t) for t in texts) > budget.limits.max_text:
                break
        return "\n".join(texts)
    except (PyPdfError, ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, RecursionError,
            AssertionError, ZeroDivisionError, NotImplementedError) as exc:  # what broken PDFs make pypdf raise
        raise Unreadable(f"PDF not readable: {type(exc).__name__}") from None


def _zip(data: bytes, budget: Budget) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError) as exc:
        raise Unreadable(f"not a readable zip: {type(exc).__name__}") from None
    declared = sum(i.file_size for i in archive.infolist())
    if declared > budget.limits.max_part_size:
        archive.close()
        raise Unreadable(f"expands to {declared} bytes, more than {budget.limits.max_part_size} "
                         "(dlp.limits.max_part_size)")
    return archive


def _xml(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        data = archive.read(name)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError, KeyError) as exc:
        raise Unreadable(f"{name} not readable: {type(exc).__name__}") from None
    if b"<!DOCTYPE" in data[:4096].upper():
        raise Unreadable(f"{name} has a document type declaration")
    return data


def docx_text(data: bytes, budget: Budget) -> str:
    """The text of a Word document: body, headers, footers, footnotes, endnotes, comments; a paragraph a line."""
    with _zip(data, budget) as archive:
        names = [n for n in archive.namelist() if _DOCX_PARTS.fullmatch(n)]
        names.sort(key=lambda n: (not n.startswith("word/document"), n))
        out: list[str] = []
        for name in names:
            budget.check_time()
            try:
                root = ElementTree.fromstring(_xml(archive, name))
            except ElementTree.ParseError as exc:
                raise Unreadable(f"{name}: {exc}") from None
            for paragraph in root.iter(f"{_W}p"):
                line = []
                for node in paragraph.iter():
                    if node.tag == f"{_W}t" and node.text:
                        line.append(node.text)
                    elif node.tag in (f"{_W}tab", f"{_W}br"):
                        line.append(" ")
                out.append("".join(line))
        return "\n".join(out)


def xlsx_text(data: bytes, budget: Budget) -> str:
    """The values of a workbook's cells (cached values, not formulas), a row a line, cells apart by spaces."""
    from openpyxl import load_workbook

    with _zip(data, budget) as archive:
        for name in archive.namelist():
            if name.endswith(".xml"):
                _xml(archive, name)  # refuses document type declarations before openpyxl reads anything
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises whatever the broken file makes its parser raise
        raise Unreadable(f"XLSX not readable: {type(exc).__name__}") from None
    out: list[str] = []
    size = 0
    try:
        for sheet in workbook.worksheets:
            for row_number, row in enumerate(sheet.iter_rows(values_only=True)):
                if row_number % 200 == 0:
                    budget.check_time()
                line = " ".join(_cell(v) for v in row if v is not None)
                if line:
                    out.append(line)
                    size += len(line) + 1
                if size > budget.limits.max_text:
                    return "\n".join(out)
    except (Unreadable, OutOfTime):
        raise
    except Exception as exc:  # as above: a broken sheet
        raise Unreadable(f"XLSX not readable: {type(exc).__name__}") from None
    finally:
        workbook.close()
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e20:
        return str(int(value))
    return str(value)


__all__ = ["Unreadable", "docx_text", "pdf_text", "xlsx_text"]
