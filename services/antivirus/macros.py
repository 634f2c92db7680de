"""Office documents with VBA macros (pure).

Two places a VBA project lives:

- OOXML (``.docm``, ``.xlsm``, ``.pptm``, templates and add-ins): a zip with ``[Content_Types].xml``
  and a ``vbaProject.bin`` member; ``filetypes.refine_zip`` names those ``docm``/``xlsm``/``pptm``.
  When such a document sits inside an archive, its ``vbaProject.bin`` is itself an OLE file and is
  caught by the OLE check below as well.
- OLE compound files (``.doc``, ``.xls``, ``.dot``, ``vbaProject.bin`` itself): a ``VBA`` storage
  holding the ``dir`` and ``_VBA_PROJECT`` streams (under ``Macros`` in Word, ``_VBA_PROJECT_CUR`` in
  Excel), read with ``olefile`` (directory entries only, no stream is decompressed).

Not detected: PowerPoint 97-2003 files keep their VBA project compressed inside the
``PowerPoint Document`` stream, and Excel 4 (XLM) macro sheets carry no VBA storage.
"""

from __future__ import annotations

import olefile

MACRO_ZIP_KINDS = frozenset({"docm", "xlsm", "pptm"})
"""Kinds from ``filetypes.refine_zip`` that hold a VBA project."""

_VBA_STREAMS = {"dir", "_vba_project"}


def ole_has_vba(data: bytes) -> bool:
    """Whether an OLE compound file holds a VBA project (a ``VBA`` storage with its project streams)."""
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


def has_macros(data: bytes, kind: str | None) -> bool:
    """Whether a file of a true type (``filetypes.detect``, zips refined) carries VBA macros."""
    if kind in MACRO_ZIP_KINDS:
        return True
    if kind == "ole":
        return ole_has_vba(data)
    return False
