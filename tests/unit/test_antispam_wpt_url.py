"""The web-platform-tests URL parsing cases (tests/data/wpt-url/urltestdata.json) against the host the antispam
stage checks for a link (``mailmoat_antispam.content.url_host``): the host a browser goes to.

Taken: every case whose input is an http, https or ftp URL read on its own, as a link in a mail is (no base
URL): its input, with leading and trailing C0 controls and spaces and every tab and newline removed (the
parser's first steps), starts with ``http:``, ``https:`` or ``ftp:`` (any case), and either it has no base,
or its base has another scheme, or the scheme is followed by two slashes or backslashes; in each of those the
base plays no part in the result. A case's expected host is its ``hostname`` without trailing dots (as
``url_host`` documents), and '' when the case expects a failure. Answers that differ are in ``EXCEPTIONS``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mailmoat_antispam.content import url_host

DATA = Path(__file__).resolve().parent.parent / "data" / "wpt-url" / "urltestdata.json"

_SCHEME = re.compile(r"(?i)(https?|ftp):")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_AUTHORITY = re.compile(r"[/\\]{2}")

EXCEPTIONS: dict[str, tuple[str, str]] = {}
"""Inputs whose host we answer differently: input -> (our host, why)."""


def _scheme(url: str | None) -> str | None:
    """The scheme (lower case) a URL string starts with when it is http, https or ftp."""
    if url is None:
        return None
    cleaned = url.strip(_C0_AND_SPACE).translate(str.maketrans("", "", "\t\n\r"))
    match = _SCHEME.match(cleaned)
    return match.group(1).lower() if match else None


def _standalone(case: dict[str, str | None]) -> bool:
    """The input is an http, https or ftp URL whose parse does not depend on the case's base."""
    input_ = str(case["input"])
    scheme = _scheme(input_)
    if scheme is None:
        return False
    base = case.get("base")
    if base is None or _scheme(base) != scheme:
        return True
    cleaned = input_.strip(_C0_AND_SPACE).translate(str.maketrans("", "", "\t\n\r"))
    return bool(_AUTHORITY.match(cleaned, len(scheme) + 1))


def _cases() -> list[dict[str, str | None]]:
    return [case for case in json.loads(DATA.read_text(encoding="utf-8"))
            if isinstance(case, dict) and _standalone(case)]


CASES = _cases()


def test_the_suite_has_its_special_scheme_cases() -> None:
    assert len(CASES) >= 300
    assert sum(1 for case in CASES if case.get("failure")) >= 100


@pytest.mark.parametrize("case", CASES, ids=[repr(case["input"])[:60] for case in CASES])
def test_link_host_is_the_browsers(case: dict[str, str | None]) -> None:
    input_ = str(case["input"])
    expected = "" if case.get("failure") else str(case["hostname"]).rstrip(".")
    if input_ in EXCEPTIONS:
        expected = EXCEPTIONS[input_][0]
    assert url_host(input_) == expected
