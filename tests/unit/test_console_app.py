"""The console's application with its stores faked: every change needs the CSRF token, headers, the
OpenAPI document, rights on each route."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from mailmoat_console import api, blockpages, notifypages, oidcpages, operations, pages
from mailmoat_console.app import create_app
from mailmoat_console.config import ConsoleConfig
from mailmoat_console.core import Console
from mailmoat_console.ratelimit import SigninLimiter
from mailmoat_console.rights import Principal, Role
from mailmoat_console.sessions import SESSION_COOKIE, Session
from mailmoat_console.tracesearch import TraceSearch
from tests.unit.test_console_units import FakeCounter, FakeReader

CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
SIGN_IN = {("POST", "/signin"), ("POST", "/api/session")}
"""Sign-in has no session yet: the form checks its pre-session token, the API takes JSON only."""


class Recorder:
    """Any store: every call is recorded (and fails the test if it is a change)."""

    def __init__(self, principal: Principal | None = None):
        self.calls: list[str] = []
        self.principal = principal

    async def lookup(self, token):
        if token == "good" and self.principal is not None:
            return Session(self.principal, "the-csrf-token", b"hash")
        return None

    def __getattr__(self, name):
        async def call(*args, **kwargs):
            self.calls.append(name)
            return [] if name == "list" else ([], None) if name == "page" else None

        return call


def console(principal: Principal | None) -> tuple[Console, Recorder, Recorder, Recorder]:
    accounts, sessions, audit = Recorder(), Recorder(principal), Recorder()
    made = Console(ConsoleConfig(secure_cookies=False), accounts, sessions, audit, TraceSearch(FakeReader([])),
                   SigninLimiter(FakeCounter()))
    return made, accounts, sessions, audit


def client(made: Console) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(made)), base_url="http://testserver",
                             cookies={SESSION_COOKIE: "good"})


def changing_routes() -> list[tuple[str, str]]:
    """Every state-changing route of the API and the pages (the app holds those two routers, its OpenAPI
    document and the stylesheet only: see ``test_the_app_holds_the_two_routers``)."""
    found = []
    for route in [*api.router.routes, *pages.router.routes, *notifypages.router.routes, *operations.api_router.routes,
                  *operations.page_router.routes]:
        if isinstance(route, APIRoute):
            for method in route.methods & CHANGES:
                if (method, route.path) not in SIGN_IN:
                    found.append((method, re.sub(r"\{[^}]+\}", "1", route.path)))
    return found


async def test_every_change_without_the_csrf_token_is_refused():
    made, accounts, _, audit = console(Principal(1, "root", Role.admin))
    routes = changing_routes()
    assert {("POST", "/signout"), ("DELETE", "/api/session"), ("POST", "/api/accounts"),
            ("PATCH", "/api/accounts/1"), ("POST", "/accounts"), ("POST", "/accounts/1"), ("POST", "/password"),
            ("POST", "/api/me/password"), ("POST", "/api/quarantine/1/release"), ("POST", "/api/quarantine/1/not-junk"),
            ("DELETE", "/api/quarantine/1"), ("POST", "/quarantine/1/release"), ("POST", "/quarantine/1/not-junk"),
            ("POST", "/quarantine/1/delete"), ("POST", "/notify/1"), ("POST", "/api/queues/1"), ("POST", "/queues/1"),
            ("POST", "/api/policy/check"), ("POST", "/policy/check")} <= set(routes)
    async with client(made) as http:
        for method, path in routes:
            if path.startswith("/api/"):
                for headers in ({}, {"X-CSRF-Token": "wrong"}):
                    answer = await http.request(method, path, json={"name": "x", "role": "user"}, headers=headers)
                    assert answer.status_code == 403, (method, path, answer.text)
            else:
                for data in ({"name": "x"}, {"name": "x", "csrf_token": "wrong"}):
                    answer = await http.request(method, path, data=data)
                    assert answer.status_code == 403, (method, path, answer.text)
                    assert "CSRF" in answer.text
    assert accounts.calls == [] and audit.calls == []


def test_the_app_holds_the_two_routers():
    app = create_app(console(None)[0])
    own = [r for r in app.routes if getattr(r, "path", None) not in ("/api/openapi.json", "/static")]
    if all(isinstance(r, APIRoute) for r in own):  # a FastAPI that copies included routes into the app
        assert {id(r.endpoint) for r in own} == {id(r.endpoint) for r in [*api.router.routes, *pages.router.routes,
                                                                           *notifypages.router.routes,
                                                                           *operations.api_router.routes,
                                                                           *operations.page_router.routes,
                                                                           *blockpages.api_router.routes,
                                                                           *blockpages.page_router.routes,
                                                                           *oidcpages.router.routes]}
    else:  # one that keeps each included router whole
        assert sorted(id(getattr(r, "original_router", None)) for r in own) == sorted([id(api.router),
                                                                                        id(pages.router),
                                                                                        id(notifypages.router),
                                                                                        id(operations.api_router),
                                                                                        id(operations.page_router),
                                                                                        id(blockpages.api_router),
                                                                                        id(blockpages.page_router),
                                                                                        id(oidcpages.router)])


async def test_with_the_token_the_change_goes_through():
    made, _, sessions, audit = console(Principal(1, "root", Role.admin))
    async with client(made) as http:
        answer = await http.post("/signout", data={"csrf_token": "the-csrf-token"})
    assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    assert sessions.calls == ["revoke"] and audit.calls == ["write"]


async def test_rights_are_checked_on_the_server():
    made, accounts, _, _ = console(Principal(5, "alice", Role.user, frozenset({"alice@example.com"})))
    async with client(made) as http:
        for path in ("/api/accounts", "/api/audit", "/accounts", "/audit"):
            assert (await http.get(path)).status_code == 403, path
        answer = await http.post("/api/accounts", json={"name": "x", "role": "admin"},
                                 headers={"X-CSRF-Token": "the-csrf-token"})
        assert answer.status_code == 403
    assert accounts.calls == []


async def test_signed_out_the_api_says_401_and_pages_send_to_sign_in():
    made, *_ = console(None)
    async with client(made) as http:
        assert (await http.get("/api/trace", params={"sender": "a@b"})).status_code == 401
        answer = await http.get("/trace")
        assert answer.status_code == 303 and answer.headers["location"] == "/signin"


async def test_sign_in_form_needs_its_pre_session_token():
    made, accounts, _, _ = console(None)
    async with client(made) as http:
        page = await http.get("/signin")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        answer = await http.post("/signin", data={"name": "root", "password": "x" * 12, "csrf_token": "forged"})
        assert answer.status_code == 403
        # the API's sign-in takes JSON only (a cross-site form cannot send it without a CORS preflight)
        answer = await http.post("/api/session", data={"name": "root", "password": "x"})
        assert answer.status_code == 422
        answer = await http.post("/api/session", content='{"name": "root", "password": "long enough pw"}',
                                 headers={"content-type": "text/plain"})  # what a cross-site form can send
        assert answer.status_code == 422
    assert "authenticate" not in accounts.calls


async def test_security_headers_and_no_caching():
    made, *_ = console(Principal(1, "root", Role.admin))
    async with client(made) as http:
        for path in ("/signin", "/trace", "/api/me", "/no-such-page"):
            answer = await http.get(path)
            csp = answer.headers["content-security-policy"]
            assert "script-src 'none'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["x-content-type-options"] == "nosniff"
        page = await http.get("/trace")
        assert "<script" not in page.text and "style=" not in page.text
        assert (await http.get("/static/console.css")).status_code == 200


async def test_the_openapi_document():
    made, *_ = console(None)
    async with client(made) as http:
        doc = (await http.get("/api/openapi.json")).json()
        assert (await http.get("/docs")).status_code == 404
    assert doc["openapi"].startswith("3.")
    assert {"/api/session", "/api/me", "/api/me/password", "/api/trace", "/api/trace/{message_id}", "/api/audit",
            "/api/accounts", "/api/accounts/{account_id}", "/api/quarantine", "/api/quarantine/{qid}",
            "/api/quarantine/{qid}/release", "/api/quarantine/{qid}/not-junk",
            "/api/release-requests", "/api/queues", "/api/queues/{action}", "/api/policy", "/api/policy/check",
            "/api/policy/rule-hits", "/api/sender-blocks", "/api/sender-blocks/{entry_id}",
            "/api/quarantine/{qid}/block-sender"} == set(doc["paths"])
    params = {p["name"] for p in doc["paths"]["/api/trace"]["get"]["parameters"]}
    assert {"sender", "recipient", "message_id", "client_ip", "since", "until", "limit", "after"} <= params


@pytest.mark.parametrize("secure", [True, False])
async def test_session_cookie_attributes(secure: bool):
    made, *_ = console(None)
    made.config = ConsoleConfig(secure_cookies=secure)
    async with client(made) as http:
        cookie = (await http.get("/signin")).headers["set-cookie"]
    assert ("Secure" in cookie) is secure
    assert cookie.startswith("__Host-") is secure


async def test_a_host_not_allowed_is_refused():
    made, *_ = console(None)
    made.config = ConsoleConfig(secure_cookies=False, allowed_hosts=("127.0.0.1", "localhost"))
    transport = httpx.ASGITransport(app=create_app(made))
    async with httpx.AsyncClient(transport=transport, base_url="http://rebound.example:8025") as http:
        answer = await http.get("/signin")
        assert answer.status_code == 400 and "content-security-policy" in answer.headers
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8025") as http:
        assert (await http.get("/signin")).status_code == 200
