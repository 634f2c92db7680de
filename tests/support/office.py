"""Office documents and archives the standard library cannot write, built in memory for the tests.

- ``ole_file``: a minimal OLE compound file (CFB version 3) holding the given streams, each padded to
  the 4096-byte mini-stream cutoff so every stream lives in ordinary sectors.
- ``vba_project`` / ``ole_doc_with_macros`` / ``ooxml``: a ``vbaProject.bin``, a Word 97 document
  with a ``Macros`` storage, and ``.docx``/``.docm``-style zips.
- ``rar4_stored``: a RAR 4 archive of stored (uncompressed) members, optionally flagged encrypted or
  declaring a size of its own choosing.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterable

from tests.support.attachments import zip_of

SECTOR = 512
FREE, END, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
CUTOFF = 4096


def _sort_key(name: str) -> tuple[int, str]:
    return (len(name), name.upper())


def ole_file(streams: dict[str, bytes], root_clsid: bytes = b"\0" * 16) -> bytes:
    """An OLE compound file with ``streams`` keyed by path (``"Macros/VBA/dir"``); storages are implied.
    ``root_clsid`` (16 bytes, as stored) names the application, as Office writes it in the root entry."""
    # Directory tree: every storage's children chained through right siblings, in CFB name order.
    nodes: list[dict] = [{"name": "Root Entry", "type": 5, "children": [], "data": b""}]
    index: dict[tuple[str, ...], int] = {(): 0}
    for path, data in streams.items():
        parts = tuple(path.split("/"))
        for depth in range(1, len(parts) + 1):
            key = parts[:depth]
            if key in index:
                continue
            is_stream = depth == len(parts)
            payload = data + b"\0" * max(0, CUTOFF - len(data)) if is_stream else b""
            nodes.append({"name": key[-1], "type": 2 if is_stream else 1, "children": [], "data": payload})
            index[key] = len(nodes) - 1
            nodes[index[key[:-1]]]["children"].append(index[key])
    for node in nodes:
        node["children"].sort(key=lambda i: _sort_key(nodes[i]["name"]))
        node["right"] = NOSTREAM
        node["child"] = node["children"][0] if node["children"] else NOSTREAM
    for node in nodes:
        for left, right in zip(node["children"], node["children"][1:], strict=False):
            nodes[left]["right"] = right

    dir_sectors = (len(nodes) * 128 + SECTOR - 1) // SECTOR
    data_sectors = [(len(n["data"]) + SECTOR - 1) // SECTOR for n in nodes]
    total = dir_sectors + sum(data_sectors)
    fat_sectors = 1
    while fat_sectors * (SECTOR // 4) < total + fat_sectors:
        fat_sectors += 1
    fat: list[int] = [FATSECT] * fat_sectors
    first_dir = len(fat)
    fat += [len(fat) + i + 1 for i in range(dir_sectors - 1)] + [END]
    starts: list[int] = []
    for node, count in zip(nodes, data_sectors, strict=True):
        if count == 0:
            starts.append(END)
            continue
        starts.append(len(fat))
        fat += [len(fat) + i + 1 for i in range(count - 1)] + [END]
        node["start"] = starts[-1]
    fat += [FREE] * (fat_sectors * (SECTOR // 4) - len(fat))

    directory = bytearray()
    for node, start in zip(nodes, starts, strict=True):
        name = node["name"].encode("utf-16-le") + b"\0\0"
        size = len(node["data"]) if node["type"] == 2 else 0
        directory += (
            name.ljust(64, b"\0") + struct.pack("<HBB", len(name), node["type"], 1)
            + struct.pack("<III", NOSTREAM, node["right"], node["child"])
            + (root_clsid if node is nodes[0] else b"\0" * 16) + b"\0" * 4 + b"\0" * 16
            + struct.pack("<IQ", start if node["type"] == 2 else END, size)
        )
    directory += b"\0" * (dir_sectors * SECTOR - len(directory))
    difat = list(range(fat_sectors)) + [FREE] * (109 - fat_sectors)
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\0" * 6
        + struct.pack("<IIIIIIIII", 0, fat_sectors, first_dir, 0, CUTOFF, END, 0, END, 0)
        + struct.pack("<109I", *difat)
    )
    body = b"".join(n["data"] + b"\0" * (-len(n["data"]) % SECTOR) for n in nodes)
    return header + struct.pack(f"<{len(fat)}I", *fat) + bytes(directory) + body


def vba_project() -> bytes:
    """A ``vbaProject.bin``: the VBA storage with its ``dir`` and ``_VBA_PROJECT`` streams."""
    return ole_file({
        "PROJECT": b'ID="{00000000-0000-0000-0000-000000000000}"\r\nModule=Module1\r\n',
        "VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
        "VBA/dir": b"\x01" + b"\0" * 64,
        "VBA/Module1": b"Attribute VB_Name = \"Module1\"\r\nSub AutoOpen()\r\nEnd Sub\r\n",
    })


def ole_doc(macros: bool) -> bytes:
    """A Word 97 style document, with a ``Macros`` storage when ``macros``."""
    streams = {"WordDocument": b"\xec\xa5" + b"\0" * 100, "1Table": b"\0" * 64}
    if macros:
        streams |= {
            "Macros/PROJECT": b"Module=Module1\r\n",
            "Macros/VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
            "Macros/VBA/dir": b"\x01" + b"\0" * 64,
        }
    return ole_file(streams)


def ooxml(app: str = "word", macros: bool = True) -> bytes:
    """A ``.docx``/``.docm`` (``xlsx``/``xlsm`` with ``app="xl"``) zip, with a ``vbaProject.bin`` when ``macros``."""
    main = {"word": "document.xml", "xl": "workbook.xml", "ppt": "presentation.xml"}[app]
    members = [
        ("[Content_Types].xml", b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                                b'package/2006/content-types"/>'),
        ("_rels/.rels", b'<?xml version="1.0"?><Relationships/>'),
        (f"{app}/{main}", b'<?xml version="1.0"?><document/>'),
    ]
    if macros:
        members.append((f"{app}/vbaProject.bin", vba_project()))
    return zip_of(members)


def _rar_block(head_type: int, flags: int, body: bytes) -> bytes:
    rest = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest


def rar4_stored(members: Iterable[tuple[str, bytes]], *, encrypted: bool = False,
                declared: int | None = None) -> bytes:
    """A RAR 4 archive of stored members; ``declared`` overrides each member's unpacked size."""
    out = bytearray(b"Rar!\x1a\x07\x00")
    out += _rar_block(0x73, 0, b"\0" * 6)
    for name, data in members:
        raw_name = name.encode()
        flags = 0x8000 | (0x04 if encrypted else 0)
        size = len(data) if declared is None else declared
        body = struct.pack("<IIBIIBBHI", len(data), size, 3, zlib.crc32(data), 0x5A000000, 20, 0x30,
                           len(raw_name), 0o100644) + raw_name
        out += _rar_block(0x74, flags, body) + data
    out += _rar_block(0x7B, 0x4000, b"")
    return bytes(out)


def sevenzip(members: Iterable[tuple[str, bytes | Iterable[bytes], int]]) -> bytes:
    """A 7z archive (libarchive's writer); each member is (name, bytes or chunks, size), chunks streamed."""
    import libarchive

    out = bytearray()

    def write(data: bytes) -> int:
        out.extend(data)
        return len(data)

    with libarchive.custom_writer(write, "7zip") as archive:
        for name, data, size in members:
            chunks = [data] if isinstance(data, bytes) else data
            archive.add_file_from_memory(name, size, chunks)
    return bytes(out)


def zeros(size: int, block: int = 1 << 20) -> Iterable[bytes]:
    """``size`` zero bytes in blocks."""
    chunk = b"\0" * block
    for start in range(0, size, block):
        yield chunk[: min(block, size - start)]


# --- VBA projects that oletools can read, XLM macro sheets ------------------------------------------

def ovba_raw(data: bytes) -> bytes:
    """An MS-OVBA compressed container of uncompressed chunks (each exactly 4096 bytes, the last padded
    with ``pad``-free spaces so the text stays text)."""
    out = bytearray(b"\x01")
    for start in range(0, max(len(data), 1), 4096):
        chunk = data[start:start + 4096].ljust(4096, b" ")
        out += struct.pack("<H", 0x3000 | (4096 + 2 - 3)) + chunk
    return bytes(out)


def _record(tag: int, payload: bytes) -> bytes:
    return struct.pack("<HI", tag, len(payload)) + payload


def vba_dir_stream(module: str, text_offset: int) -> bytes:
    """The decompressed ``VBA/dir`` stream (MS-OVBA 2.3.4.2) of a 32-bit project with one standard module."""
    name = module.encode()
    uname = module.encode("utf-16-le")
    out = (
        _record(0x01, struct.pack("<I", 1)) + _record(0x02, struct.pack("<I", 0x409))
        + _record(0x14, struct.pack("<I", 0x409)) + _record(0x03, struct.pack("<H", 1252))
        + _record(0x04, b"VBAProject") + _record(0x05, b"") + _record(0x40, b"")
        + _record(0x06, b"") + _record(0x3D, b"") + _record(0x07, struct.pack("<I", 0))
        + _record(0x08, struct.pack("<I", 0)) + struct.pack("<HIIH", 0x09, 4, 1, 0)
        + _record(0x0C, b"") + _record(0x3C, b"")
        + _record(0x0F, struct.pack("<H", 1)) + _record(0x13, struct.pack("<H", 0xFFFF))
        + _record(0x19, name) + _record(0x47, uname) + _record(0x1A, name) + _record(0x32, uname)
        + _record(0x1C, b"") + _record(0x48, b"") + _record(0x31, struct.pack("<I", text_offset))
        + _record(0x1E, struct.pack("<I", 0)) + _record(0x2C, struct.pack("<H", 0xFFFF))
        + _record(0x21, b"") + _record(0x2B, b"") + _record(0x10, b"")
    )
    return out


PCODE_SIZE = 4096
"""The module stream's p-code part (its performance cache); the compressed source follows it."""


def pcode_literal(text: str) -> bytes:
    """A module's p-code part with one line, ``LitStr "text"``, laid out as pcodedmp reads VBA 7 (32-bit)."""
    area = bytearray(PCODE_SIZE)
    struct.pack_into("<I", area, 0x19, 0x200)          # the p-code table is at 0x200 + 0x3C
    struct.pack_into("<HHH", area, 0x23C, 0xCAFE, 0, 1)  # magic, reserved, one line
    literal = text.encode("latin-1")
    line = struct.pack("<HH", 182, len(literal)) + literal + b"\0" * (len(literal) & 1)  # 182: LitStr in VBA 7
    struct.pack_into("<IHHI", area, 0x242, 0, len(line), 0, 0)
    area[0x258:0x258 + len(line)] = line
    return bytes(area)


def vba_project_pcode(source: str, literal: str, module: str = "Module1") -> bytes:
    """A ``vbaProject.bin`` whose module keeps ``source`` as its VBA text and a p-code line with the string
    ``literal``. A source without that string is VBA stomping: the p-code Office runs is not the text."""
    code = f'Attribute VB_Name = "{module}"\r\n{source}\r\n'.encode("latin-1")
    return ole_file({
        "PROJECT": f'ID="{{00000000-0000-0000-0000-000000000000}}"\r\nModule={module}\r\nName="VBAProject"\r\n'
                   .encode(),
        "VBA/_VBA_PROJECT": b"\xcc\x61\xb2\x00\x00\x03\x00",
        "VBA/dir": ovba_raw(vba_dir_stream(module, PCODE_SIZE)),
        f"VBA/{module}": pcode_literal(literal) + ovba_raw(code),
    })


def _biff(opcode: int, payload: bytes) -> bytes:
    return struct.pack("<HH", opcode, len(payload)) + payload


EXCEL97_CLSID = uuid.UUID("00020820-0000-0000-c000-000000000046").bytes_le


def xls_workbook(sheets: Iterable[tuple[str, int]], clsid: bool = True) -> bytes:
    """An Excel 97-2003 workbook (OLE, ``Workbook`` stream in BIFF8) listing ``(name, type)`` sheets:
    type 0 a worksheet, 1 an Excel 4.0 macro sheet (XLM). ``clsid=False`` leaves the root entry's class
    id empty (Excel opens such a file all the same)."""
    stream = _biff(0x0809, struct.pack("<HHHHII", 0x0600, 0x0005, 0x0DBB, 0x07CC, 0, 0x06))
    for name, sheet_type in sheets:
        raw = name.encode("latin-1")
        stream += _biff(0x0085, struct.pack("<IBBBB", 0, 0, sheet_type, len(raw), 0) + raw)
    stream += _biff(0x000A, b"")
    return ole_file({"Workbook": stream}, EXCEL97_CLSID if clsid else b"\0" * 16)


def xlsx_with_macrosheet() -> bytes:
    """An ``.xlsx``-shaped zip (no VBA project) with an Excel 4.0 macro sheet part."""
    return zip_of([
        ("[Content_Types].xml", b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                                b'2006/content-types"><Override PartName="/xl/macrosheets/sheet1.xml" ContentType='
                                b'"application/vnd.ms-excel.macrosheet+xml"/></Types>'),
        ("_rels/.rels", b'<?xml version="1.0"?><Relationships/>'),
        ("xl/workbook.xml", b'<?xml version="1.0"?><workbook/>'),
        ("xl/macrosheets/sheet1.xml", b'<?xml version="1.0"?><xm:macrosheet><sheetData><row r="1"><c r="A1">'
                                      b'<f>EXEC("calc.exe")</f></c></row></sheetData></xm:macrosheet>'),
    ])


SYLK_EXEC = (b'ID;P\r\nO;E\r\nNN;NAuto_open;ER1C1\r\nC;X1;Y1;K0;EEXEC("calc.exe")\r\nC;X1;Y2;K0;EHALT()\r\nE\r\n')
"""A SYLK macro sheet (``O;E``) whose ``Auto_open`` cell runs an Excel 4.0 formula, a known way to ship XLM."""
SYLK_PLAIN = b"ID;P\r\nC;X1;Y1;K42\r\nC;X1;Y2;K0;ER1C1*2\r\nE\r\n"
"""A SYLK worksheet with a plain formula: no macro sheet."""
