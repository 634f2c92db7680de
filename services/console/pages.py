"""Server-rendered pages (Jinja2, autoescaped; no script): sign-in, the trace, a message's timeline, the audit
log, accounts. They call the same functions as the API; every form that changes something carries the
session's CSRF token (the sign-in form: the pre-session cookie's)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mailmoat_records.quarantine import ReleaseError

from .accounts import AccountError
from .api import AccountChange, change_account, create_account, delete_held, quarantine_of, release_held
from .core import (
    CSRF_FIELD,
    NotFound,
    change_own_password,
    client_ip,
    console_of,
    csrf_checked,
    current_session,
    local_path,
    need,
    need_for_change,
    principal,
    sign_in,
)
from .passwords import generate_password
from .quarantine import HeldQuery, QueryError
from .rights import Principal, Right, Role
from .sessions import Session, new_token, same_token, token_hash
from .tracesearch import STATUSES, SearchError, TraceQuery

REASONS = ("malware", "hcphish", "phish", "hcspam", "spoof", "spam", "bulk", "dmarc_quarantine", "rule")
"""The quarantine's reasons offered in the filter (an antivirus result such as blocked-type works too)."""
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
router = APIRouter(include_in_schema=False)


async def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = await current_session(request)
    context.update(request=request, session=session, who=session.principal if session else None,
                   csrf=session.csrf if session else "", csrf_field=CSRF_FIELD, Right=Right)
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _day(text: str, field: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SearchError(f"{field}: not a date (YYYY-MM-DD)") from None


def day_range(since: str, until: str) -> tuple[datetime | None, datetime | None]:
    """[first day's start, the day after the last day) in UTC, from the form's dates (either may be empty)."""
    first, last = _day(since, "from"), _day(until, "to")
    end = None
    if last is not None:
        end = datetime.max.replace(tzinfo=UTC) if last == date.max else datetime.combine(
            last + timedelta(days=1), time(), UTC)
    return datetime.combine(first, time(), UTC) if first else None, end


# --- sign-in -----------------------------------------------------------------------------------------

async def _signin_form(request: Request, error: str = "", status_code: int = 200, name: str = "",
                       back: str | None = None) -> Response:
    console = console_of(request)
    token = request.cookies.get(console.signin_cookie) or ""
    fresh = len(token) < 32 or len(token) > 100
    if fresh:
        token = new_token()
    response = await render(request, "signin.html", status_code, signin_token=token, error=error, name=name,
                            next=back or "")
    if fresh:
        response.set_cookie(console.signin_cookie, token, **console.cookie_options(3600))
    return response


@router.get("/signin")
async def signin_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "") -> Response:
    back = local_path(next)
    if await current_session(request) is not None:
        return redirect(back or "/trace")
    return await _signin_form(request, back=back)


@router.post("/signin")
async def signin_submit(request: Request, name: Annotated[str, Form(max_length=200)] = "",
                        password: Annotated[str, Form(max_length=1024)] = "",
                        csrf_token: Annotated[str, Form(max_length=200)] = "",
                        next: Annotated[str, Form(max_length=2000)] = "") -> Response:
    console = console_of(request)
    back = local_path(next)
    if not same_token(request.cookies.get(console.signin_cookie) or "", csrf_token):
        return await _signin_form(request, "The form has expired; please sign in again.", 403, name, back)
    outcome, account, token, _, _ = await sign_in(console, name, password, client_ip(request),
                                                  request.headers.get("user-agent", ""))
    if outcome == "rate-limited":
        return await _signin_form(request, "Too many failed sign-ins. Try again later.", 429, name, back)
    if account is None:
        return await _signin_form(request, "Wrong name or password.", 401, name, back)
    response = redirect(back or "/trace")
    response.set_cookie(console.session_cookie, token, **console.cookie_options(console.session_seconds))
    response.delete_cookie(console.signin_cookie, path="/", secure=console.config.secure_cookies, httponly=True,
                           samesite="strict")
    return response


@router.post("/signout")
async def signout(request: Request, session: Annotated[Session, Depends(csrf_checked)]) -> Response:
    console = console_of(request)
    await console.sessions.revoke(session.token_hash)
    await console.audit.write("signout", actor=session.principal, client_ip=client_ip(request))
    response = redirect("/signin")
    response.delete_cookie(console.session_cookie, path="/", secure=console.config.secure_cookies, httponly=True,
                           samesite="strict")
    return response


@router.get("/")
async def home() -> Response:
    return redirect("/trace")


@router.get("/favicon.ico")
async def favicon() -> Response:
    return RedirectResponse("/static/favicon.svg", status_code=301)


@router.get("/password")
async def password_page(request: Request, _: Annotated[Principal, Depends(principal)]) -> Response:
    return await render(request, "password.html", error="", done=False)


@router.post("/password")
async def password_submit(request: Request, session: Annotated[Session, Depends(csrf_checked)],
                          current: Annotated[str, Form(max_length=1024)] = "",
                          new: Annotated[str, Form(max_length=1024)] = "",
                          repeat: Annotated[str, Form(max_length=1024)] = "") -> Response:
    console = console_of(request)
    if new != repeat:
        return await render(request, "password.html", 400, error="The two new passwords differ.", done=False)
    outcome, token, csrf = await change_own_password(console, session, current, new, client_ip(request),
                                                     request.headers.get("user-agent", ""))
    if outcome != "ok":
        message = {"rate-limited": "Too many failed attempts. Try again later.",
                   "wrong": "The current password is wrong."}.get(outcome, outcome.capitalize() + ".")
        return await render(request, "password.html", 429 if outcome == "rate-limited" else 400, error=message,
                            done=False)
    request.scope["console_session"] = Session(session.principal, csrf, token_hash(token))
    response = await render(request, "password.html", error="", done=True)
    response.set_cookie(console.session_cookie, token, **console.cookie_options(console.session_seconds))
    return response


# --- the trace ---------------------------------------------------------------------------------------

@router.get("/trace")
async def trace_page(request: Request, who: Annotated[Principal, Depends(need(Right.trace_read))],
                     sender: str = "", recipient: str = "", message_id: str = "", client_ip: str = "",
                     since: str = "", until: str = "", status: str = "", after: str = "") -> Response:
    form = {"sender": sender[:320], "recipient": recipient[:320], "message_id": message_id[:998],
            "client_ip": client_ip[:64], "since": since[:10], "until": until[:10], "status": status[:32]}
    results, error = None, ""
    asked = bool(request.query_params) or not who.sees_everything  # an empty form lists the last two days
    if asked:
        try:
            start, end = day_range(form["since"], form["until"])
            query = TraceQuery(form["sender"], form["recipient"], form["message_id"], form["client_ip"], start, end,
                               50, after[:300] or None, form["status"])
            results = await console_of(request).search.search(query, who)
        except SearchError as exc:
            error = str(exc)
    return await render(request, "trace.html", 400 if error else 200, form=form, results=results, error=error,
                        mailboxes=sorted(who.addresses), statuses=STATUSES)


@router.get("/trace/{message_id}")
async def message_page(message_id: str, request: Request,
                       who: Annotated[Principal, Depends(need(Right.trace_read))]) -> Response:
    console = console_of(request)
    timeline = await console.search.timeline(message_id[:200], who)
    if timeline is None:
        raise NotFound()
    auth = None
    if timeline.held_id and console.quarantine is not None:
        auth = await console.quarantine.auth_results(timeline.held_id, who)
    return await render(request, "message.html", timeline=timeline, auth=auth)


# --- the audit log -----------------------------------------------------------------------------------

@router.get("/audit")
async def audit_page(request: Request, _: Annotated[Principal, Depends(need(Right.audit_read))],
                     before: int | None = None, actor: str = "", action: str = "", target: str = "") -> Response:
    if before is not None and not 1 <= before < 2**63:
        before = None
    form = {"actor": actor[:200], "action": action[:100], "target": target[:500]}
    entries, next_before = await console_of(request).audit.page(limit=100, before=before, **form)
    return await render(request, "audit.html", entries=entries, next_before=next_before, form=form)


# --- accounts ----------------------------------------------------------------------------------------

async def _accounts_page(request: Request, status_code: int = 200, **context: Any) -> Response:
    accounts = await console_of(request).accounts.list()
    context.setdefault("error", "")
    context.setdefault("created", None)
    return await render(request, "accounts.html", status_code, accounts=accounts, roles=list(Role), **context)


def _addresses(text: str) -> list[str]:
    return [a for a in text.replace(",", " ").split() if a][:1000]


@router.get("/accounts")
async def accounts_page(request: Request, _: Annotated[Principal, Depends(need(Right.accounts_manage))]) -> Response:
    return await _accounts_page(request)


@router.post("/accounts")
async def accounts_create(request: Request, who: Annotated[Principal, Depends(need_for_change(Right.accounts_manage))],
                          name: Annotated[str, Form(max_length=200)] = "", role: Annotated[str, Form()] = "user",
                          addresses: Annotated[str, Form(max_length=100_000)] = "") -> Response:
    try:
        account, password = await create_account(console_of(request), who, client_ip(request), name, Role(role),
                                                 _addresses(addresses), None)
    except (AccountError, ValueError) as exc:
        return await _accounts_page(request, 400, error=str(exc))
    return await _accounts_page(request, 201, created=(account.name, password))


@router.post("/accounts/{account_id}")
async def accounts_change(account_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)], request: Request,
                          who: Annotated[Principal, Depends(need_for_change(Right.accounts_manage))],
                          role: Annotated[str, Form()] = "user",
                          addresses: Annotated[str, Form(max_length=100_000)] = "",
                          disabled: Annotated[str, Form()] = "",
                          reset_password: Annotated[str, Form()] = "") -> Response:
    console = console_of(request)
    password = generate_password() if reset_password else None
    try:
        change = AccountChange(role=Role(role), addresses=_addresses(addresses), disabled=bool(disabled),
                               password=password)
        account = await change_account(console, who, client_ip(request), account_id, change)
    except (AccountError, ValueError) as exc:
        return await _accounts_page(request, 400, error=str(exc))
    return await _accounts_page(request, created=(account.name, password) if password else None,
                                changed=account.name)


# --- the quarantine ------------------------------------------------------------------------------------

@router.get("/quarantine")
async def quarantine_page(request: Request, who: Annotated[Principal, Depends(need(Right.quarantine_read))],
                          reason: str = "", recipient: str = "", sender: str = "", since: str = "", until: str = "",
                          after: str = "", deleted: str = "") -> Response:
    form = {"reason": reason[:64], "recipient": recipient[:320], "sender": sender[:320], "since": since[:10],
            "until": until[:10]}
    page, error = None, ""
    try:
        start, end = day_range(form["since"], form["until"])
        query = HeldQuery(form["reason"], form["recipient"], form["sender"], start, end, 50, after[:300] or None)
        page = await quarantine_of(request).page(query, who)
    except (SearchError, QueryError) as exc:
        error = str(exc)
    return await render(request, "quarantine.html", 400 if error else 200, form=form, page=page, error=error,
                        reasons=REASONS, mailboxes=sorted(who.addresses), deleted=deleted[:200])


async def _held_page(request: Request, qid: str, who: Principal, status_code: int = 200, **context: Any) -> Response:
    view = await quarantine_of(request).view(qid[:200], who)
    if view is None:
        raise NotFound()
    context.setdefault("error", "")
    context.setdefault("outcome", None)
    return await render(request, "held.html", status_code, view=view, held=view.held, **context)


@router.get("/quarantine/{qid}")
async def held_page(qid: str, request: Request,
                    who: Annotated[Principal, Depends(need(Right.quarantine_read))]) -> Response:
    return await _held_page(request, qid, who)


async def _release_form(request: Request, qid: str, who: Principal, not_junk: bool) -> Response:
    form = await request.form()
    recipients = [v for v in form.getlist("recipient") if isinstance(v, str)][:1000]
    try:
        outcome = await release_held(request, who, qid[:200], recipients, not_junk=not_junk)
    except ReleaseError as exc:
        return await _held_page(request, qid, who, 400, error=str(exc))
    return await _held_page(request, qid, who, outcome=outcome)


@router.post("/quarantine/{qid}/release")
async def held_release(qid: str, request: Request,
                       who: Annotated[Principal, Depends(need_for_change(Right.quarantine_release))]) -> Response:
    return await _release_form(request, qid, who, not_junk=False)


@router.post("/quarantine/{qid}/not-junk")
async def held_not_junk(qid: str, request: Request,
                        who: Annotated[Principal, Depends(need_for_change(Right.quarantine_release))]) -> Response:
    return await _release_form(request, qid, who, not_junk=True)


@router.post("/quarantine/{qid}/delete")
async def held_delete(qid: str, request: Request,
                      who: Annotated[Principal, Depends(need_for_change(Right.quarantine_delete))],
                      confirm: Annotated[str, Form(max_length=10)] = "") -> Response:
    if confirm != "yes":  # one click does not delete a message for good (no script asks "are you sure?")
        return await _held_page(request, qid, who, 400, error="Tick \"for good\" to delete the message.")
    await delete_held(request, who, qid[:200])
    return redirect("/quarantine?deleted=" + quote(qid[:200]))
