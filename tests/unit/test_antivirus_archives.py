"""Archives opened recursively within limits; bombs flagged from headers and streams, in bounded memory."""

from __future__ import annotations

import gzip
import io
import time
import tracemalloc
import zipfile

import pytest

from mailmoat_antivirus.archives import inspect
from mailmoat_policy import ArchiveLimits
from tests.support.attachments import mz_executable, nested_zip, ratio_bomb, tar_of, zip_of


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return ratio_bomb(200 * 1024 * 1024)


def test_members_and_their_true_types_through_zip_tar_and_gzip() -> None:
    inner_tgz = gzip.compress(tar_of([("bin/tool", b"\x7fELF" + b"\0" * 60), ("doc.txt", b"words")]))
    data = zip_of([("a.txt", b"hello"), ("setup.pdf", mz_executable()), ("src.tgz", inner_tgz)])
    report = inspect(data, "zip", "att.zip", ArchiveLimits())
    kinds = {m.path: m.kind for m in report.members}
    assert kinds["att.zip/a.txt"] is None
    assert kinds["att.zip/setup.pdf"] == "exe"
    assert kinds["att.zip/src.tgz"] == "gzip"
    assert kinds["att.zip/src.tgz/src.tar"] == "tar"
    assert kinds["att.zip/src.tgz/src.tar/bin/tool"] == "elf"
    assert report.bomb is None and report.encrypted == [] and report.errors == []


def test_zip_in_zip_within_the_depth_limit_is_opened() -> None:
    data = nested_zip(mz_executable(), "deep.exe", 4)
    report = inspect(data, "zip", "att.zip", ArchiveLimits(max_depth=5))
    assert report.bomb is None
    assert [m.kind for m in report.members if m.name == "deep.exe"] == ["exe"]


def test_deep_nesting_is_a_bomb() -> None:
    data = nested_zip(b"payload", "x.txt", 30)
    started = time.perf_counter()
    report = inspect(data, "zip", "att.zip", ArchiveLimits(max_depth=5))
    assert report.bomb is not None and "deeper than 5" in report.bomb
    assert time.perf_counter() - started < 2


def test_high_ratio_zip_is_flagged_fast_in_bounded_memory(bomb: bytes) -> None:
    assert len(bomb) < 2_000_000  # 200 MiB of zeros in under 2 MB
    tracemalloc.start()
    started = time.perf_counter()
    report = inspect(bomb, "zip", "bomb.zip", ArchiveLimits())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.bomb is not None and "compression ratio" in report.bomb
    assert elapsed < 2 and peak < 5 * 1024 * 1024


def test_a_bomb_whose_headers_lie_is_caught_while_streaming(bomb: bytes) -> None:
    # Only the total size limit: the ratio is allowed, the stream is counted as it is read.
    limits = ArchiveLimits(max_ratio=100_000, max_total_size=50 * 1024 * 1024)
    tracemalloc.start()
    report = inspect(bomb, "zip", "bomb.zip", limits)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.bomb is not None and "more than" in report.bomb
    assert peak < 5 * 1024 * 1024


def test_gzip_bomb_is_flagged_while_decompressing() -> None:
    data = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=1)
    tracemalloc.start()
    report = inspect(data, "gzip", "zeros.gz", ArchiveLimits())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.bomb is not None and "compression ratio" in report.bomb
    assert peak < 5 * 1024 * 1024


def test_member_count_limit() -> None:
    data = zip_of([(f"f{i}.txt", b"x") for i in range(50)])
    assert inspect(data, "zip", "many.zip", ArchiveLimits(max_members=20)).bomb == "more than 20 archive members"
    assert inspect(data, "zip", "many.zip", ArchiveLimits(max_members=50)).bomb is None


def test_small_highly_compressible_members_are_not_held_to_the_ratio() -> None:
    data = zip_of([("log.txt", b"a" * 500_000)])
    assert inspect(data, "zip", "logs.zip", ArchiveLimits()).bomb is None


def test_encrypted_zip_member_is_reported() -> None:
    data = bytearray(zip_of([("secret.txt", b"hidden"), ("open.txt", b"visible")], compression=zipfile.ZIP_STORED))
    # Set the "encrypted" flag of the first member in its local and central headers.
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 6] |= 1
    data[central + 8] |= 1
    report = inspect(bytes(data), "zip", "x.zip", ArchiveLimits())
    assert report.encrypted == ["x.zip/secret.txt"]
    assert {m.name for m in report.members} == {"secret.txt", "open.txt"}


def test_corrupt_archives_are_errors_not_crashes() -> None:
    report = inspect(b"PK\x03\x04garbage", "zip", "bad.zip", ArchiveLimits())
    assert report.errors and report.bomb is None
    report = inspect(b"\x1f\x8b\x08\x00garbage", "gzip", "bad.gz", ArchiveLimits())
    assert report.errors and report.bomb is None
    assert inspect(b"not an archive", "pdf", "x.pdf", ArchiveLimits()).members == []


def test_a_member_without_a_name_is_read_like_any_other() -> None:
    """``ZipInfo.is_dir`` indexes the name: a member without one made the stage fail on the message."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), mz_executable())
        archive.writestr("dir/", b"")
    report = inspect(out.getvalue(), "zip", "att.zip", ArchiveLimits())
    assert [(m.path, m.kind) for m in report.members] == [("att.zip/", "exe")]
    assert report.errors == [] and report.bomb is None
