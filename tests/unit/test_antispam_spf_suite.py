"""The RFC 7208 test suite (openspf.org, 2014.04, 203 scenarios) against our SPF evaluator, its zone data
served as a record table through the resolver interface."""

from __future__ import annotations

import pytest

from mailmoat_antispam.auth.spf import DEFAULT_EXPLANATION, check_spf
from tests.support.spfsuite import SpfCase, TableResolver, load_cases

CASES = load_cases()


def test_the_whole_suite_is_loaded() -> None:
    assert len(CASES) == 203


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rfc7208(case: SpfCase) -> None:
    resolver = TableResolver(case.zone)
    result = await check_spf(resolver, case.host, case.mailfrom, case.helo, receiver=case.receiver or "unknown")
    assert result.result in case.results, result.reason
    if case.explanation is not None and result.result == "fail":
        # The suite writes IPv6 nibbles in the case of its host field; RFC 7208 7.4 expands them in lower case.
        if "ip6.arpa" in case.explanation:
            assert result.explanation.lower() == case.explanation.lower()
        elif case.explanation == "DEFAULT":  # the suite's name for the receiver's own default text
            assert result.explanation == DEFAULT_EXPLANATION
        else:
            assert result.explanation == case.explanation


# Beyond the suite: numbers of any length, as a sender may publish them. Python refuses int() of a
# string over 4,300 digits; such a record must get the RFC's answer, not an internal error.
LONG = "1" * 5000


@pytest.mark.parametrize(("record", "result", "asked"), [
    (f"v=spf1 ip4:192.0.2.1/{LONG} -all", "permerror", None),  # 4.6.4: a bad prefix length
    (f"v=spf1 ip6:2001:db8::1/{LONG} -all", "permerror", None),
    (f"v=spf1 a/{LONG} -all", "permerror", None),
    # 7.3: a transformer asking for more labels than there are takes them all
    (f"v=spf1 a:%{{d{LONG}}}.example.com -all", "fail", "evil.test.example.com"),
    (f"v=spf1 exists:%{{l{LONG}r}}.x.example.com -all", "fail", "a.x.example.com"),
    ("v=spf1 exists:%{d0002}.x.example.com -all", "fail", "evil.test.x.example.com"),
    ("v=spf1 exists:%{d000}.x.example.com -all", "permerror", None),  # zero labels
])
async def test_numbers_of_any_length_in_a_record(record: str, result: str, asked: str | None) -> None:
    resolver = TableResolver({"evil.test": [("TXT", record)]})
    spf = await check_spf(resolver, "192.0.2.9", "a@evil.test", "h.evil.test")
    assert spf.result == result, spf.reason
    assert [name for name, _ in resolver.queries[1:]] == ([asked] if asked else [])
