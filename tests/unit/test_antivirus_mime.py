"""Walking every MIME part of a message, transfer-decoded, without changing the message."""

from __future__ import annotations

from mailmoat_antivirus.mime import uudecode_blocks, walk
from mailmoat_mail import mimeedit
from tests.support.attachments import message, mz_executable, uuencode

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def test_base64_quoted_printable_uuencode_and_plain_parts_are_decoded() -> None:
    raw = message([
        ("a.bin", "application/octet-stream", EICAR, "base64"),
        ("b.txt", "text/plain", EICAR, "quoted-printable"),
        ("c.exe", "application/octet-stream", mz_executable(), "x-uuencode"),
        ("d.txt", "text/plain", b"plain words\r\n", "7bit"),
    ])
    parts = walk(raw)
    by_name = {p.filename: p for p in parts}
    assert by_name["a.bin"].payload == EICAR and by_name["a.bin"].attachment
    assert by_name["b.txt"].payload == EICAR
    assert by_name["c.exe"].payload == mz_executable()
    assert by_name["d.txt"].payload.startswith(b"plain words")
    assert parts[0].filename is None and not parts[0].attachment and parts[0].path == "1.1"


def test_message_rfc822_attachments_are_walked_recursively() -> None:
    inner = message([("eicar.com", "application/octet-stream", EICAR, "base64")], boundary="inner")
    outer = message([("fwd.eml", "message/rfc822", inner, "rfc822")], boundary="outer")
    double = message([("fwd.eml", "message/rfc822", outer, "rfc822")], boundary="top")
    parts = walk(double)
    assert [p.payload for p in parts if p.filename == "eicar.com"] == [EICAR]
    (eicar,) = [p for p in parts if p.filename == "eicar.com"]
    assert eicar.path.count(".") >= 5  # top > attached > its part > attached > its part


def test_uuencoded_block_inside_a_text_body() -> None:
    body = b"See the file below.\r\n\r\n" + b"\r\n".join(uuencode(EICAR, "eicar.com")) + b"\r\n\r\nBye\r\n"
    assert uudecode_blocks(body) == [("eicar.com", EICAR)]
    parts = walk(message(body=body))
    assert [(p.filename, p.payload) for p in parts if p.path.endswith(".uu1")] == [("eicar.com", EICAR)]


def test_single_part_and_broken_input_do_not_raise() -> None:
    parts = walk(b"Subject: x\r\n\r\nhello\r\n")
    assert len(parts) == 1 and parts[0].payload == b"hello\r\n"
    broken = (b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              b"!!!not base64@@@\r\n")
    assert len(walk(broken)) >= 1
    assert [p.payload for p in walk(b"")] in ([], [b""])


def test_part_count_is_bounded() -> None:
    raw = message([(f"f{i}.txt", "text/plain", b"x", "7bit") for i in range(50)])
    assert len(walk(raw, max_parts=10)) == 10


def test_walking_leaves_the_bytes_alone() -> None:
    raw = message([("a.bin", "application/octet-stream", EICAR, "base64")])
    copy = bytes(raw)
    walk(raw)
    assert raw == copy


def test_strip_paths_are_the_part_paths_mimeedit_finds() -> None:
    """The verdict's strip paths and the byte-level editor in routing number parts alike."""
    inner = message([("e.com", "application/octet-stream", b"x" * 40, "base64")], boundary="inner")
    raws = [
        message([("a.txt", "text/plain", b"a", "7bit"), ("b.bin", "application/octet-stream", b"b" * 100, "base64")]),
        message([("fwd.eml", "message/rfc822", inner, "rfc822"), ("c.txt", "text/plain", b"c", "quoted-printable")],
              boundary="outer"),
        b"Subject: plain\r\n\r\nno parts\r\n",
    ]
    for raw in raws:
        edit_paths = {span.path for span in mimeedit.flatten(mimeedit.parts(raw))}
        leaves = walk(raw)
        assert leaves and all(leaf.strip_path in edit_paths for leaf in leaves), (edit_paths, leaves)


FROGS = (b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n"
         b"--BB\r\nContent-Type: text/plain\r\n\r\nhi\r\n--BB\r\nContent-Type: text/plain\r\n"
         b"Content-Disposition: attachment; filename=\"Fr\xf6sche.txt\"\r\n\r\nfrog\r\n--BB--\r\n")


def test_raw_8bit_file_name_is_walked() -> None:
    """Issue 13: ``filename="Fr\\xf6sche.txt"`` made the stage raise ``'Header' object has no attribute 'split'``."""
    parts = walk(FROGS)
    assert [(p.path, p.filename, p.attachment) for p in parts] == [("1.1", None, False),
                                                                   ("1.2", "Fr\u00f6sche.txt", True)]


def test_nesting_beyond_the_limit_is_reported_not_raised() -> None:
    from mailmoat_antivirus.mime import walk_message
    from tests.unit.test_mimeparts import nested

    assert walk_message(nested(100)).too_deep is None
    for depth in (200, 3000):
        walked = walk_message(nested(depth))
        assert walked.too_deep is not None


def test_too_many_parts_is_reported() -> None:
    from mailmoat_antivirus.mime import walk_message

    raw = message([(f"f{i}.txt", "text/plain", b"x", "7bit") for i in range(20)])
    assert walk_message(raw, max_parts=10).too_many
    assert not walk_message(raw).too_many


def test_a_part_whose_transfer_encoding_has_a_trailing_space_is_still_decoded() -> None:
    """``Content-Transfer-Encoding: base64 ``: the library took the encoding for an unknown one and gave the
    base64 text, so an executable named ``.txt`` passed the true-type filter (and clamd saw text); mail
    programs decode it."""
    raw = message([("report.txt", "application/octet-stream", mz_executable(), "base64")])
    spaced = raw.replace(b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: base64 \t\r\n")
    assert spaced != raw
    assert [p.payload for p in walk(spaced) if p.filename == "report.txt"] == [mz_executable()]
