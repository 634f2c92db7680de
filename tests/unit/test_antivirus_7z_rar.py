"""7z and rar archives through libarchive: members, true types, limits, encryption, in bounded memory."""

from __future__ import annotations

import io
import time
import tracemalloc

import py7zr
import pytest

from mailmoat_antivirus.archives import inspect
from mailmoat_antivirus.filetypes import detect
from mailmoat_policy import ArchiveLimits
from tests.support.attachments import mz_executable, zip_of
from tests.support.clamd import TESTFILES
from tests.support.office import ole_doc, rar4_stored, sevenzip, zeros


@pytest.fixture(scope="module")
def big_bomb() -> bytes:
    """120 MiB of zeros in a 7z of a few KB (more than the default 100 MiB budget)."""
    return sevenzip([("zeros.bin", zeros(120 << 20), 120 << 20)])


def encrypted_7z(header_encryption: bool) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password="secret", header_encryption=header_encryption) as archive:
        archive.writestr(b"secret words " * 50, "secret.txt")
    return buffer.getvalue()


def test_7z_members_true_types_and_nested_archives() -> None:
    inner = zip_of([("tool.exe", mz_executable())])
    data = sevenzip([("a.txt", b"hello", 5), ("setup.pdf", mz_executable(), len(mz_executable())),
                     ("inner.zip", inner, len(inner)), ("m.doc", ole_doc(True), len(ole_doc(True)))])
    assert detect(data) == "7z"
    report = inspect(data, "7z", "att.7z", ArchiveLimits())
    kinds = {m.path: m.kind for m in report.members}
    assert kinds == {"att.7z/a.txt": None, "att.7z/setup.pdf": "exe", "att.7z/inner.zip": "zip",
                     "att.7z/inner.zip/tool.exe": "exe", "att.7z/m.doc": "ole"}
    assert [m.path for m in report.members if m.macros] == ["att.7z/m.doc"]
    assert report.bomb is None and report.encrypted == [] and report.errors == []
    assert report.extracted == []  # the engine opens 7z itself


def test_clamav_7z_test_file_member_is_found() -> None:
    path = TESTFILES / "clam.7z"
    if not path.exists():
        pytest.skip("clamav-testfiles is not installed")
    report = inspect(path.read_bytes(), "7z", "clam.7z", ArchiveLimits())
    assert [(m.name, m.kind) for m in report.members] == [("clam.exe", "exe")]


def test_7z_declaring_more_than_the_budget_is_a_bomb_before_any_reading(big_bomb: bytes) -> None:
    assert len(big_bomb) < 100_000
    tracemalloc.start()
    started = time.perf_counter()
    report = inspect(big_bomb, "7z", "bomb.7z", ArchiveLimits())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.bomb is not None and "declares" in report.bomb
    assert report.expanded == 0 and elapsed < 2 and peak < 5 * 1024 * 1024


def test_7z_high_ratio_member_is_a_bomb() -> None:
    data = sevenzip([("zeros.bin", zeros(8 << 20), 8 << 20)])
    report = inspect(data, "7z", "bomb.7z", ArchiveLimits())
    assert report.bomb is not None and "compression ratio" in report.bomb


def test_7z_streaming_limit_when_headers_fit_one_by_one() -> None:
    # Three 2 MiB members against a 5 MiB budget: the third is refused from its header, after the
    # first two were streamed through without being held (they are not archives).
    data = sevenzip([(f"part{i}.bin", zeros(2 << 20), 2 << 20) for i in range(3)])
    report = inspect(data, "7z", "big.7z", ArchiveLimits(max_total_size=5 << 20, max_ratio=1_000_000))
    assert report.bomb is not None and "part2.bin" in report.bomb
    assert report.expanded == 4 << 20


def test_7z_member_count_and_depth_limits() -> None:
    many = sevenzip([(f"f{i}.txt", b"x", 1) for i in range(30)])
    assert "more than 20" in (inspect(many, "7z", "m.7z", ArchiveLimits(max_members=20)).bomb or "")
    data = b"payload"
    for level in range(4):
        data = sevenzip([(f"level{level}", data, len(data))])
    assert inspect(data, "7z", "d.7z", ArchiveLimits(max_depth=4)).bomb is None
    assert "deeper than 3" in (inspect(data, "7z", "d.7z", ArchiveLimits(max_depth=3)).bomb or "")


@pytest.mark.parametrize("header_encryption", [False, True])
def test_encrypted_7z_is_reported_encrypted(header_encryption: bool) -> None:
    report = inspect(encrypted_7z(header_encryption), "7z", "secret.7z", ArchiveLimits())
    assert report.encrypted and report.bomb is None
    if header_encryption:
        assert report.encrypted == ["secret.7z"]
    else:
        assert report.encrypted == ["secret.7z/secret.txt"]


def test_rar_members_are_typed_and_extracted_for_the_engine() -> None:
    data = rar4_stored([("readme.txt", b"hello"), ("invoice.pdf", mz_executable())])
    assert detect(data) == "rar"
    report = inspect(data, "rar", "att.rar", ArchiveLimits())
    assert [(m.name, m.kind) for m in report.members] == [("readme.txt", None), ("invoice.pdf", "exe")]
    assert report.extracted == [("att.rar/readme.txt", b"hello"), ("att.rar/invoice.pdf", mz_executable())]


def test_rar_inside_zip_is_opened() -> None:
    data = zip_of([("inner.rar", rar4_stored([("x.exe", mz_executable())]))])
    report = inspect(data, "zip", "att.zip", ArchiveLimits())
    assert ("att.zip/inner.rar/x.exe", "exe") in [(m.path, m.kind) for m in report.members]


def test_rar_encrypted_member_and_declared_bomb() -> None:
    report = inspect(rar4_stored([("s.txt", b"hidden")], encrypted=True), "rar", "s.rar", ArchiveLimits())
    assert report.encrypted == ["s.rar/s.txt"] and report.extracted == []
    report = inspect(rar4_stored([("z.bin", b"\0" * 100)], declared=10**9), "rar", "z.rar", ArchiveLimits())
    assert report.bomb is not None and "declares 1000000000" in report.bomb


def test_corrupt_7z_and_rar_are_errors_not_crashes() -> None:
    data = sevenzip([("a.txt", b"hello" * 1000, 5000)])
    assert inspect(data[: len(data) // 2], "7z", "cut.7z", ArchiveLimits()).errors
    assert inspect(b"Rar!\x1a\x07\x00" + b"\xff" * 50, "rar", "bad.rar", ArchiveLimits()).errors
