"""The Public Suffix List's own test set (tests/data/psl/) against DMARC's organisational domain (RFC 7489
3.2), in the form written and as the A-labels the DMARC look-up asks DNS for. Where the set says ``null`` (a
public suffix), the organisational domain is the name itself, as ``organizational_domain`` documents;
the lines with a leading dot name no domain and are the parser's business (``dns_name`` refuses them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailmoat_antispam.auth.dmarc import organizational_domain
from mailmoat_mail.author import dns_name

SUITE = Path(__file__).resolve().parent.parent / "data" / "psl" / "test_psl.txt"
_CHECK = re.compile(r"^checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);$")


def _cases() -> list[tuple[str, str | None]]:
    out = []
    for line in SUITE.read_text(encoding="utf-8").splitlines():
        match = _CHECK.match(line.strip())
        if match and match[1] != "null":
            out.append((match[1][1:-1], None if match[2] == "null" else match[2][1:-1]))
    return out


CASES = _cases()


def test_the_set_is_there() -> None:
    assert len(CASES) >= 70


@pytest.mark.parametrize(("name", "registrable"), CASES)
def test_organizational_domain(name: str, registrable: str | None) -> None:
    if name.startswith("."):
        assert dns_name(name) == ""
        return
    assert organizational_domain(name) == (registrable or name.lower())
    labels = dns_name(name)
    assert labels and organizational_domain(labels) == dns_name(registrable or name)
