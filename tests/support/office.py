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
import zlib
from collections.abc import Iterable

from tests.support.attachments import zip_of

SECTOR = 512
FREE, END, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
CUTOFF = 4096


def _sort_key(name: str) -> tuple[int, str]:
    return (len(name), name.upper())


def ole_file(streams: dict[str, bytes]) -> bytes:
    """An OLE compound file with ``streams`` keyed by path (``"Macros/VBA/dir"``); storages are implied."""
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
            + struct.pack("<III", NOSTREAM, node["right"], node["child"]) + b"\0" * 16 + b"\0" * 4 + b"\0" * 16
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
