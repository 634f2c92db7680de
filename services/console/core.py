"""The console's parts (stores, search, limiter) and the requests' common steps: who is asking, from
where, with which rights, and the CSRF check of every change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from mailmoat_records.tracedb import TraceReader

from .accounts import Account, Accounts
from .audit import AuditLog
from .config import ConsoleConfig, client_address
from .passwords import password_problem
from .quarantine import ConsoleQuarantine
from .ratelimit import Counter, RedisCounter, SigninLimiter
from .rights import Principal, Right
from .sessions import SECURE_SESSION_COOKIE, SESSION_COOKIE, Session, Sessions, same_token
from .tracesearch import TraceSearch

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SIGNIN_COOKIE = "mailmoat_signin"
"""Pre-session cookie of the sign-in form: its value is the form's CSRF token (login CSRF)."""


@dataclass
class Console:
    config: ConsoleConfig
    accounts: Accounts
    sessions: Sessions
    audit: AuditLog
    search: TraceSearch
    limiter: SigninLimiter
    quarantine: ConsoleQuarantine | None = None
    """The quarantine pages' store (None: the console shows no quarantine)."""

    @classmethod
    def build(cls, config: ConsoleConfig, pool: AsyncConnectionPool, redis=None, *,
              counter: Counter | None = None, quarantine: ConsoleQuarantine | None = None) -> Console:
        counter = counter if counter is not None else RedisCounter(redis)
        return cls(config, Accounts(pool), Sessions(pool, lifetime=timedelta(hours=config.session_hours),
                                                    idle=timedelta(minutes=config.idle_minutes)),
                   AuditLog(pool), TraceSearch(TraceReader(pool)),
                   SigninLimiter(counter, window=config.signin_window, per_account=config.signin_per_account,
                                 per_ip=config.signin_per_ip), quarantine)

    @property
    def session_cookie(self) -> str:
        return SECURE_SESSION_COOKIE if self.config.secure_cookies else SESSION_COOKIE

    @property
    def signin_cookie(self) -> str:
        return ("__Host-" if self.config.secure_cookies else "") + SIGNIN_COOKIE

    def cookie_options(self, max_age: int | None) -> dict:
        return {"httponly": True, "secure": self.config.secure_cookies, "samesite": "strict", "path": "/",
                "max_age": max_age}

    @property
    def session_seconds(self) -> int:
        return int(self.config.session_hours * 3600)


def local_path(value: str | None) -> str | None:
    """``value`` when it is a path of this console to go back to after signing in (``/quarantine/ID?x=y``), else
    None: never another site (``//host``, ``/\\host``, a scheme), the sign-in page itself or the API."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if "\\" in value or any(not c.isprintable() or c.isspace() for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith(("/signin", "/signout", "/api/", "/notify/")):
        return None
    return value


class SignInRequired(Exception):
    """No live session: 401 from the API, a redirect to the sign-in page from a page."""


class Forbidden(Exception):
    """Signed in, without the right."""


class CsrfRefused(Exception):
    """A change without the session's CSRF token."""


class NotFound(Exception):
    """Not there, or not the principal's to see (the same answer)."""


def console_of(request: Request) -> Console:
    return request.app.state.console


def client_ip(request: Request) -> str | None:
    console = console_of(request)
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for") if console.config.trusted_proxies else None
    return client_address(peer, forwarded, console.config.trusted_proxies)


async def current_session(request: Request) -> Session | None:
    """The request's live session (looked up once per request)."""
    if "console_session" not in request.scope:
        token = request.cookies.get(console_of(request).session_cookie)
        request.scope["console_session"] = await console_of(request).sessions.lookup(token)
    return request.scope["console_session"]


async def session_required(request: Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise SignInRequired()
    return session


async def principal(request: Request) -> Principal:
    """A dependency: the signed-in principal (else 401 / the sign-in page)."""
    return (await session_required(request)).principal


async def csrf_checked(request: Request) -> Session:
    """A dependency of every state-changing route: the session's CSRF token must come in the
    ``X-CSRF-Token`` header or the form's ``csrf_token`` field."""
    session = await session_required(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # cached by Starlette: the route reads the same form
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not same_token(session.csrf, given):
        raise CsrfRefused()
    return session


def need(right: Right):
    """A dependency: the signed-in principal, who must hold ``right``."""

    async def check(request: Request) -> Principal:
        who = await principal(request)
        if not who.can(right):
            raise Forbidden()
        return who

    return check


def need_for_change(right: Right):
    """A dependency of a state-changing route: the CSRF check, then ``right``."""

    async def check(request: Request) -> Principal:
        session = await csrf_checked(request)
        if not session.principal.can(right):
            raise Forbidden()
        return session.principal

    return check


async def sign_in(console: Console, name: str, password: str, ip: str | None,
                  user_agent: str) -> tuple[str, Account | None, str, str, int]:
    """Check a sign-in: (outcome, account, session token, CSRF token, retry-after seconds); outcome is ``ok``,
    ``failed`` (wrong name or password, a disabled account) or ``rate-limited``. Audited either way."""
    name = name.strip()[:200]
    refusal = await console.limiter.check(name, ip)
    if refusal is not None:
        await console.audit.write("signin", actor=name or "-", client_ip=ip, outcome="rate-limited",
                                  detail={"scope": refusal.scope})
        return "rate-limited", None, "", "", refusal.retry_after
    account = await console.accounts.authenticate(name, password)
    if account is None:
        await console.limiter.failed(name, ip)
        await console.audit.write("signin", actor=name or "-", client_ip=ip, outcome="failed")
        return "failed", None, "", "", 0
    await console.limiter.succeeded(name)
    token, csrf = await console.sessions.create(account.id, ip, user_agent)
    await console.audit.write("signin", actor=account.principal, client_ip=ip)
    return "ok", account, token, csrf, 0


async def change_own_password(console: Console, session: Session, current: str, new: str, ip: str | None,
                              user_agent: str) -> tuple[str, str, str]:
    """A signed-in account's new password: (outcome, new session token, its CSRF token). The outcome is ``ok``,
    ``rate-limited``, ``wrong`` (the current password does not match; counted like a failed sign-in) or why
    the new one is refused. Every session of the account ends; the caller's continues as a new one."""
    who = session.principal
    problem = password_problem(new)
    if problem:
        return problem, "", ""
    if await console.limiter.check(who.name, ip) is not None:
        await console.audit.write("password.change", actor=who, client_ip=ip, target=who.name, outcome="rate-limited")
        return "rate-limited", "", ""
    if await console.accounts.authenticate(who.name, current) is None:
        await console.limiter.failed(who.name, ip)
        await console.audit.write("password.change", actor=who, client_ip=ip, target=who.name, outcome="failed")
        return "wrong", "", ""
    await console.accounts.set_password(who.account_id, new)
    token, csrf = await console.sessions.create(who.account_id, ip, user_agent)
    await console.audit.write("password.change", actor=who, client_ip=ip, target=who.name)
    return "ok", token, csrf
