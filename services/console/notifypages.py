"""The pages a quarantine digest's links open (no sign-in: the signed token is the authority), and the release
requests they make, which administrators read in the console.

- ``GET /notify/{token}``: the held message made safe (as on its console page), for the link's recipient only;
  a ``release`` or ``request`` link adds a confirm form. A GET changes nothing, so a mail scanner that
  fetches the link releases nothing.
- ``POST /notify/{token}``: the confirmation. Its form carries a token bound to a cookie the GET set
  (``SameSite=Strict``, HttpOnly; a cross-site post has no cookie): refused without it. ``release`` releases
  to that recipient through ``ConsoleQuarantine.release`` as an end user whose one mailbox is the recipient
  (``quarantine.release_by`` and the once-per-recipient claim apply); ``request`` records a release request.
  Used again: "already released" (or "already requested"). Both are audited (actor ``<recipient> (digest
  link)``, from the client's address).
- ``GET /release-requests`` and ``GET /api/release-requests``: the requests (administrators).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import psycopg
from fastapi import APIRouter, Depends, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from psycopg.rows import dict_row
from pydantic import BaseModel

from mailmoat_records.quarantine import ReleaseError

from .core import Console, CsrfRefused, client_ip, console_of, need
from .notifylinks import MAX_TOKEN, Link, LinkExpired, LinkInvalid, LinkSigner, link_signer
from .pages import render
from .quarantine import ConsoleQuarantine, HeldView
from .rights import Principal, Right, Role, normalize_address
from .sessions import new_token, same_token

LINK_COOKIE = "mailmoat_link"
"""The confirm form's cookie (its value is the form's token)."""
LINK_FIELD = "link_csrf"
router = APIRouter()


class ReleaseRequest(BaseModel):
    """A recipient's request, from a digest's link, that an administrator release a held message."""

    id: str
    recipient: str
    requested_at: datetime
    client_ip: str | None
    reason: str
    result: str | None
    sender: str
    author: str
    state: str
    """The recipient's state in the quarantine: ``held``, ``releasing`` or ``released``."""


class ReleaseRequestList(BaseModel):
    requests: list[ReleaseRequest]


def link_principal(link: Link) -> Principal:
    """The link's holder as the quarantine's rights see them: an end user whose one mailbox is the recipient."""
    return Principal(0, f"{link.recipient} (digest link)", Role.user, frozenset({normalize_address(link.recipient)}))


def cookie_name(console: Console) -> str:
    return ("__Host-" if console.config.secure_cookies else "") + LINK_COOKIE


async def signer_of(request: Request) -> LinkSigner:
    """The links' signer (its key read from the database once per process)."""
    signer = getattr(request.app.state, "link_signer", None)
    if signer is None:
        quarantine = console_of(request).quarantine
        assert quarantine is not None
        signer = request.app.state.link_signer = await link_signer(quarantine.pool)
    return signer


def _quarantine(request: Request) -> ConsoleQuarantine | None:
    return console_of(request).quarantine


async def _requested(quarantine: ConsoleQuarantine, link: Link) -> bool:
    async with quarantine.pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM console_release_requests WHERE qid = %s AND recipient = %s",
                                 (link.qid, link.recipient))
        return await cur.fetchone() is not None


async def _page(request: Request, status: int = 200, **context: Any) -> Response:
    context.setdefault("problem", "")
    context.setdefault("view", None)
    context.setdefault("link", None)
    context.setdefault("done", "")
    context.setdefault("form_token", "")
    context.setdefault("requested", False)
    return await render(request, "notify.html", status, link_field=LINK_FIELD, **context)


async def _open(request: Request, token: str) -> tuple[Link | None, HeldView | None, Response | None]:
    """The link and its message as the recipient may see it, or the page saying why not."""
    quarantine = _quarantine(request)
    if quarantine is None:
        return None, None, await _page(request, 404, problem="The quarantine is not available here.")
    try:
        link = (await signer_of(request)).verify(token)
    except LinkExpired:
        return None, None, await _page(request, 410, problem="This link has expired. Sign in to the console, or ask "
                                       "your administrator.")
    except LinkInvalid:
        return None, None, await _page(request, 400, problem="This link is not valid (it may have been cut short "
                                       "when it was copied).")
    view = await quarantine.view(link.qid, link_principal(link))
    if view is None or not view.recipients:
        return link, None, await _page(request, 404, link=link, problem="This message is no longer in quarantine "
                                       "(its retention ended, or it was deleted).")
    return link, view, None


def _released(view: HeldView, link: Link) -> bool:
    return link.recipient in {normalize_address(r) for r in view.released}


@router.get("/notify/{token}", include_in_schema=False)
async def link_page(request: Request, token: Annotated[str, PathParam(max_length=MAX_TOKEN)]) -> Response:
    link, view, refused = await _open(request, token)
    if refused is not None:
        return refused
    assert link is not None and view is not None
    console = console_of(request)
    requested = link.action == "request" and await _requested(console.quarantine, link)  # type: ignore[arg-type]
    done = "already released" if _released(view, link) else "already requested" if requested else ""
    wants_form = link.action in ("release", "request") and not done
    form_token = ""
    if wants_form:
        form_token = request.cookies.get(cookie_name(console)) or ""
        if not 32 <= len(form_token) <= 100:
            form_token = new_token()
    response = await _page(request, link=link, view=view, done=done, form_token=form_token, requested=requested,
                           token_path=quote(token, safe=""))
    if wants_form:
        response.set_cookie(cookie_name(console), form_token, **console.cookie_options(3600))
    return response


@router.post("/notify/{token}", include_in_schema=False)
async def link_confirm(request: Request, token: Annotated[str, PathParam(max_length=MAX_TOKEN)],
                       link_csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    console = console_of(request)
    if not same_token(request.cookies.get(cookie_name(console)) or "", link_csrf):
        raise CsrfRefused()
    link, view, refused = await _open(request, token)
    if refused is not None:
        return refused
    assert link is not None and view is not None and console.quarantine is not None
    ip, actor = client_ip(request), f"{link.recipient} (digest link)"
    if link.action == "view":
        return await _page(request, 400, link=link, view=view, problem="This link only shows the message.")
    if link.action == "request":
        return await _request_release(request, console, link, view, ip, actor)
    try:
        done = await console.quarantine.release(link.qid, link_principal(link), [link.recipient])
    except ReleaseError as exc:
        await console.audit.write("quarantine.release", actor=actor, client_ip=ip, target=link.qid, outcome="refused",
                                  detail={"via": "digest link", "recipients": [link.recipient], "reason": str(exc)})
        return await _page(request, 403, link=link, view=view, problem=f"Not released: {exc}.")
    if done is None:
        return await _page(request, 404, link=link, problem="This message is no longer in quarantine.")
    await console.audit.write("quarantine.release", actor=actor, client_ip=ip, target=link.qid,
                              outcome="ok" if done.recipients else "already",
                              detail={"via": "digest link", "released": done.recipients, "already": done.already})
    view = await console.quarantine.view(link.qid, link_principal(link)) or view
    return await _page(request, link=link, view=view, done="released" if done.recipients else "already released")


async def _request_release(request: Request, console: Console, link: Link, view: HeldView, ip: str | None,
                           actor: str) -> Response:
    if _released(view, link):
        return await _page(request, link=link, view=view, done="already released")
    assert console.quarantine is not None
    try:
        async with console.quarantine.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO console_release_requests (qid, recipient, client_ip) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1", (link.qid, link.recipient, ip))
            made = await cur.fetchone() is not None
    except psycopg.errors.ForeignKeyViolation:  # deleted meanwhile
        return await _page(request, 404, link=link, problem="This message is no longer in quarantine.")
    await console.audit.write("quarantine.release-request", actor=actor, client_ip=ip, target=link.qid,
                              outcome="ok" if made else "already",
                              detail={"via": "digest link", "recipient": link.recipient})
    return await _page(request, link=link, view=view, done="requested" if made else "already requested",
                       requested=True)


# --- the requests, for administrators -----------------------------------------------------------------

async def release_requests(console: Console, limit: int = 200) -> list[ReleaseRequest]:
    """The newest release requests of messages still held (expired or deleted ones are gone)."""
    if console.quarantine is None:
        return []
    async with console.quarantine.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT rr.qid AS id, rr.recipient, rr.requested_at, host(rr.client_ip) AS client_ip, q.reason, q.result, "
            "q.sender, q.author, coalesce(r.state, 'held') AS state "
            "FROM console_release_requests rr JOIN quarantine q ON q.qid = rr.qid AND q.expires > now() "
            "LEFT JOIN quarantine_recipients r ON r.qid = rr.qid AND r.recipient = rr.recipient "
            "ORDER BY rr.requested_at DESC, rr.qid LIMIT %s", (limit,))
        return [ReleaseRequest(**row) for row in await cur.fetchall()]


@router.get("/release-requests", include_in_schema=False)
async def release_requests_page(request: Request,
                                _: Annotated[Principal, Depends(need(Right.quarantine_release_any))]) -> Response:
    return await render(request, "release_requests.html", requests=await release_requests(console_of(request)))


@router.get("/api/release-requests", response_model=ReleaseRequestList,
            responses={401: {"description": "not signed in"}, 403: {"description": "not an administrator"}})
async def api_release_requests(request: Request,
                               _: Annotated[Principal, Depends(need(Right.quarantine_release_any))]) -> Any:
    """Release requests made from quarantine digests' links, newest first (administrators)."""
    return ReleaseRequestList(requests=await release_requests(console_of(request)))
