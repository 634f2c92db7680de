"""Other implementations' MTA-STS test cases (tests/data/mta-sts/cases.json: postfix-mta-sts-resolver and
mailauth, with the examples of RFC 8461) run through egress's own parsers and matcher.

- ``txt``: the ``_mta-sts`` TXT records of a domain and the policy id they give (``txt_id``), or none
  (no record, or a record RFC 8461 3.1 makes us ignore: the domain is then without MTA-STS);
- ``policy``: a policy file and what ``parse_policy`` makes of it (refused: ``PolicyError``);
- ``mx``: whether an MX host matches a policy's ``mx`` patterns (``mx_matches``, RFC 8461 4.1);
- ``content_type``: whether the ``Content-Type`` of the policy's HTTPS answer is ``text/plain`` as
  ``fetch_policy`` reads it (aiohttp's parse of the header, then the media type compared).

Where a vector's expected answer is not RFC 8461's, we give the RFC's; where we deliberately give another
answer, it is in ``EXCEPTIONS`` with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.helpers import parse_content_type

from mailmoat_egress.mtasts import PolicyError, StsPolicy, mx_matches, parse_policy, txt_id

DATA = json.loads((Path(__file__).resolve().parent.parent / "data" / "mta-sts" / "cases.json").read_text("utf-8"))

_TXT_ABNF = ("RFC 8461 3.1: the record is 'v=STSv1' then fields each after a delimiter of *WSP ';' *WSP, and at most "
             "one delimiter at the end; a syntactically invalid record MUST be taken as no policy")

_SLIPS = (_TXT_ABNF + "; white space after the last field and empty fields are read past, as postfix-mta-sts-"
          "resolver and mailauth's lax mode read them: the record's meaning is plain, and taking it as no policy "
          "would drop the domain's enforce policy for a slip (services/egress/txtrecord.py)")
EXCEPTIONS: dict[str, tuple[Any, str]] = {
    "txt-42": ("abc", _SLIPS),
    "txt-43": ("abc", _SLIPS),
    "policy-31": (None, "RFC 8461 3.2: every line of the policy is a field 'name: value'; a line without ':' makes "
                        "the policy invalid (refused, as a policy with any other syntax error)"),
    "policy-47": ("valid", "the absolute form of the MX name (one trailing dot) is taken as the name: the domain's "
                           "policy is enforced rather than dropped for it; two dots are refused"),
    "mx-10": (False, "MX names come from DNS, never with white space; an MX host that is no DNS name matches nothing"),
    "mx-15": (False, "MX names come from DNS as A-labels (RFC 5890); a U-label name matches nothing (fail closed)"),
    "mx-16": (False, "MX names come from DNS as A-labels (RFC 5890); a U-label name matches nothing (fail closed)"),
}
"""Cases whose answer is not the vector's: ``<section>-<index>`` -> (our answer, why)."""


def _cases(section: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{section}-{index}", case) for index, case in enumerate(DATA[section])]


def _ids(cases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [key for key, _ in cases]


TXT, POLICY, MX, CONTENT_TYPE = (_cases(s) for s in ("txt", "policy", "mx", "content_type"))


def our_txt(records: list[str]) -> str | None:
    """The policy id the records give, None when the domain is taken as without MTA-STS (``lookup``)."""
    try:
        return txt_id(records)
    except PolicyError:
        return None


def policy_summary(policy: StsPolicy) -> dict[str, Any]:
    return {"mode": policy.mode, "max_age": policy.max_age, "mx": sorted(set(policy.mx))}


def test_every_section_is_loaded() -> None:
    assert (len(TXT), len(POLICY), len(MX), len(CONTENT_TYPE)) == (56, 55, 22, 12)
    assert {c["source"].split(":")[0].split(" ")[0] for _, c in TXT + POLICY + MX + CONTENT_TYPE} == {
        "snawoot", "mailauth-txt", "mailauth-policy", "mailauth-mx", "RFC"}


def test_the_exceptions_are_exact() -> None:
    """Each exception names a case whose vector expects the other answer."""
    cases = dict(TXT + POLICY + MX)
    for key, (ours, reason) in EXCEPTIONS.items():
        case = cases[key]
        assert reason
        if key.startswith("txt"):
            assert case["id"] != ours, key
        elif key.startswith("policy"):
            assert case["valid"] != (ours == "valid"), key
        else:
            assert case["match"] != ours, key


@pytest.mark.parametrize(("key", "case"), TXT, ids=_ids(TXT))
def test_txt_record(key: str, case: dict[str, Any]) -> None:
    expected = EXCEPTIONS[key][0] if key in EXCEPTIONS else case["id"]
    assert our_txt(case["records"]) == expected, case


@pytest.mark.parametrize(("key", "case"), POLICY, ids=_ids(POLICY))
def test_policy_file(key: str, case: dict[str, Any]) -> None:
    valid = EXCEPTIONS[key][0] == "valid" if key in EXCEPTIONS else case["valid"]
    if not valid:
        with pytest.raises(PolicyError):
            parse_policy(case["text"])
        return
    policy = parse_policy(case["text"])
    if key in EXCEPTIONS:
        return
    assert policy_summary(policy) == {k: case[k] for k in ("mode", "max_age", "mx")}


@pytest.mark.parametrize(("key", "case"), MX, ids=_ids(MX))
def test_mx_pattern(key: str, case: dict[str, Any]) -> None:
    expected = EXCEPTIONS[key][0] if key in EXCEPTIONS else case["match"]
    assert any(mx_matches(pattern, case["host"]) for pattern in case["patterns"]) == expected, case
    policy = StsPolicy("enforce", 86400, tuple(p.lower() for p in case["patterns"]))
    assert policy.allows(case["host"]) == expected


@pytest.mark.parametrize(("key", "case"), CONTENT_TYPE, ids=_ids(CONTENT_TYPE))
def test_content_type(key: str, case: dict[str, Any]) -> None:
    assert (parse_content_type(case["value"])[0] == "text/plain") == case["plain"]
