"""A delivered message's sender authentication on its timeline, from the antispam stage's trace event (no held
copy to read ``Authentication-Results`` from): per method in the API and on the page, for administrators and the
end user whose mailbox it reached; an event whose summary is malformed shows what it can, never a server error."""

from __future__ import annotations

import uuid

import pytest

from mailmoat_console.core import Console
from mailmoat_console.rights import Role
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in, http
from tests.integration.test_console_trace_status import write

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures

TRACED = {"result": "clean", "scl": 1, "bcl": 0, "sfv": "NSPM", "rules": [], "dmarc": {"result": "pass"},
          "authentication": {
              "spf": {"result": "softfail", "domain": "news.test", "identity": "mailfrom"},
              "dkim": [{"result": "pass", "domain": "news.test"}, {"result": "fail", "domain": "esp.test"}],
              "dmarc": {"result": "pass", "domain": "news.test", "policy": "none"},
              "arc": "none", "compauth": {"result": "pass", "reason": "100"}}}
EXPECTED = [("spf", "softfail", "smtp.mailfrom=news.test"), ("dkim", "pass", "header.d=news.test"),
            ("dkim", "fail", "header.d=esp.test"), ("dmarc", "pass", "header.from=news.test"), ("arc", "none", ""),
            ("compauth", "pass", "reason=100")]


async def test_a_delivered_messages_traced_authentication_on_its_timeline(console: Console):
    domain = f"{uuid.uuid4().hex[:8]}.example"
    alice = f"alice@{domain}"
    mid = await write(console, "ann@news.test", [alice], [("AGENTINFO", "antispam", [alice], TRACED),
                                                          ("DELIVER", "egress", [alice], {})])
    unsigned = await write(console, "bob@plain.test", [alice], [
        ("AGENTINFO", "antispam", [alice], {**TRACED, "authentication": {
            "spf": {"result": "none", "domain": "plain.test", "identity": "helo"}, "dkim": [],
            "dmarc": {"result": "none", "domain": "", "policy": "none"}, "arc": "none",
            "compauth": {"result": "none", "reason": "300"}}})])
    odd = await write(console, "eve@odd.test", [alice], [
        ("AGENTINFO", "antispam", [alice], {**TRACED, "authentication": {
            "spf": "pass", "dkim": {"domain": "x"}, "dmarc": {"result": ["fail"]}, "arc": 7, "compauth": None}})])
    admin, user = await account(console, Role.admin), await account(console, Role.user, [alice])
    for who in (admin, user):
        async with http(console) as client:
            await api_sign_in(client, who)
            timeline = (await client.get(f"/api/trace/{mid}")).json()
            assert timeline["quarantine_id"] is None
            assert [(a["method"], a["result"], a["properties"]) for a in timeline["authentication_results"]] == \
                EXPECTED, who
            page = (await client.get(f"/trace/{mid}")).text
            assert "as the antispam stage traced them" in page and "header.d=esp.test" in page
            assert 'auth-softfail">softfail' in page
            plain = (await client.get(f"/api/trace/{unsigned}")).json()["authentication_results"]
            assert [(a["method"], a["result"], a["properties"], a["comment"]) for a in plain] == [
                ("spf", "none", "smtp.helo=plain.test", ""), ("dkim", "none", "", "message not signed"),
                ("dmarc", "none", "", "action=none"), ("arc", "none", "", ""), ("compauth", "none", "reason=300", "")]
            answer = await client.get(f"/api/trace/{odd}")
            assert answer.status_code == 200
            assert [(a["method"], a["result"]) for a in answer.json()["authentication_results"]] == [
                ("dmarc", "['fail']"), ("arc", "7")]
            assert (await client.get(f"/trace/{odd}")).status_code == 200
