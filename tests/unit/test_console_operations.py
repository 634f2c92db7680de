"""The console's queues and policy pages with their stores faked: grouping, the draft check's errors by field, the
rule-hit range, rights (the help desk reads, only admins act), audit and CSRF of an action."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mailmoat_console.app import create_app
from mailmoat_console.operations import install
from mailmoat_console.policypages import PolicyPages, RangeError, check_draft, hits_range, read_policy
from mailmoat_console.queues import by_destination
from mailmoat_console.rights import Principal, Right, Role, allowed
from mailmoat_console.sessions import SESSION_COOKIE
from mailmoat_platform.models import Envelope, Route
from mailmoat_records.deferred import Control, Deferral, destination_of
from tests.unit.test_console_app import console

NOW = time.time()


def deferral(message_id: str, destination: str, next_in: float, error: str = "451 4.3.0 busy") -> Deferral:
    return Deferral(id=message_id, route=f"route:{destination}", destination=destination,
                    queue="mailmoat.egress.retry.300s", sender="s@out.org", recipients=["a@example.com"], attempts=2,
                    first_attempt=NOW - 600, next_attempt=NOW + next_in, last_error=error)


class FakeQueues:
    def __init__(self, deferrals: list[Deferral]):
        self.deferrals = deferrals
        self.asked: list[tuple[str, str, str, str]] = []

    async def destinations(self):
        return by_destination(self.deferrals)

    async def ask(self, action, message_id, route, by):
        self.asked.append((action, message_id, route, by))
        return next((d for d in self.deferrals if d.id == message_id and d.route == route), None)

    async def close(self):
        pass


def test_rights_help_desk_reads_only_admins_act():
    assert allowed(Role.admin, Right.queues_manage) and allowed(Role.admin, Right.policy_read)
    assert allowed(Role.helpdesk, Right.queues_read) and allowed(Role.helpdesk, Right.policy_read)
    assert not allowed(Role.helpdesk, Right.queues_manage)
    assert not any(allowed(Role.user, r) for r in (Right.queues_read, Right.queues_manage, Right.policy_read))


def test_grouped_by_destination_most_first_each_by_next_attempt():
    groups = by_destination([deferral("m1", "a.test", 50), deferral("m2", "b.test", 30), deferral("m3", "b.test", 10)])
    assert [g.destination for g in groups] == ["b.test", "a.test"]
    assert [c.id for c in groups[0].copies] == ["m3", "m2"] and groups[0].count == 2 and groups[0].recipients == 2
    assert groups[0].copies[0].next_at.tzinfo is UTC


def test_destination_of_a_copy():
    mx = Envelope(mail_from="s@o.org", rcpt_to=["x@Dest.Test"], itinerary=["egress"],
                  route=Route(name="mx", kind="mx", domain="dest.test"))
    smarthost = mx.model_copy(update={"route": Route(name="route:onprem", kind="smarthost", hosts=["h"])})
    assert destination_of(mx) == "dest.test" and destination_of(smarthost) == "route:onprem"


def test_control_message_round_trip_and_refusal():
    control = Control("bounce", "id1", "route:x", "admin root")
    assert Control.decode(control.encode()) == control
    for body in (b"{}", b'{"action": "explode", "id": "a", "route": "b"}', b"[1]"):
        with pytest.raises(ValueError):
            Control.decode(body)


def test_draft_errors_by_field_path_as_policy_check():
    bad = check_draft("rules:\n  - name: a\n    mode: sometimes\n    actions: {reject: {}}\n")
    assert not bad.ok and [e.path for e in bad.errors] == ["rules.0.mode"]
    assert "draft: rules.0.mode: " in bad.text
    assert [e.path for e in check_draft("routes: 5\n").errors] == ["routes"]
    not_yaml = check_draft("a: [\n")
    assert not not_yaml.ok and not_yaml.errors[0].path == "" and "not valid YAML" in not_yaml.errors[0].message
    assert check_draft("- x\n").errors[0].message == "the top level must be a mapping, not list"
    good = check_draft("organization: {hostname: gw.test}\n")
    assert good.ok and good.errors == [] and "itinerary" in good.summary


def test_policy_in_force_read_and_a_broken_file_named(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("organization: {hostname: gw.test}\n")
    shown = read_policy(str(path))
    assert shown.yaml.startswith("organization:") and shown.error == "" and len(shown.sha256) == 64
    path.write_text("routes: 5\n")
    assert "routes: Input should be a valid dictionary" in read_policy(str(path)).error
    assert "cannot read" in read_policy(str(tmp_path / "none.yaml")).error


def test_hits_range():
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert hits_range(None, None, now) == (now - timedelta(days=7), now)
    with pytest.raises(RangeError):
        hits_range(now, now - timedelta(days=1), now)
    with pytest.raises(RangeError):
        hits_range(now - timedelta(days=200), now, now)


def client_for(role: Role, queues: FakeQueues, policy: PolicyPages | None = None):
    made, _, _, audit = console(Principal(1, "root", role))
    app = create_app(made)
    install(app, queues, policy or PolicyPages("/nonexistent/policy.yaml", None))  # type: ignore[arg-type]
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             cookies={SESSION_COOKIE: "good"})
    return http, audit


async def test_queues_page_shows_the_last_error_and_admin_actions():
    queues = FakeQueues([deferral("m1", "dest.test", 120, "451 4.7.1 <a@example.com> greylisted, try later")])
    http, _ = client_for(Role.admin, queues)
    async with http:
        page = await http.get("/queues")
        api = (await http.get("/api/queues")).json()
    assert page.status_code == 200
    assert "dest.test" in page.text and "451 4.7.1 &lt;a@example.com&gt; greylisted" in page.text
    assert 'action="/queues/retry"' in page.text and 'action="/queues/delete"' in page.text
    assert api["copies"] == 1 and api["may_act"] is True
    assert api["destinations"][0]["copies"][0]["last_error"].startswith("451 4.7.1")


async def test_help_desk_reads_the_queues_but_may_not_act():
    queues = FakeQueues([deferral("m1", "dest.test", 120)])
    http, audit = client_for(Role.helpdesk, queues)
    async with http:
        page = await http.get("/queues")
        assert page.status_code == 200 and 'action="/queues/retry"' not in page.text
        refused = await http.post("/api/queues/retry", json={"id": "m1", "route": "route:dest.test"},
                                  headers={"X-CSRF-Token": "the-csrf-token"})
        assert refused.status_code == 403
        assert (await http.get("/policy")).status_code == 200
    assert queues.asked == [] and audit.calls == []


async def test_an_end_user_sees_neither_queues_nor_policy():
    http, _ = client_for(Role.user, FakeQueues([]), PolicyPages("/nonexistent", None))
    async with http:
        for path in ("/api/queues", "/queues", "/api/policy", "/policy"):
            assert (await http.get(path)).status_code == 403, path


async def test_an_action_is_sent_audited_and_needs_the_csrf_token():
    queues = FakeQueues([deferral("m1", "dest.test", 120)])
    http, audit = client_for(Role.admin, queues)
    async with http:
        without = await http.post("/queues/retry", data={"id": "m1", "route": "route:dest.test"})
        assert without.status_code == 403 and queues.asked == []
        done = await http.post("/queues/retry", data={"id": "m1", "route": "route:dest.test",
                                                      "csrf_token": "the-csrf-token"})
        assert done.status_code == 303 and done.headers["location"].startswith("/queues?done=retry")
        gone = await http.post("/api/queues/delete", json={"id": "m9", "route": "route:dest.test"},
                               headers={"X-CSRF-Token": "the-csrf-token"})
        assert gone.status_code == 404
        unknown = await http.post("/queues/explode", data={"id": "m1", "route": "r", "csrf_token": "the-csrf-token"})
        assert unknown.status_code == 404
    assert queues.asked[:2] == [("retry", "m1", "route:dest.test", "admin root"),
                                ("delete", "m9", "route:dest.test", "admin root")]
    assert audit.calls == ["write", "write"]


async def test_a_pasted_draft_with_an_error_shows_the_field_path(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("organization: {hostname: gw.test}\n")
    http, _ = client_for(Role.helpdesk, FakeQueues([]), PolicyPages(str(path), None))
    async with http:
        page = await http.post("/policy/check", data={"draft": "rules:\n  - name: a\n    mode: sometimes\n",
                                                      "csrf_token": "the-csrf-token"})
        assert page.status_code == 200
        assert "rules.0.mode" in page.text and "Input should be" in page.text
        shown = await http.get("/policy")
        assert "organization: {hostname: gw.test}" in shown.text
        checked = (await http.post("/api/policy/check", json={"yaml": "routes: 5\n"},
                                   headers={"X-CSRF-Token": "the-csrf-token"})).json()
        assert checked["ok"] is False and checked["errors"][0]["path"] == "routes"
