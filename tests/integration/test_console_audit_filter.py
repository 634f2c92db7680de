"""The audit log filtered on PostgreSQL: by who (any case), by action (exact, or a prefix ending in a dot) and by
target, in the API and the page, paging within the filter; a held message's entries link to its trace."""

from __future__ import annotations

import uuid

import pytest

from mailmoat_console.core import Console
from mailmoat_console.rights import Role
from tests.integration import test_console as base
from tests.integration.test_console import account, api_sign_in, http

pytestmark = pytest.mark.integration
migrated, redis_client, console = base.migrated, base.redis_client, base.console  # the fixtures


async def test_the_audit_log_filtered_by_who_what_and_target(console: Console):
    admin = await account(console, Role.admin)
    mark = uuid.uuid4().hex[:8]
    helper = f"Help-{mark}"
    for n in range(3):
        await console.audit.write("quarantine.release", actor=helper, client_ip="192.0.2.1", target=f"Q{mark}{n}")
    await console.audit.write("quarantine.delete", actor=helper, client_ip="192.0.2.1", target=f"Q{mark}0")
    await console.audit.write("queue.retry", actor="someone-else", client_ip=None, target=f"Q{mark}0")
    async with http(console) as client:
        await api_sign_in(client, admin)

        async def found(**params) -> list[tuple[str, str, str]]:
            answer = (await client.get("/api/audit", params=params)).json()
            return [(e["actor"], e["action"], e["target"]) for e in answer["entries"]]

        assert await found(actor=helper.lower()) == [
            (helper, "quarantine.delete", f"Q{mark}0"), *[(helper, "quarantine.release", f"Q{mark}{n}")
                                                          for n in (2, 1, 0)]]
        assert await found(target=f"Q{mark}0") == [("someone-else", "queue.retry", f"Q{mark}0"),
                                                   (helper, "quarantine.delete", f"Q{mark}0"),
                                                   (helper, "quarantine.release", f"Q{mark}0")]
        assert await found(target=f"Q{mark}0", action="quarantine.") == [
            (helper, "quarantine.delete", f"Q{mark}0"), (helper, "quarantine.release", f"Q{mark}0")]
        assert await found(target=f"Q{mark}0", action="quarantine") == []  # no dot: the exact action only
        first = (await client.get("/api/audit", params={"actor": helper, "limit": 2})).json()
        rest = (await client.get("/api/audit", params={"actor": helper, "limit": 2,
                                                       "before": first["next_before"]})).json()
        assert [e["target"] for e in first["entries"] + rest["entries"]] == [f"Q{mark}{n}" for n in (0, 2, 1, 0)]
        assert rest["next_before"] is None

        page = (await client.get("/audit", params={"target": f"Q{mark}1"})).text
        assert f'href="/trace/Q{mark}1"' in page and "someone-else" not in page and f"Q{mark}2" not in page
        assert "No entries that match" in (await client.get("/audit", params={"actor": "nobody-" + mark})).text
