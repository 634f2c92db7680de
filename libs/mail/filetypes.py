"""True file types from content (magic bytes) and the common attachment filter (pure).

Type names follow EOP's common attachment filter list where one exists (``exe``, ``elf``, ``macho``,
``lnk``, ``iso``, ``cab``, ...), so a type found in the content and an extension are checked against
the same list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HEAD = 65_536
"""Bytes of a file's start that ``detect`` looks at (ISO 9660 descriptors sit at 32 KiB)."""

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "exe"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x9d", "z"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"MSCF\x00\x00\x00\x00", "cab"),
    (b"ISc(", "cab"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"%PDF-", "pdf"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "lnk"),
    (b"dex\n", "dex"),
    (b"\x60\xea", "arj"),
    (b"!<arch>\ndebian", "deb"),
    (b"REGEDIT4", "reg"),
    (b"Windows Registry Editor", "reg"),
    (b"\xff\xfeW\x00i\x00n\x00d\x00o\x00w\x00s\x00 \x00R\x00e\x00g\x00", "reg"),
    (b"{\\rtf", "rtf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)

ARCHIVE_TYPES = frozenset({"zip", "gzip", "tar", "7z", "rar"})
"""Types the stage opens itself (others are left to the engine)."""


def detect(head: bytes) -> str | None:
    """The true type of a file from its first bytes, or None when nothing is recognised."""
    for prefix, kind in _PREFIXES:
        if head.startswith(prefix):
            return kind
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8:
        # Mach-O universal binary and Java class share the magic: a universal binary
        # counts its architectures (small), a class file has its version there (45 and up).
        return "macho" if int.from_bytes(head[4:8], "big") < 40 else "class"
    if len(head) >= 7 and head[2:5] == b"-lh" and head[6:7] == b"-":
        return "lzh"
    if head[7:14] == b"**ACE**":
        return "ace"
    if head[257:262] == b"ustar":
        return "tar"
    for offset in (0x8001, 0x8801, 0x9001):
        if head[offset : offset + 5] == b"CD001":
            return "iso"
    return None


def refine_zip(names: Iterable[str]) -> str:
    """The kind of zip-based format from its member names: apk, jar, appx/msix, docm/xlsm/pptm, or zip."""
    members = {n.lower() for n in names}
    if "androidmanifest.xml" in members and any(n.endswith(".dex") for n in members):
        return "apk"
    if "appxmanifest.xml" in members:
        return "appx"
    if "[content_types].xml" in members:
        if any(n.endswith("vbaproject.bin") for n in members):
            if any(n.startswith("word/") for n in members):
                return "docm"
            if any(n.startswith("ppt/") for n in members):
                return "pptm"
            return "xlsm"
        return "ooxml"
    if "meta-inf/manifest.mf" in members:
        return "jar"
    return "zip"


def extension(filename: str | None) -> str | None:
    """The lower-cased extension of a file name (the part after the last dot), without the dot."""
    if not filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().rstrip(". ")
    if "." not in base:
        return None
    ext = base.rsplit(".", 1)[1].lower()
    return ext or None


@dataclass(frozen=True)
class Blocked:
    """A file the common attachment filter blocks: which name, what matched (extension or type)."""

    name: str
    matched: str
    """``extension:<ext>`` or ``type:<kind>``."""


def check(filename: str | None, kind: str | None, blocked_types: Iterable[str]) -> Blocked | None:
    """Whether a file is blocked: its extension or its true type is on the list."""
    types = set(blocked_types)
    label = filename or "(unnamed)"
    ext = extension(filename)
    if ext is not None and ext in types:
        return Blocked(label, f"extension:{ext}")
    if kind is not None and kind in types:
        return Blocked(label, f"type:{kind}")
    return None
