"""The console's pure parts: rights, password hashing, client addresses, the sign-in limiter, trace filters."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_console.config import ConsoleConfig, client_address
from mailmoat_console.passwords import (
    HASHER,
    generate_password,
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)
from mailmoat_console.ratelimit import SigninLimiter
from mailmoat_console.rights import Principal, Right, Role, allowed
from mailmoat_console.sessions import same_token
from mailmoat_console.tracesearch import SearchError, TraceQuery, TraceSearch, matches
from mailmoat_records.tracedb import Cursor, MessageSummary, Page

ALICE = Principal(3, "alice", Role.user, frozenset({"alice@example.com", "a.smith@example.com"}))
DESK = Principal(2, "desk", Role.helpdesk)
ADMIN = Principal(1, "root", Role.admin)


# --- rights ---------------------------------------------------------------------------------------------

def test_roles_rights():
    assert all(ADMIN.can(r) for r in Right)
    assert DESK.can(Right.trace_read) and DESK.can(Right.trace_all)
    assert not DESK.can(Right.accounts_manage) and not DESK.can(Right.audit_read)
    assert ALICE.can(Right.trace_read)
    assert not any(ALICE.can(r) for r in (Right.trace_all, Right.audit_read, Right.accounts_manage))
    assert not allowed("superuser", Right.trace_read)


def test_an_end_user_sees_only_their_own_recipients():
    assert ALICE.may_see_message(["bob@example.com", "<Alice@Example.COM>"])
    assert not ALICE.may_see_message(["bob@example.com"])
    assert not ALICE.may_see_message([])
    assert ALICE.own_recipients(["bob@example.com", "ALICE@example.com"]) == ["ALICE@example.com"]
    assert DESK.own_recipients(["bob@example.com"]) == ["bob@example.com"]
    assert DESK.may_see_message([])


# --- passwords ------------------------------------------------------------------------------------------

def test_argon2id_hash_and_verify():
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse batterY")
    assert not verify_password(None, "correct horse battery")  # no account: checked against a dummy, False
    assert not verify_password("not a hash", "x")
    assert not verify_password(stored, "x" * 2000)
    assert not needs_rehash(stored)
    weaker = type(HASHER)(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("pw")
    assert needs_rehash(weaker)


def test_password_rules_and_generated_passwords():
    assert password_problem("short") is not None
    assert password_problem("long enough pass") is None
    first, second = generate_password(), generate_password()
    assert first != second and len(first) == 20 and password_problem(first) is None


def test_csrf_token_comparison():
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("abc", None)
    assert not same_token("", "")


# --- configuration and client addresses --------------------------------------------------------------

def test_cookies_are_secure_unless_on_loopback():
    assert ConsoleConfig.from_env({}).secure_cookies is False
    assert ConsoleConfig.from_env({"MAILMOAT_CONSOLE_HOST": "0.0.0.0"}).secure_cookies is True
    assert ConsoleConfig.from_env({"MAILMOAT_CONSOLE_SECURE_COOKIES": "true"}).secure_cookies is True
    with pytest.raises(ValueError):
        ConsoleConfig.from_env({"MAILMOAT_CONSOLE_SECURE_COOKIES": "maybe"})
    config = ConsoleConfig.from_env({"MAILMOAT_CONSOLE_PORT": "8099"})
    assert (config.host, config.port, config.url) == ("127.0.0.1", 8099, "http://127.0.0.1:8099/")


def test_forwarded_for_is_read_only_from_trusted_proxies():
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_address("192.0.2.1", "203.0.113.9", proxies) == "192.0.2.1"  # not a proxy: its claim ignored
    assert client_address("10.1.2.3", "203.0.113.9", proxies) == "203.0.113.9"
    # the client's own claim (left) is not believed past the first untrusted hop
    assert client_address("10.1.2.3", "198.51.100.1, 203.0.113.9, 10.9.9.9", proxies) == "203.0.113.9"
    assert client_address("10.1.2.3", None, proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", "garbage", proxies) is None
    assert client_address(None, "203.0.113.9", proxies) is None


# --- the sign-in limiter ---------------------------------------------------------------------------------

class FakeCounter:
    def __init__(self):
        self.values: dict[str, int] = {}

    async def count(self, key):
        return self.values.get(key, 0), 60 if key in self.values else 0

    async def add(self, key, window):
        self.values[key] = self.values.get(key, 0) + 1
        return self.values[key]

    async def clear(self, key):
        self.values.pop(key, None)


async def test_limiter_per_account_and_per_address():
    limiter = SigninLimiter(FakeCounter(), window=60, per_account=3, per_ip=5)
    for _ in range(3):
        assert await limiter.check("Alice", "192.0.2.1") is None
        await limiter.failed("alice", "192.0.2.1")
    refusal = await limiter.check("ALICE ", "198.51.100.7")  # the name, whatever its case, from anywhere
    assert refusal is not None and refusal.scope == "account" and refusal.retry_after == 60
    assert await limiter.check("bob", "198.51.100.7") is None
    await limiter.failed("bob", "192.0.2.1")
    await limiter.failed("carol", "192.0.2.1")
    refusal = await limiter.check("dave", "192.0.2.1")  # five failures from one address, over any names
    assert refusal is not None and refusal.scope == "ip"


async def test_a_success_clears_the_account_count_not_the_address():
    counter = FakeCounter()
    limiter = SigninLimiter(counter, window=60, per_account=2, per_ip=3)
    await limiter.failed("alice", "192.0.2.1")
    await limiter.succeeded("alice")
    await limiter.failed("alice", "192.0.2.1")
    assert await limiter.check("alice", "192.0.2.1") is None
    await limiter.failed("alice", "192.0.2.1")
    assert (await limiter.check("alice", None)).scope == "account"
    assert sum(1 for k in counter.values if k.startswith("ip:")) == 1


# --- trace search rules ------------------------------------------------------------------------------------

AT = datetime(2026, 12, 1, 10, tzinfo=UTC)


def summary(mid: str, sender: str, rcpts: list[str], ip: str = "192.0.2.7", header: str = "<m@x>") -> MessageSummary:
    return MessageSummary(mid, AT, sender, rcpts, header.strip("<>"), ip, "DELIVER")


class FakeReader:
    def __init__(self, pages: list[Page]):
        self.pages = pages
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def find(self, needle, *, since=None, until=None, limit=50, after=None, kinds=()):
        self.calls.append((needle, tuple(kinds)))
        return self.pages.pop(0) if self.pages else Page([], None)

    async def received(self, *, since, until=None, limit=50, after=None):
        self.calls.append(("", ("received", since, until)))
        return self.pages.pop(0) if self.pages else Page([], None)

    async def events(self, message_id, *, since=None, until=None):
        return []


def test_filters_apply_to_the_fields_not_looked_up():
    found = summary("Q1", "Bob@Example.net", ["alice@example.com"], "192.0.2.7", "<abc@x>")
    assert matches(found, TraceQuery(sender="bob@example.net", client_ip="192.0.2.7"), "recipient")
    assert not matches(found, TraceQuery(sender="eve@example.net"), "recipient")
    assert matches(found, TraceQuery(message_id="<ABC@x>"), "sender")
    assert not matches(found, TraceQuery(client_ip="192.0.2.8"), "sender")
    assert matches(summary("Q2", "", ["a@b"]), TraceQuery(sender="<>"), "recipient")


async def test_the_most_selective_field_is_looked_up():
    reader = FakeReader([Page([], None)] * 4)
    search = TraceSearch(reader)
    await search.search(TraceQuery(sender="b@x", recipient="a@x", message_id="<m@x>"), ADMIN)
    await search.search(TraceQuery(sender="b@x", client_ip="192.0.2.1"), DESK)
    await search.search(TraceQuery(sender="b@x", recipient="a@x"), ADMIN)
    await search.search(TraceQuery(sender="b@x"), ADMIN)
    assert [c[1] for c in reader.calls] == [("msgid",), ("ip",), ("rcpt",), ("sender", "from")]
    with pytest.raises(SearchError):
        await search.search(TraceQuery(client_ip="not-an-ip"), ADMIN)


async def test_without_a_look_up_field_a_date_range_is_listed():
    reader = FakeReader([Page([summary("Q1", "b@x", ["a@x"]), summary("Q2", "c@x", ["d@x"])], None)])
    search = TraceSearch(reader)
    before = datetime.now(UTC)
    results = await search.search(TraceQuery(status="deliver"), DESK)
    assert results.looked_up == "range" and [m.message_id for m in results.messages] == ["Q1", "Q2"]
    _, (kind, since, until) = reader.calls[0]
    assert kind == "received" and until is None and results.until is None
    assert before - timedelta(days=2) <= since <= datetime.now(UTC) - timedelta(days=2) and results.since == since
    end = datetime(2026, 12, 3, tzinfo=UTC)  # an end alone: the two days before it
    await search.search(TraceQuery(until=end), ADMIN)
    assert reader.calls[1][1] == ("received", end - timedelta(days=2), end)
    start = datetime(2026, 11, 1, tzinfo=UTC)  # a start given: as given, up to the end (open)
    await search.search(TraceQuery(since=start, status="FAIL"), ADMIN)
    assert reader.calls[2][1] == ("received", start, None)
    earliest = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
    await search.search(TraceQuery(until=earliest), ADMIN)  # no date before year 1
    assert reader.calls[3][1] == ("received", datetime.min.replace(tzinfo=UTC), earliest)
    found = await search.search(TraceQuery(client_ip=" ", sender="  "), ADMIN)  # blank fields are no field
    assert found.looked_up == "range"
    reader.pages.append(Page([summary("Q3", "b@x", ["a@x"])], None))  # delivered: not a FAIL
    assert (await search.search(TraceQuery(status="FAIL"), ADMIN)).messages == [] and reader.pages == []


async def test_an_end_user_searches_only_their_mailboxes():
    mine = summary("Q1", "bob@example.net", ["alice@example.com", "carol@example.com"])
    reader = FakeReader([Page([mine], None), Page([], None)])
    search = TraceSearch(reader)
    results = await search.search(TraceQuery(message_id="<m@x>", sender="bob@example.net"), ALICE)
    assert reader.calls[0] == ("a.smith@example.com", ("rcpt",))  # their first mailbox, as recipient only
    assert [m.recipients for m in results.messages] == [["alice@example.com"]]  # carol's address not shown
    with pytest.raises(SearchError):
        await search.search(TraceQuery(recipient="carol@example.com"), ALICE)
    with pytest.raises(SearchError):
        await search.search(TraceQuery(), Principal(9, "nobody", Role.user))


async def test_a_page_of_messages_not_theirs_is_skipped_not_shown():
    other = summary("Q9", "bob@example.net", ["carol@example.com"])
    cursor = Cursor(AT, "Q9")
    mine = summary("Q1", "bob@example.net", ["alice@example.com"])
    reader = FakeReader([Page([other], cursor), Page([mine], None)])
    results = await TraceSearch(reader).search(TraceQuery(recipient="alice@example.com"), ALICE)
    assert [m.message_id for m in results.messages] == ["Q1"] and results.next is None


def test_run_all_starts_the_console_with_the_records_in_postgresql():
    from mailmoat_cli.supervisor import plan
    from mailmoat_policy import Policy

    policy = Policy.model_validate({"organization": {"hostname": "gw.example"}})
    assert ("console", 0) in plan(policy, 1, False, "postgresql")
    assert ("console", 0) not in plan(policy, 1, False, "redis")


def test_allowed_hosts_guard_a_console_on_loopback():
    assert ConsoleConfig.from_env({}).allowed_hosts == ("127.0.0.1", "localhost")
    assert ConsoleConfig.from_env({"MAILMOAT_CONSOLE_HOST": "0.0.0.0"}).allowed_hosts == ("*",)
    assert ConsoleConfig.from_env({"MAILMOAT_CONSOLE_HOST": "0.0.0.0",
                                   "MAILMOAT_CONSOLE_URL": "https://Console.Example.com/"}).allowed_hosts == (
        "console.example.com",)
    assert ConsoleConfig.from_env({"MAILMOAT_CONSOLE_ALLOWED_HOSTS": "a.example, B.example"}).allowed_hosts == (
        "a.example", "b.example")


def test_status_filters_on_the_latest_event():
    found = summary("Q1", "b@x", ["a@x"])  # last_event DELIVER
    assert matches(found, TraceQuery(recipient="a@x", status="deliver"), "recipient")
    assert not matches(found, TraceQuery(recipient="a@x", status="FAIL"), "recipient")


async def test_bounds_without_a_time_zone_are_utc():
    calls = []

    class Reader(FakeReader):
        async def find(self, needle, *, since=None, until=None, limit=50, after=None, kinds=()):
            calls.append((since, until))
            return Page([], None)

    await TraceSearch(Reader([])).search(TraceQuery(sender="a@b", since=datetime(2026, 12, 1),
                                                    until=datetime(2026, 12, 2, tzinfo=UTC)), ADMIN)
    assert calls == [(datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))]
    with pytest.raises(SearchError):
        await TraceSearch(Reader([])).search(TraceQuery(sender="a@b", since=datetime(2026, 12, 2),
                                                        until=datetime(2026, 12, 1, tzinfo=UTC)), ADMIN)
