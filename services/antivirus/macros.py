"""Office macros (pure but for one temporary file): VBA, Excel 4.0 (XLM) macro sheets and VBA stomping,
read with oletools (``olevba`` and ``mraptor``), the library made for it.

Where macros live, and what reads them:

- OOXML (``.docm``, ``.xlsm``, ``.pptm``, templates and add-ins): a zip with a ``vbaProject.bin``;
  ``filetypes.refine_zip`` names those ``docm``/``xlsm``/``pptm`` and they count as macro documents
  whatever oletools makes of the project. An OOXML zip of any name with an XLM macro sheet part
  (``xl/macrosheets/``, ``xl/intlmacrosheets/``, or a ``macrosheet`` content type) counts too: oletools
  reads XLM only from the binary (BIFF) format without its optional XLMMacroDeobfuscator.
- OLE compound files (``.doc``, ``.xls``, ``.ppt``, ``vbaProject.bin`` itself): ``olevba`` finds VBA
  projects (and compressed VBA source in orphaned streams), XLM macro sheets in an Excel ``Workbook``
  stream (BIFF ``BOUNDSHEET`` of type macro sheet), and PowerPoint 97-2003's VBA kept inside its
  ``PowerPoint Document`` stream. The old hand-written check (a ``VBA`` storage with ``dir`` and
  ``_VBA_PROJECT`` streams) stays as the fallback when oletools cannot parse the file.
- SYLK (``.slk``, text from ``ID;``): XLM formulas (``EXEC``, ``CALL``...) that Excel runs.
- VBA stomping: the VBA source was replaced while the compiled p-code, which Office runs when the
  version matches, kept the real macro. ``olevba`` compares the p-code's names and strings (pcodedmp)
  with the source; pcodedmp reads only from a file, so a document with VBA is written to a private
  temporary file for that step and removed at once.

``mraptor``'s flags (auto-execution, writes to disk, execution of programs) are reported in ``Macros.flags``;
the stage's verdict does not depend on them: any macro is a macro to the ``antimalware.macros`` policy.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from io import BytesIO

import olefile

MACRO_ZIP_KINDS = frozenset({"docm", "xlsm", "pptm"})
"""Kinds from ``filetypes.refine_zip`` that hold a VBA project."""

_VBA_STREAMS = {"dir", "_vba_project"}
_MACROSHEET_DIRS = ("xl/macrosheets/", "xl/intlmacrosheets/")
_MAX_ZIP_MEMBERS = 10_000


@dataclass(frozen=True)
class Macros:
    """What oletools found in one file."""

    vba: bool = False
    xlm: bool = False
    stomped: bool = False
    """The VBA p-code holds names or strings its source does not (VBA stomping)."""
    flags: tuple[str, ...] = ()
    """``mraptor``'s findings in the VBA source: ``autoexec``, ``write``, ``execute``."""

    @property
    def found(self) -> bool:
        return self.vba or self.xlm or self.stomped

    def describe(self) -> str:
        kinds = [k for k, on in (("VBA", self.vba), ("XLM", self.xlm), ("VBA stomping", self.stomped)) if on]
        text = ", ".join(kinds) or "none"
        return f"{text} ({', '.join(self.flags)})" if self.flags else text


NONE = Macros()


def _olevba():
    """oletools' olevba, imported on first use (its pyparsing grammar warns of deprecated names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import mraptor, olevba
    return olevba, mraptor


def _quiet() -> None:
    """oletools turns its loggers on while it runs pcodedmp; our logs want none of its chatter."""
    for name in ("olevba", "ppt_parser", "mraptor"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def ole_has_vba(data: bytes) -> bool:
    """The structural fallback: an OLE compound file with a ``VBA`` storage holding its project streams."""
    try:
        if not olefile.isOleFile(data):
            return False
        with olefile.OleFileIO(data) as ole:
            entries = ole.listdir(streams=True, storages=True)
    except (OSError, ValueError, IndexError, TypeError, AttributeError, RecursionError):
        return False
    for entry in entries:
        lower = [name.lower() for name in entry]
        if len(lower) >= 2 and lower[-2] == "vba" and lower[-1] in _VBA_STREAMS:
            return True
        if lower and lower[0] in ("macros", "_vba_project_cur") and "vba" in lower:
            return True
    return False


def ooxml_has_macrosheet(data: bytes) -> bool:
    """Whether an OOXML zip holds an Excel 4.0 macro sheet part (by part name or content type)."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            infos = archive.infolist()[:_MAX_ZIP_MEMBERS]
            names = [i.filename.lower() for i in infos]
            if any(n.startswith(_MACROSHEET_DIRS) for n in names):
                return True
            for info in infos:
                if info.filename.lower() == "[content_types].xml" and info.file_size <= 1 << 20:
                    return b"macrosheet" in archive.read(info).lower()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return False
    return False


def _stomped(data: bytes) -> bool:
    """olevba's VBA stomping check, which needs the document as a file."""
    olevba, _ = _olevba()
    fd, path = tempfile.mkstemp(prefix="mailmoat-macro-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        parser = olevba.VBA_Parser(path)
        try:
            return bool(parser.detect_vba_stomping())
        finally:
            parser.close()
            _quiet()
    finally:
        os.unlink(path)


def _flags(parser) -> tuple[str, ...]:
    _, mraptor = _olevba()
    code = parser.get_vba_code_all_modules() or ""
    raptor = mraptor.MacroRaptor(code if isinstance(code, str) else code.decode("latin-1"))
    raptor.scan()
    return tuple(name for name in ("autoexec", "write", "execute") if getattr(raptor, name))


def inspect(data: bytes, kind: str | None) -> Macros:
    """The macros in a file of a true type (``filetypes.detect``, zips refined by ``refine_zip``)."""
    if kind == "ooxml":
        return Macros(xlm=True) if ooxml_has_macrosheet(data) else NONE
    sylk = kind is None and data.startswith(b"ID;")
    if kind not in MACRO_ZIP_KINDS and kind != "ole" and not sylk:
        return NONE
    olevba, _ = _olevba()
    _quiet()
    try:
        parser = olevba.VBA_Parser("attachment", data=data)
    except Exception:  # oletools raises its own errors and whatever a hostile file provokes
        if kind in MACRO_ZIP_KINDS:
            return Macros(vba=True)
        return Macros(vba=True) if kind == "ole" and ole_has_vba(data) else NONE
    try:
        vba = _safely(parser.detect_vba_macros) or kind in MACRO_ZIP_KINDS
        xlm = _safely(parser.detect_xlm_macros) or (kind == "xlsm" and ooxml_has_macrosheet(data))
        if not xlm and kind == "ole" and parser.ole_file is not None and any(
                _safely(lambda s=s: parser.ole_file.exists(s)) for s in ("Workbook", "Book")):
            # an Excel stream in a file without Excel's class id: oletools checks the class id first
            xlm = _safely(parser._extract_xlm_plugin_biff)
        if not vba and not xlm and kind == "ole":
            vba = ole_has_vba(data)
        flags: tuple[str, ...] = ()
        stomped = False
        if vba and not sylk:
            flags = _safely(lambda: _flags(parser)) or ()
            stomped = _safely(lambda: _stomped(data))
        return Macros(vba=vba, xlm=xlm, stomped=stomped, flags=flags)
    finally:
        parser.close()
        _quiet()


def _safely(call):
    """A value of oletools, or False when it breaks on a malformed file (it reads what it finds)."""
    try:
        return call()
    except Exception:
        return False


def has_macros(data: bytes, kind: str | None) -> bool:
    """Whether a file of a true type (``filetypes.detect``, zips refined) carries macros of any kind."""
    return inspect(data, kind).found
