"""How much of a message the parser reads (``MAX_PARTS`` entities), and the bound counted off its bytes."""

from __future__ import annotations

import email
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.targets.mime_parts import entities, shape
from mailmoat_mail import mimeedit, mimeparts
from services.antivirus import mime
from tests.support.hostile import cases

PART = b"--b\r\n\r\nx\r\n"


def tiny_parts(count: int) -> bytes:
    return b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + PART * count + b"--b--\r\n"


def status_blocks(count: int) -> bytes:
    return (b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + b"X: y\r\n\r\n" * count + b"--b--\r\n")


@pytest.mark.parametrize("raw", [tiny_parts(5 * mimeparts.MAX_PARTS), status_blocks(5 * mimeparts.MAX_PARTS)],
                         ids=["tiny-parts", "status-blocks"])
def test_the_parser_stops_after_max_parts(raw: bytes) -> None:
    parsed = mimeparts.parse(raw)
    assert mimeparts.too_many(parsed)
    # It stops within the chunk of input it was fed when the count went over.
    assert mimeparts.MAX_PARTS < entities(parsed) <= mimeparts.MAX_PARTS + 8192 // 7 + 2


@pytest.mark.parametrize("count", [1, 10, 4_000])
def test_the_limit_counts_every_entity(count: int) -> None:
    raw = tiny_parts(count)  # count parts and the multipart holding them
    whole = mimeparts.parse(raw, count + 1)
    assert not mimeparts.too_many(whole)
    assert entities(whole) == count + 1
    assert whole.as_bytes() == mimeparts.parse(raw, 10 * count).as_bytes()
    assert mimeparts.too_many(mimeparts.parse(raw, count))


def test_the_rest_of_the_message_is_left_out_not_misread() -> None:
    parsed = mimeparts.parse(tiny_parts(3 * mimeparts.MAX_PARTS) + b"never read\r\n")
    assert b"never read" not in parsed.as_bytes()


def test_antivirus_cannot_scan_what_the_parser_left_out() -> None:
    walked = mime.walk_message(tiny_parts(3 * mimeparts.MAX_PARTS), max_parts=10 * mimeparts.MAX_PARTS)
    assert walked.too_many
    assert len(walked.parts) < 2 * mimeparts.MAX_PARTS


def test_the_editor_reads_as_many_parts_as_the_parser() -> None:
    tree = mimeedit.parts(tiny_parts(3 * mimeparts.MAX_PARTS))
    assert len(mimeedit.flatten(tree)) == mimeparts.MAX_PARTS
    assert mimeedit.MAX_PARTS == mimeparts.MAX_PARTS


def test_no_bound_for_status_blocks() -> None:
    assert mimeparts.entity_bound(status_blocks(3)) is None
    assert mimeparts.entity_bound(status_blocks(3).replace(b"delivery-status", b"DELIVERY-Status")) is None


def assert_bounded(raw: bytes) -> None:
    bound = mimeparts.entity_bound(raw)
    if bound is not None:
        assert entities(mimeparts.parse(raw, 10**9)) <= bound, raw[:300]


LINES = [b"--b", b"--b--", b"--c", b"--c--", b"", b"x", b"-- ", b"Content-Type: multipart/mixed; boundary=b",
         b"Content-Type: multipart/mixed; boundary=c", b"Content-Type: multipart/digest; boundary=c",
         b"Content-Type: Message/RFC822", b"content-type: message/partial", b"Content-Type: message/rfc822 x",
         b"Content-Type: text/plain", b"Subject: s", b" folded"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=60), st.lists(st.sampled_from([b"\r\n", b"\n", b"\r"]), min_size=1))
def test_the_bound_holds_for_any_structure(lines: list[bytes], ends: list[bytes]) -> None:
    assert_bounded(b"".join(line + ends[i % len(ends)] for i, line in enumerate(lines)))


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.name)
def test_the_bound_holds_for_the_hostile_corpus(case) -> None:
    assert_bounded(case.data)
    parsed = mimeparts.parse(case.data)
    if not mimeparts.too_many(parsed) and not mimeparts.too_deep(parsed):  # read as the library reads it
        assert shape(parsed) == shape(email.message_from_bytes(case.data, policy=mimeparts.POLICY))


def test_the_bound_holds_for_the_shared_corpus(corpus_dir: Path) -> None:
    files = sorted(p for p in corpus_dir.rglob("*") if p.is_file()) if corpus_dir.is_dir() else []
    if not files:
        pytest.skip("no ../shared/corpus beside the repository")
    for path in files:
        assert_bounded(path.read_bytes())
