"""The members of archives inside attachments (pure, bounded), read with libarchive: zip, tar, 7z, rar,
and gzip/bzip2/xz (a compressed tar or a single compressed file).

Bounded by the anti-malware archive limits (``antimalware.archives``: nesting depth, members, expanded
size, compression ratio, all archives of one attachment together) and by the DLP part size limit: a
member larger than ``dlp.limits.max_part_size`` is skipped, an archive over the anti-malware limits
stops being read (``ArchiveLimit``). Members are streamed in libarchive's blocks and held only up to
the part size limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mailmoat_dlp.budget import Budget
from mailmoat_policy import ArchiveLimits

try:  # the system's libarchive (Debian: libarchive13)
    import libarchive
    from libarchive.exception import ArchiveError

    LIBARCHIVE = True
except (ImportError, OSError):  # pragma: no cover - depends on the machine
    LIBARCHIVE = False

    class ArchiveError(Exception):  # type: ignore[no-redef]
        pass


COMPRESSED = frozenset({"gzip", "bz2", "xz"})
ARCHIVES = frozenset({"zip", "tar", "7z", "rar"}) | COMPRESSED


class ArchiveLimit(Exception):
    """An archive went over the anti-malware archive limits; the message says which."""


class Unopenable(Exception):
    """An archive libarchive could not read (corrupt, encrypted, not installed)."""


@dataclass
class Tally:
    """What all archives of one attachment have used of the limits so far."""

    limits: ArchiveLimits
    members: int = 0
    expanded: int = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveLimit(f"more than {self.limits.max_members} archive members "
                               "(antimalware.archives.max_members)")

    def grow(self, size: int) -> None:
        self.expanded += size
        if self.expanded > self.limits.max_total_size:
            raise ArchiveLimit(f"expands to more than {self.limits.max_total_size} bytes "
                               "(antimalware.archives.max_total_size)")


def _stripped(name: str) -> str:
    for suffix in (".gz", ".tgz", ".bz2", ".xz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + (".tar" if suffix == ".tgz" else "")
    return name + ".out"


def members(data: bytes, kind: str, name: str, path: str, tally: Tally, budget: Budget
            ) -> Iterator[tuple[str, bytes]]:
    """``(member path, bytes)`` of the regular files of one archive named ``name`` shown as ``path`` (not of
    the archives inside it: the caller opens those, one level deeper). Members above the part size limit
    are noted and skipped."""
    if not LIBARCHIVE:
        raise Unopenable("libarchive is not installed")
    try:
        yield from _read(data, path, tally, budget)
    except ArchiveError as exc:
        if kind in COMPRESSED and "unrecognized archive format" in str(exc).lower():
            yield from _raw(data, _stripped(name.rsplit("/", 1)[-1]), path, tally, budget)
            return
        raise Unopenable(_reason(exc)) from None


def _raw(data: bytes, inner: str, path: str, tally: Tally, budget: Budget) -> Iterator[tuple[str, bytes]]:
    """The one file a compressed file holds (gzip, bzip2, xz without tar), named ``inner``."""
    try:
        yield from _read(data, path, tally, budget, inner=inner)
    except ArchiveError as exc:
        raise Unopenable(_reason(exc)) from None


def _reason(exc: Exception) -> str:
    message = str(getattr(exc, "msg", "") or exc).split(" (errno=")[0]
    return "encrypted" if "encrypt" in message.lower() or "passphrase" in message.lower() else message


def _read(data: bytes, path: str, tally: Tally, budget: Budget, *, inner: str | None = None
          ) -> Iterator[tuple[str, bytes]]:
    options = {"format_name": "raw"} if inner is not None else {}
    limits = tally.limits
    with libarchive.memory_reader(data, **options) as archive:
        for entry in archive:
            if not entry.isfile:
                continue
            budget.check_time()
            tally.member()
            name = inner if inner is not None else (entry.pathname or "(unnamed)")
            member_path = f"{path}/{name}"
            declared = entry.size or 0
            if declared > budget.limits.max_part_size:
                budget.note(f"{member_path}: {declared} bytes, not read (dlp.limits.max_part_size)")
                continue
            held = bytearray()
            size = 0
            too_big = False
            for block in entry.get_blocks():
                tally.grow(len(block))
                size += len(block)
                if size > limits.min_ratio_size and size > limits.max_ratio * max(len(data), 1):
                    raise ArchiveLimit(f"{member_path}: compression ratio above {limits.max_ratio} "
                                       "(antimalware.archives.max_ratio)")
                if too_big:
                    continue
                held += block
                if len(held) > budget.limits.max_part_size:
                    too_big = True
                    held = bytearray()
            if too_big:
                budget.note(f"{member_path}: more than {budget.limits.max_part_size} bytes, not read "
                            "(dlp.limits.max_part_size)")
                continue
            yield member_path, bytes(held)


__all__ = ["ARCHIVES", "LIBARCHIVE", "ArchiveLimit", "Tally", "Unopenable", "members"]
