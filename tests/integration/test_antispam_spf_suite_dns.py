"""The RFC 7208 test suite again, its zone data served by a DNS server on loopback and asked through
the real resolver (dnspython, UDP with TCP fallback, timeouts), one server per scenario."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat_antispam.auth.resolver import AuthResolver
from mailmoat_antispam.auth.spf import DEFAULT_EXPLANATION, check_spf
from mailmoat_mail.dns import ResolverConfig
from tests.support.spfsuite import SpfCase, SuiteDnsServer, load_cases

pytestmark = pytest.mark.integration

CASES = load_cases()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SuiteDnsServer]]:
    started: dict[str, SuiteDnsServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rfc7208_over_dns(case: SpfCase, servers: dict[str, SuiteDnsServer]) -> None:
    server = servers.get(case.scenario)
    if server is None:
        server = servers[case.scenario] = SuiteDnsServer(case.zone).start()
    resolver = AuthResolver(ResolverConfig(("127.0.0.1",), server.port, 0.3))
    result = await check_spf(resolver, case.host, case.mailfrom, case.helo, receiver=case.receiver or "unknown")
    assert result.result in case.results, result.reason
    if case.explanation is not None and result.result == "fail":
        if "ip6.arpa" in case.explanation:  # the suite writes nibbles in its host field's case
            assert result.explanation.lower() == case.explanation.lower()
        elif case.explanation == "DEFAULT":  # the suite's name for the receiver's own default text
            assert result.explanation == DEFAULT_EXPLANATION
        else:
            assert result.explanation == case.explanation
