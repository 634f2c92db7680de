"""flanker's DKIM canonicalisation tests (tests/data/flanker/dkim/): the signer's relaxed body
canonicalisation (its own code, ``dkimsign.relaxed_body``) and relaxed header fields against the expected
forms, each message taken as an MTA submits it (CRLF line ends; a bare CR stays)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat_mail.dkimsign import _RELAXED, relaxed_body, split_message

DATA = Path(__file__).resolve().parent.parent / "data" / "flanker" / "dkim"
CASES = sorted(path.name.rsplit(".", 1)[1] for path in DATA.glob("relaxed.expected.*"))


def test_the_cases_are_there() -> None:
    assert len(CASES) == 20


@pytest.mark.parametrize("case", CASES)
def test_relaxed_canonical_form(case: str) -> None:
    data = (DATA / f"email.{case}").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parsed = split_message(data)
    assert parsed is not None, (DATA / f"purpose.{case}").read_text()
    fields, body = parsed
    head = b"".join(name + b":" + value for name, value in _RELAXED.canonicalize_headers(list(fields)))
    assert head + b"\r\n" + relaxed_body(body) == (DATA / f"relaxed.expected.{case}").read_bytes(), \
        (DATA / f"purpose.{case}").read_text()
