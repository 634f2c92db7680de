"""The JSON API (``/api``), described by ``/api/openapi.json``. Reads need a session cookie; changes
need it and the session's CSRF token in ``X-CSRF-Token``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailmoat_records.quarantine import ReleaseError
from mailmoat_records.tracedb import MessageSummary

from .accounts import Account, AccountError
from .audit import AuditEntry
from .core import (
    Console,
    NotFound,
    change_own_password,
    client_ip,
    console_of,
    csrf_checked,
    need,
    need_for_change,
    principal,
    sign_in,
)
from .passwords import generate_password, password_problem
from .quarantine import MAX_LIMIT as QUARANTINE_MAX_LIMIT
from .quarantine import ConsoleQuarantine, HeldQuery, HeldRow, QueryError
from .rights import Principal, Right, Role
from .sessions import Session
from .tracesearch import MAX_LIMIT, SearchError, TraceQuery

STATUS_HELP = "a status (DELIVER, DEFER, QUARANTINE, ...): one recipient's latest outcome"

router = APIRouter(prefix="/api", tags=["console"])


class Problem(BaseModel):
    detail: str


class Me(BaseModel):
    id: int
    name: str
    role: Role
    addresses: list[str]
    rights: list[str]


class SignIn(BaseModel):
    name: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class SignedIn(BaseModel):
    account: Me
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every change")


class PasswordChange(BaseModel):
    current: str = Field(max_length=1024)
    new: str = Field(max_length=1024)


class AccountOut(BaseModel):
    id: int
    name: str
    role: Role
    addresses: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime


class AccountNew(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    addresses: list[Annotated[str, Field(max_length=320)]] = Field(default_factory=list, max_length=1000)
    password: str | None = Field(default=None, max_length=1024,
                                 description="None: a password is generated and returned once")


class AccountCreated(BaseModel):
    account: AccountOut
    password: str | None = Field(description="The generated password (shown once), when none was given")


class AccountChange(BaseModel):
    role: Role | None = None
    addresses: list[Annotated[str, Field(max_length=320)]] | None = Field(default=None, max_length=1000)
    disabled: bool | None = None
    password: str | None = Field(default=None, max_length=1024)


class MessageOut(BaseModel):
    message_id: str
    at: datetime
    sender: str | None
    recipients: list[str]
    message_id_header: str | None
    client_ip: str | None
    last_event: str | None = Field(description="The message's most pressing status (see statuses)")
    statuses: list[str] = Field(default_factory=list, description=(
        "The distinct statuses of the recipients shown (each one's latest outcome: DELIVER, DEFER, FAIL, "
        "QUARANTINE, ...), most pressing first"))


class TracePage(BaseModel):
    messages: list[MessageOut]
    next: str | None = Field(description="Pass as after= for the next page; null: no more")
    looked_up: str


class EventOut(BaseModel):
    at: datetime
    event: str
    service: str
    recipients: list[str]
    detail: str
    data: dict[str, Any]


class DeliveryOut(BaseModel):
    recipient: str
    status: str
    at: datetime
    service: str
    detail: str


class SpamOut(BaseModel):
    """The antispam verdict, as its report header says it."""

    result: str
    scl: Any
    bcl: Any
    sfv: str
    cat: str
    score: Any
    rules: list[str]
    dmarc: str
    author: str


class AuthResultOut(BaseModel):
    method: str
    result: str
    comment: str
    properties: str


class TimelineOut(BaseModel):
    message: MessageOut
    events: list[EventOut]
    verdicts: dict[str, Any]
    deliveries: list[DeliveryOut] = Field(description="Each recipient shown and its latest outcome")
    spam: SpamOut | None = Field(description="The antispam verdict decoded, when the stage saw the message")
    quarantine_id: str | None = Field(description="The held message's id when it was quarantined")
    authentication_results: list[AuthResultOut] = Field(
        default_factory=list, description="The gateway's Authentication-Results of the held copy (held messages), "
                                          "else SPF, DKIM, DMARC, ARC and compauth as the antispam stage traced them")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None


def utc(value: datetime | None) -> datetime | None:
    """A date-time without a zone is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def me(who: Principal) -> Me:
    return Me(id=who.account_id, name=who.name, role=who.role, addresses=sorted(who.addresses),
              rights=sorted(r.value for r in Right if who.can(r)))


def account_out(account: Account) -> AccountOut:
    return AccountOut(id=account.id, name=account.name, role=account.role, addresses=list(account.addresses),
                      disabled=account.disabled, created_at=account.created_at, updated_at=account.updated_at,
                      password_changed_at=account.password_changed_at)


def message_out(summary: MessageSummary) -> MessageOut:
    return MessageOut(message_id=summary.message_id, at=summary.at, sender=summary.sender,
                      recipients=summary.recipients, message_id_header=summary.message_id_header,
                      client_ip=summary.client_ip, last_event=summary.last_event,
                      statuses=list(getattr(summary, "statuses", None) or ([summary.last_event] if summary.last_event
                                                                           else [])))


async def create_account(console: Console, who: Principal, ip: str | None, name: str, role: Role,
                         addresses: list[str], password: str | None) -> tuple[Account, str | None]:
    """Create and audit an account; the generated password when none was given."""
    generated = None if password else generate_password()
    account = await console.accounts.create(name, role, password or generated or "", addresses)
    await console.audit.write("account.create", actor=who, client_ip=ip, target=account.name,
                              detail={"role": account.role.value, "addresses": list(account.addresses),
                                      "password": "generated" if generated else "given"})
    return account, generated


async def change_account(console: Console, who: Principal, ip: str | None, account_id: int,
                         change: AccountChange) -> Account:
    """Change and audit an account (a new password revokes its sessions); NotFound when there is none."""
    problem = password_problem(change.password) if change.password is not None else None
    if problem:
        raise AccountError(problem)
    account = await console.accounts.update(account_id, role=change.role, addresses=change.addresses,
                                            disabled=change.disabled)
    if account is None:
        raise NotFound()
    if change.password is not None:
        await console.accounts.set_password(account_id, change.password)
    detail = {k: v for k, v in change.model_dump(mode="json", exclude_none=True).items() if k != "password"}
    if change.password is not None:
        detail["password"] = "changed"
    await console.audit.write("account.change", actor=who, client_ip=ip, target=account.name, detail=detail)
    return account


_BAD_REQUEST = {400: {"model": Problem}}
_AUTH = {401: {"model": Problem}, 403: {"model": Problem}}


@router.post("/session", response_model=SignedIn, responses={401: {"model": Problem}, 429: {"model": Problem}})
async def api_sign_in(body: SignIn, request: Request, response: Response) -> Any:
    """Sign in: sets the session cookie (HttpOnly, SameSite=Strict) and returns the CSRF token."""
    console = console_of(request)
    outcome, account, token, csrf, retry = await sign_in(console, body.name, body.password, client_ip(request),
                                                         request.headers.get("user-agent", ""))
    if outcome == "rate-limited":
        return JSONResponse({"detail": "too many failed sign-ins; try again later"}, status_code=429,
                            headers={"Retry-After": str(retry)})
    if account is None:
        return JSONResponse({"detail": "wrong name or password"}, status_code=401)
    response.set_cookie(console.session_cookie, token, **console.cookie_options(console.session_seconds))
    return SignedIn(account=me(account.principal), csrf_token=csrf)


@router.delete("/session", status_code=204, responses=_AUTH)
async def api_sign_out(request: Request, session: Annotated[Session, Depends(csrf_checked)]) -> Response:
    console = console_of(request)
    await console.sessions.revoke(session.token_hash)
    await console.audit.write("signout", actor=session.principal, client_ip=client_ip(request))
    response = Response(status_code=204)
    response.delete_cookie(console.session_cookie, path="/", secure=console.config.secure_cookies, httponly=True,
                           samesite="strict")
    return response


@router.get("/me", response_model=Me, responses=_AUTH)
async def api_me(who: Annotated[Principal, Depends(principal)]) -> Me:
    return me(who)


@router.post("/me/password", response_model=SignedIn,
             responses={**_AUTH, **_BAD_REQUEST, 429: {"model": Problem}})
async def api_change_password(body: PasswordChange, request: Request,
                              session: Annotated[Session, Depends(csrf_checked)]) -> Any:
    """Change your own password: every session of the account ends; this one goes on with a new cookie and
    CSRF token (returned)."""
    console = console_of(request)
    outcome, token, csrf = await change_own_password(console, session, body.current, body.new, client_ip(request),
                                                     request.headers.get("user-agent", ""))
    if outcome == "rate-limited":
        return JSONResponse({"detail": "too many failed attempts; try again later"}, status_code=429)
    if outcome == "wrong":
        return JSONResponse({"detail": "the current password is wrong"}, status_code=400)
    if outcome != "ok":
        return JSONResponse({"detail": outcome}, status_code=400)
    response = JSONResponse(SignedIn(account=me(session.principal), csrf_token=csrf).model_dump(mode="json"))
    response.set_cookie(console.session_cookie, token, **console.cookie_options(console.session_seconds))
    return response


@router.get("/trace", response_model=TracePage, responses={**_AUTH, **_BAD_REQUEST})
async def api_trace(request: Request, who: Annotated[Principal, Depends(need(Right.trace_read))],
                    sender: Annotated[str, Query(max_length=320)] = "",
                    recipient: Annotated[str, Query(max_length=320)] = "",
                    message_id: Annotated[str, Query(max_length=998)] = "",
                    client_ip: Annotated[str, Query(max_length=64)] = "",
                    since: datetime | None = None, until: datetime | None = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
                    after: Annotated[str | None, Query(max_length=300)] = None,
                    status: Annotated[str, Query(max_length=32, description=STATUS_HELP)] = ""
                    ) -> Any:
    """Messages by sender, recipient, Message-ID (or queue id) and client IP in [since, until), newest first; with
    none of those four, every message received in [since, until) (by default the 2 days up to until or now;
    ``looked_up`` is ``range``). An end user sees only messages addressed to their own mailboxes."""
    query = TraceQuery(sender, recipient, message_id, client_ip, since, until, limit, after, status)
    try:
        found = await console_of(request).search.search(query, who)
    except SearchError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return TracePage(messages=[message_out(m) for m in found.messages], next=found.next, looked_up=found.looked_up)


@router.get("/trace/{message_id}", response_model=TimelineOut, responses={**_AUTH, 404: {"model": Problem}})
async def api_message(message_id: Annotated[str, Path(max_length=200)], request: Request,
                      who: Annotated[Principal, Depends(need(Right.trace_read))]) -> TimelineOut:
    """A message's summary, events (oldest first) and verdicts; 404 when it is not there or not yours."""
    console = console_of(request)
    timeline = await console.search.timeline(message_id, who)
    if timeline is None:
        raise NotFound()
    auth = None
    if timeline.held_id and console.quarantine is not None:
        auth = await console.quarantine.auth_results(timeline.held_id, who)
    found = timeline.statuses
    summary = timeline.summary
    message = message_out(summary).model_copy(update={"statuses": found, "last_event": found[0] if found else None})
    spam = timeline.spam
    return TimelineOut(message=message,
                       events=[EventOut(at=e.at, event=e.event, service=e.service, recipients=e.recipients,
                                        detail=e.detail, data=e.data) for e in timeline.events],
                       verdicts=timeline.verdicts,
                       deliveries=[DeliveryOut(**vars(d)) for d in timeline.deliveries],
                       spam=SpamOut(**vars(spam)) if spam else None, quarantine_id=timeline.held_id,
                       authentication_results=[AuthResultOut(**vars(a)) for a in (auth[1] if auth
                                                                                   else timeline.authentication)])


@router.get("/audit", response_model=AuditPage, responses=_AUTH)
async def api_audit(request: Request, _: Annotated[Principal, Depends(need(Right.audit_read))],
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                    actor: Annotated[str, Query(max_length=200, description="an account name")] = "",
                    action: Annotated[str, Query(max_length=100, description=(
                        "an action (quarantine.release), or a prefix ending in a dot (quarantine.)"))] = "",
                    target: Annotated[str, Query(max_length=500, description="a held message, queue id, account")] = ""
                    ) -> AuditPage:
    """The audit log, newest first (admins), filtered by actor, action and target when given."""
    entries, next_before = await console_of(request).audit.page(limit=limit, before=before, actor=actor,
                                                                action=action, target=target)
    return AuditPage(entries=entries, next_before=next_before)


@router.get("/accounts", response_model=list[AccountOut], responses=_AUTH)
async def api_accounts(request: Request,
                       _: Annotated[Principal, Depends(need(Right.accounts_manage))]) -> list[AccountOut]:
    return [account_out(a) for a in await console_of(request).accounts.list()]


@router.post("/accounts", response_model=AccountCreated, status_code=201, responses={**_AUTH, **_BAD_REQUEST})
async def api_create_account(body: AccountNew, request: Request,
                             who: Annotated[Principal, Depends(need_for_change(Right.accounts_manage))]) -> Any:
    try:
        account, generated = await create_account(console_of(request), who, client_ip(request), body.name,
                                                  body.role, body.addresses, body.password)
    except AccountError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return AccountCreated(account=account_out(account), password=generated)


@router.patch("/accounts/{account_id}", response_model=AccountOut,
              responses={**_AUTH, **_BAD_REQUEST, 404: {"model": Problem}})
async def api_change_account(account_id: Annotated[int, Path(ge=1, le=2**63 - 1)], body: AccountChange,
                             request: Request,
                             who: Annotated[Principal, Depends(need_for_change(Right.accounts_manage))]) -> Any:
    try:
        account = await change_account(console_of(request), who, client_ip(request), account_id, body)
    except AccountError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return account_out(account)


# --- the quarantine ------------------------------------------------------------------------------------

class HeldList(BaseModel):
    messages: list[HeldRow]
    next: str | None = Field(description="Pass as after= for the next page; null: no more")


class AttachmentOut(BaseModel):
    filename: str
    content_type: str
    size: int


class HeldDetail(HeldRow):
    """A held message opened: what its list item says, and its content made safe."""

    may_release: list[str] = Field(description="Recipients still held that you may release")
    client_ip: str | None
    subject: str
    headers: str = Field(description="The header section as text")
    html: str = Field(description="The HTML body, sanitised (no script, style, image or remote load)")
    text: str = Field(description="The plain-text body, when there is no HTML (not escaped: it is JSON)")
    attachments: list[AttachmentOut]
    notes: list[str]
    verdicts: dict[str, Any]


class ReleaseIn(BaseModel):
    recipients: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list, max_length=1000, description="Empty: every recipient you may release to")


class ReleaseOut(BaseModel):
    released: list[str] = Field(description="Released by this request")
    already: list[str] = Field(description="Released before")
    learned: str = Field(default="", description="not junk: learned, known (before), or unavailable")


def quarantine_of(request: Request) -> ConsoleQuarantine:
    found = console_of(request).quarantine
    if found is None:
        raise NotFound()
    return found


async def release_held(request: Request, who: Principal, qid: str, recipients: list[str], *,
                       not_junk: bool = False) -> ReleaseOut:
    """Release (and for "not junk" learn as ham), audited; ``NotFound`` for a message the principal may not
    see, ``ReleaseError`` when the release is refused (audited too)."""
    console, ip = console_of(request), client_ip(request)
    action = "quarantine.not-junk" if not_junk else "quarantine.release"
    try:
        done = await quarantine_of(request).release(qid, who, recipients or None)
    except ReleaseError as exc:
        await console.audit.write(action, actor=who, client_ip=ip, target=qid, outcome="refused",
                                  detail={"recipients": recipients, "reason": str(exc)})
        raise
    if done is None:
        raise NotFound()
    learned = await quarantine_of(request).learn(qid, who) if not_junk else ""
    await console.audit.write(action, actor=who, client_ip=ip, target=qid,
                              detail={"released": done.recipients, "already": done.already,
                                      **({"learned": learned} if not_junk else {})})
    return ReleaseOut(released=done.recipients, already=done.already, learned=learned)


async def delete_held(request: Request, who: Principal, qid: str) -> None:
    if not await quarantine_of(request).delete(qid, who):
        raise NotFound()
    await console_of(request).audit.write("quarantine.delete", actor=who, client_ip=client_ip(request), target=qid)


@router.get("/quarantine", response_model=HeldList, responses={**_AUTH, **_BAD_REQUEST})
async def api_quarantine(request: Request, who: Annotated[Principal, Depends(need(Right.quarantine_read))],
                         reason: Annotated[str, Query(max_length=64)] = "",
                         recipient: Annotated[str, Query(max_length=320)] = "",
                         sender: Annotated[str, Query(max_length=320)] = "",
                         since: datetime | None = None, until: datetime | None = None,
                         limit: Annotated[int, Query(ge=1, le=QUARANTINE_MAX_LIMIT)] = 50,
                         after: Annotated[str | None, Query(max_length=300)] = None) -> Any:
    """Held messages, newest first, by reason (or antivirus result), recipient, sender (envelope or From) and
    [since, until). An end user sees only messages addressed to their own mailboxes, and only those recipients."""
    query = HeldQuery(reason, recipient, sender, utc(since), utc(until), limit, after)
    try:
        found = await quarantine_of(request).page(query, who)
    except QueryError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return HeldList(messages=found.rows, next=found.next)


@router.get("/quarantine/{qid}", response_model=HeldDetail, responses={**_AUTH, 404: {"model": Problem}})
async def api_held(qid: Annotated[str, Path(max_length=200)], request: Request,
                   who: Annotated[Principal, Depends(need(Right.quarantine_read))]) -> HeldDetail:
    """A held message: headers, the body made safe, attachments listed (never opened); 404 when it is not there
    or not yours."""
    view = await quarantine_of(request).view(qid, who)
    if view is None:
        raise NotFound()
    held = view.held
    return HeldDetail(id=held.id, size=held.envelope.size, received_at=datetime.fromtimestamp(held.created, UTC),
                      expires=datetime.fromtimestamp(held.expires, UTC), reason=held.reason, result=held.result,
                      detail=held.detail, release_by=held.release_by, sender=held.envelope.mail_from,
                      author=held.author, recipients=view.recipients, released=list(view.released),
                      may_release=view.may_release, client_ip=held.envelope.client_ip, subject=view.safe.subject,
                      headers=view.safe.headers, html=view.safe.html, text=view.safe.text,
                      attachments=[AttachmentOut(filename=a.filename, content_type=a.content_type, size=a.size)
                                   for a in view.safe.attachments],
                      notes=view.safe.notes, verdicts=held.verdicts if who.sees_everything else {})


@router.post("/quarantine/{qid}/release", response_model=ReleaseOut,
             responses={**_AUTH, **_BAD_REQUEST, 404: {"model": Problem}})
async def api_release(qid: Annotated[str, Path(max_length=200)], body: ReleaseIn, request: Request,
                      who: Annotated[Principal, Depends(need_for_change(Right.quarantine_release))]) -> Any:
    """Release to the recipients given (all you may release to when none), each at most once."""
    try:
        return await release_held(request, who, qid, body.recipients)
    except ReleaseError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)


@router.post("/quarantine/{qid}/not-junk", response_model=ReleaseOut,
             responses={**_AUTH, **_BAD_REQUEST, 404: {"model": Problem}})
async def api_not_junk(qid: Annotated[str, Path(max_length=200)], body: ReleaseIn, request: Request,
                       who: Annotated[Principal, Depends(need_for_change(Right.quarantine_release))]) -> Any:
    """Release as the release does, then learn the message as ham (the antispam classifier)."""
    try:
        return await release_held(request, who, qid, body.recipients, not_junk=True)
    except ReleaseError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)


@router.delete("/quarantine/{qid}", status_code=204, responses={**_AUTH, 404: {"model": Problem}})
async def api_delete_held(qid: Annotated[str, Path(max_length=200)], request: Request,
                          who: Annotated[Principal, Depends(need_for_change(Right.quarantine_delete))]) -> Response:
    """Delete a held message for good (administrators and help desk)."""
    await delete_held(request, who, qid)
    return Response(status_code=204)
