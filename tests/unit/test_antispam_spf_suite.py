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
