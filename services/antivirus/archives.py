"""Archives opened recursively within limits (pure: bytes and limits in, a report out).

zip, tar and gzip are opened with the standard library, 7z and rar (RAR 4 and 5) with libarchive
(``libarchive-c`` over the system's libarchive); every member's name and true type are collected for
the attachment filter, and whether it carries VBA macros. Limits (depth, member count, total
expanded size, compression ratio) are checked from the headers first and then while streaming
members through in fixed-size chunks, so a bomb is flagged without ever being expanded into memory: a
member is held in memory only when it is itself an archive to open or an OLE file to look into for
macros, and only up to what is left of the total size budget.

7z and rar members are checked against the declared size in their header before any of their data
is read, and their expanded size is held to ``max_ratio`` against the size of the whole archive (a
solid archive has no per-member compressed size). Encrypted members, and archives whose headers are
encrypted, are reported as encrypted.

clamd opens zip, tar, gzip and 7z itself but not rar (that takes ClamAV's non-free unrar module), so
the members of rar archives are handed back (``ArchiveReport.extracted``, within the size budget) for
the engine to scan one by one.
"""

from __future__ import annotations

import ctypes
import io
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailmoat_antivirus.filetypes import ARCHIVE_TYPES, HEAD, detect, refine_zip
from mailmoat_antivirus.macros import has_macros
from mailmoat_policy import ArchiveLimits

CHUNK = 65_536
HOLD_TYPES = ARCHIVE_TYPES | {"ole"}
"""Member types read into memory (within the size budget): archives to open, OLE files to look into."""
ENGINE_BLIND = frozenset({"rar"})
"""Archive types the engine cannot open: their members are extracted for it."""

try:  # the system's libarchive (Debian: libarchive13); without it 7z and rar are left to the engine
    import libarchive
    import libarchive.ffi
    from libarchive.exception import ArchiveError

    _entry_is_encrypted = libarchive.ffi.libarchive.archive_entry_is_encrypted
    _entry_is_encrypted.argtypes = [ctypes.c_void_p]
    _entry_is_encrypted.restype = ctypes.c_int
    LIBARCHIVE = True
except (ImportError, OSError, AttributeError):  # pragma: no cover - depends on the machine
    LIBARCHIVE = False

    class ArchiveError(Exception):  # type: ignore[no-redef]
        pass


@dataclass
class Member:
    """A file found inside an archive."""

    path: str
    """``outer.zip/inner.zip/file.exe``."""
    name: str
    kind: str | None
    macros: bool = False


@dataclass
class ArchiveReport:
    members: list[Member] = field(default_factory=list)
    bomb: str | None = None
    """Why the archive counts as a bomb (the first limit exceeded), or None."""
    encrypted: list[str] = field(default_factory=list)
    """Paths of encrypted members (or archives)."""
    errors: list[str] = field(default_factory=list)
    """Archives that could not be read (corrupt, truncated); the engine still sees the bytes."""
    extracted: list[tuple[str, bytes]] = field(default_factory=list)
    """(path, bytes) of members of ``ENGINE_BLIND`` archives, for the engine."""
    expanded: int = 0


class _Bomb(Exception):
    pass


class _Walk:
    def __init__(self, limits: ArchiveLimits):
        self.limits = limits
        self.report = ArchiveReport()
        self.count = 0

    def budget(self) -> int:
        return self.limits.max_total_size - self.report.expanded

    def add_size(self, size: int) -> None:
        self.report.expanded += size
        if self.report.expanded > self.limits.max_total_size:
            raise _Bomb(f"expands to more than {self.limits.max_total_size} bytes")

    def ratio(self, path: str, expanded: int, compressed: int) -> None:
        if expanded > self.limits.min_ratio_size and expanded > self.limits.max_ratio * max(compressed, 1):
            raise _Bomb(f"{path}: compression ratio above {self.limits.max_ratio}")

    def member(self, path: str, name: str, kind: str | None) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise _Bomb(f"more than {self.limits.max_members} archive members")
        self.report.members.append(Member(path, name, kind))

    def open(self, data: bytes, kind: str, path: str, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise _Bomb(f"{path}: archives nested deeper than {self.limits.max_depth}")
        if kind == "zip":
            self.zip(data, path, depth)
        elif kind == "tar":
            self.tar(data, path, depth)
        elif kind == "gzip":
            self.gzip(data, path, depth)
        elif kind in ("7z", "rar"):
            self.libarchive(data, kind, path, depth)

    # --- formats ---------------------------------------------------------------------------------

    def zip(self, data: bytes, path: str, depth: int) -> None:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError) as exc:
            self.report.errors.append(f"{path}: {exc}")
            return
        with archive:
            # not is_dir(): it indexes the name, and a member may have none (it is scanned like any other)
            infos = [i for i in archive.infolist() if not i.filename.endswith("/")]
            declared = 0
            for info in infos:  # headers first: a bomb that says so is caught before any reading
                declared += info.file_size
                self.ratio(f"{path}/{info.filename}", info.file_size, info.compress_size)
            if declared > self.budget():
                raise _Bomb(f"{path}: declares {declared} bytes, more than {self.limits.max_total_size}")
            for info in infos:
                member_path = f"{path}/{info.filename}"
                if info.flag_bits & 0x1:
                    self.report.encrypted.append(member_path)
                    self.member(member_path, info.filename, None)
                    continue
                try:
                    with archive.open(info) as stream:
                        kind, held = self.stream(stream, member_path, info.compress_size)
                except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError, RuntimeError,
                        zlib.error) as exc:  # a header pointing before the start: "negative seek value"
                    self.report.errors.append(f"{member_path}: {exc}")
                    self.member(member_path, info.filename, None)
                    continue
                self.child(member_path, info.filename, kind, held, depth)

    def tar(self, data: bytes, path: str, depth: int) -> None:
        try:
            archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        except (tarfile.TarError, OSError, ValueError) as exc:
            self.report.errors.append(f"{path}: {exc}")
            return
        with archive:
            try:
                for info in archive:
                    if not info.isfile():
                        continue
                    member_path = f"{path}/{info.name}"
                    if info.size > self.budget():
                        raise _Bomb(f"{member_path}: {info.size} bytes, more than {self.limits.max_total_size}")
                    stream = archive.extractfile(info)
                    if stream is None:
                        continue
                    kind, held = self.stream(stream, member_path, info.size)
                    self.child(member_path, info.name, kind, held, depth)
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                self.report.errors.append(f"{path}: {exc}")

    def libarchive(self, data: bytes, kind: str, path: str, depth: int) -> None:
        if not LIBARCHIVE:
            self.report.errors.append(f"{path}: libarchive is not installed, {kind} not opened")
            return
        if kind == "7z":
            fmt = "7zip"
        else:
            fmt = "rar5" if data[6:8] == b"\x01\x00" else "rar"
        try:
            with libarchive.memory_reader(data, format_name=fmt, filter_name="none") as archive:
                for entry in archive:
                    if entry.isdir or entry.issym or entry.islnk:
                        continue  # no data of their own (any other entry is read, whatever its mode says)
                    name = entry.pathname or "(unnamed)"
                    member_path = f"{path}/{name}"
                    if _entry_is_encrypted(entry._entry_p):
                        self.report.encrypted.append(member_path)
                        self.member(member_path, name, None)
                        continue
                    declared = entry.size or 0
                    if declared > self.budget():
                        raise _Bomb(f"{member_path}: declares {declared} bytes, more than {self.limits.max_total_size}")
                    self.ratio(member_path, declared, len(data))
                    blind = kind in ENGINE_BLIND
                    kind_, held = self.consume(entry.get_blocks(), member_path, len(data), keep_all=blind)
                    if blind and held:
                        self.report.extracted.append((member_path, held))
                    self.child(member_path, name, kind_, held if kind_ in HOLD_TYPES else b"", depth)
        except ArchiveError as exc:
            message = str(getattr(exc, "msg", exc) or exc)
            if "encrypt" in message.lower():
                self.report.encrypted.append(path)
            else:
                self.report.errors.append(f"{path}: {message}")

    def gzip(self, data: bytes, path: str, depth: int) -> None:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        inner = _gunzipped_name(path.rsplit("/", 1)[-1])
        member_path = f"{path}/{inner}"
        out = bytearray()
        head = b""
        keep = True
        size = 0
        try:
            pending = data
            while pending and not decompressor.eof:
                chunk = decompressor.decompress(pending, CHUNK)
                pending = decompressor.unconsumed_tail
                size += len(chunk)
                self.add_size(len(chunk))
                self.ratio(member_path, size, len(data))
                if len(head) < HEAD:
                    head += chunk[: HEAD - len(head)]
                    if len(head) >= 512 and detect(head) not in HOLD_TYPES:
                        keep = False
                if keep:
                    out += chunk
        except zlib.error as exc:
            self.report.errors.append(f"{path}: {exc}")
            return
        if not decompressor.eof:
            self.report.errors.append(f"{path}: truncated gzip stream")
        kind = detect(head)
        self.child(member_path, inner, kind, bytes(out) if keep and kind in HOLD_TYPES else b"", depth)

    # --- members ---------------------------------------------------------------------------------

    def stream(self, stream: io.BufferedIOBase | io.IOBase, path: str, compressed: int) -> tuple[str | None, bytes]:
        """Read a member through in chunks: its kind, and its bytes when it is an archive to open."""
        return self.consume(iter(lambda: stream.read(CHUNK), b""), path, compressed)

    def consume(self, chunks: Iterable[bytes], path: str, compressed: int,
                keep_all: bool = False) -> tuple[str | None, bytes]:
        """A member's chunks through the limits: its kind, and its bytes when it is to be held."""
        head = b""
        held = bytearray()
        keep = True
        size = 0
        for chunk in chunks:
            size += len(chunk)
            self.add_size(len(chunk))
            self.ratio(path, size, compressed)
            if len(head) < HEAD:
                head += chunk[: HEAD - len(head)]
                if keep and not keep_all and len(head) >= 512 and detect(head) not in HOLD_TYPES:
                    keep = False
            if keep:
                held += chunk
        kind = detect(head)
        return kind, bytes(held) if keep and (keep_all or kind in HOLD_TYPES) else b""

    def child(self, path: str, name: str, kind: str | None, held: bytes, depth: int) -> None:
        if kind == "zip" and held:
            kind = _zip_kind(held)
        self.member(path, name, kind)
        if held and has_macros(held, kind):
            self.report.members[-1].macros = True
        if held and kind in ARCHIVE_TYPES:
            self.open(held, kind, path, depth + 1)


def _gunzipped_name(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".tgz"):
        return name[:-4] + ".tar"
    if lower.endswith(".gz"):
        return name[:-3]
    return name + ".out"


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return refine_zip(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError):
        return "zip"  # "zip file version 8.4" and the like: unreadable here, clamd still sees the bytes


def zip_kind(data: bytes) -> str:
    """apk, jar, docm, ... or zip, from the member names of a zip file."""
    return _zip_kind(data)


def inspect(data: bytes, kind: str, name: str, limits: ArchiveLimits) -> ArchiveReport:
    """Open an archive (``kind`` from ``filetypes.detect``) and whatever archives it holds."""
    walk = _Walk(limits)
    if kind not in ARCHIVE_TYPES:
        return walk.report
    try:
        walk.open(data, kind, name or "(archive)", 1)
    except _Bomb as exc:
        walk.report.bomb = str(exc)
    except RecursionError:
        walk.report.bomb = f"{name}: nested too deep"
    return walk.report
