"""Maildir delivery of the development mailbox: folder names, prepended headers, the Maildir protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat_devmailbox.maildir import deliver, delivery_headers, folder_name, unique_name


@pytest.mark.parametrize(
    ("address", "folder"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("<bob@example.com>", "bob@example.com"),
        ("../../etc/passwd@x", "_.._etc_passwd@x"),
        ("a/b\\c@x", "a_b_c@x"),
        ("..", "postmaster"),
        ("", "postmaster"),
        ("tab\there@x", "tab_here@x"),
    ],
)
def test_folder_name_is_one_safe_path_component(address: str, folder: str) -> None:
    assert folder_name(address) == folder
    assert "/" not in folder_name(address) and folder_name(address) not in (".", "..")


def test_delivery_headers_as_a_local_delivery_writes_them() -> None:
    assert delivery_headers("alice@example.com", "s@example.org") == (
        b"Return-Path: <s@example.org>\r\nDelivered-To: alice@example.com\r\n"
    )
    assert delivery_headers("alice@example.com", "").startswith(b"Return-Path: <>\r\n")


def test_deliver_writes_new_file_with_exact_bytes(tmp_path: Path) -> None:
    data = b"Subject: x\r\n\r\nbody \xff\x00 bytes\r\n.\r\nno final newline"
    path = deliver(tmp_path, "Alice@Example.com", "s@example.org", data)
    assert path.parent == tmp_path / "alice@example.com" / "new"
    assert path.read_bytes() == delivery_headers("Alice@Example.com", "s@example.org") + data
    assert sorted(p.name for p in (tmp_path / "alice@example.com").iterdir()) == ["cur", "new", "tmp"]
    assert list((tmp_path / "alice@example.com" / "tmp").iterdir()) == []


def test_every_delivery_gets_its_own_file(tmp_path: Path) -> None:
    paths = {deliver(tmp_path, "a@x", "s@y", b"m\r\n") for _ in range(50)}
    assert len(paths) == 50
    assert len({unique_name() for _ in range(1000)}) == 1000


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "a@x").mkdir()
    (tmp_path / "a@x" / "new").write_text("not a directory")
    with pytest.raises(OSError):
        deliver(tmp_path, "a@x", "s@y", b"m\r\n")
    assert list((tmp_path / "a@x" / "tmp").iterdir()) == []
