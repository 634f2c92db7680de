"""The queues and policy routes, API and pages: deferred mail per destination with retry now, bounce and delete
(administrators; the help desk reads), the policy in force, a draft's check and the mail-flow rules' hits (admins
and the help desk). Their stores hang on ``app.state`` (``install``); without them the routes answer 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailmoat_records.deferred import ACTIONS

from .api import Problem, utc
from .core import NotFound, client_ip, console_of, need, need_for_change
from .pages import day_range, redirect, render
from .policypages import (
    MAX_DRAFT,
    CheckResult,
    PolicyInForce,
    PolicyPages,
    RangeError,
    RuleHits,
    check_draft,
    hits_range,
)
from .queues import ActionError, ConsoleQueues, Destination
from .rights import Principal, Right
from .tracesearch import SearchError

api_router = APIRouter(prefix="/api", tags=["console"])
page_router = APIRouter(include_in_schema=False)
_AUTH = {401: {"model": Problem}, 403: {"model": Problem}}
ACTION_WORDS = {"retry": "Retry now asked", "bounce": "Bounce asked", "delete": "Delete asked"}


def install(app: FastAPI, queues: ConsoleQueues | None, policy: PolicyPages | None) -> None:
    app.state.queues = queues
    app.state.policy = policy


def queues_of(request: Request) -> ConsoleQueues:
    found = getattr(request.app.state, "queues", None)
    if found is None:
        raise NotFound()
    return found


def policy_of(request: Request) -> PolicyPages:
    found = getattr(request.app.state, "policy", None)
    if found is None:
        raise NotFound()
    return found


async def ask(request: Request, who: Principal, action: str, message_id: str, route: str) -> bool:
    """Send an action on a deferred copy to egress, audited (``queue.retry``, ``queue.bounce``, ``queue.delete``);
    False when the copy is no longer deferred; ``ActionError`` for an action that is none of them."""
    if action not in ACTIONS:
        raise ActionError(f"not an action: {action!r}")
    found = await queues_of(request).ask(action, message_id, route, f"{who.role.value} {who.name}")
    await console_of(request).audit.write(
        f"queue.{action}", actor=who, client_ip=client_ip(request), target=message_id,
        outcome="requested" if found else "not-deferred",
        detail={"route": route, **({"recipients": found.recipients, "destination": found.destination,
                                    "last_error": found.last_error[:300]} if found else {})})
    return found is not None


# --- API -------------------------------------------------------------------------------------------------

class QueuesOut(BaseModel):
    destinations: list[Destination]
    copies: int
    may_act: bool = Field(description="You may retry, bounce or delete")


class CopyRef(BaseModel):
    id: str = Field(min_length=1, max_length=200, description="The message's queue id")
    route: str = Field(min_length=1, max_length=200, description="The copy's route")


class Asked(BaseModel):
    outcome: Literal["requested"]
    detail: str


class DraftIn(BaseModel):
    yaml: str = Field(max_length=MAX_DRAFT)


@api_router.get("/queues", response_model=QueuesOut, responses=_AUTH)
async def api_queues(request: Request, who: Annotated[Principal, Depends(need(Right.queues_read))]) -> QueuesOut:
    """Deferred mail (egress's delay queues) per destination, each copy with its next attempt and last error."""
    groups = await queues_of(request).destinations()
    return QueuesOut(destinations=groups, copies=sum(g.count for g in groups), may_act=who.can(Right.queues_manage))


@api_router.post("/queues/{action}", response_model=Asked, status_code=202,
                 responses={**_AUTH, 404: {"model": Problem}, 503: {"model": Problem}})
async def api_queue_action(action: Literal["retry", "bounce", "delete"], body: CopyRef, request: Request,
                           who: Annotated[Principal, Depends(need_for_change(Right.queues_manage))]) -> Any:
    """Ask egress to retry a deferred copy now, bounce it (a DSN to the sender) or delete it (traced DELETE);
    404 when it is no longer deferred."""
    if not await ask(request, who, action, body.id, body.route):
        raise NotFound()
    return Asked(outcome="requested", detail=f"{action} sent to egress")


@api_router.get("/policy", response_model=PolicyInForce, responses={**_AUTH, 404: {"model": Problem}})
async def api_policy(request: Request, _: Annotated[Principal, Depends(need(Right.policy_read))]) -> PolicyInForce:
    """The policy file in force, as written (read-only)."""
    return await policy_of(request).in_force()


@api_router.post("/policy/check", response_model=CheckResult, responses={**_AUTH, 404: {"model": Problem}})
async def api_policy_check(body: DraftIn, request: Request,
                           _: Annotated[Principal, Depends(need_for_change(Right.policy_read))]) -> CheckResult:
    """Check a draft policy as `mailmoat policy check` does: the errors by field path. Nothing is changed."""
    policy_of(request)
    return check_draft(body.yaml)


@api_router.get("/policy/rule-hits", response_model=list[RuleHits],
                responses={**_AUTH, 400: {"model": Problem}, 404: {"model": Problem}})
async def api_rule_hits(request: Request, _: Annotated[Principal, Depends(need(Right.policy_read))],
                        since: datetime | None = None, until: datetime | None = None) -> Any:
    """Mail-flow rule hits (RULE events of the trace) per rule and mode in [since, until) (default: the last 7
    days), with the rules in force that had none."""
    try:
        start, end = hits_range(utc(since), utc(until))
    except RangeError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return await policy_of(request).rule_hits(start, end)


# --- pages -----------------------------------------------------------------------------------------------

@page_router.get("/queues")
async def queues_page(request: Request, who: Annotated[Principal, Depends(need(Right.queues_read))],
                      done: str = "", gone: str = "", confirm: str = "") -> Response:
    groups = await queues_of(request).destinations()
    return await render(request, "queues.html", groups=groups, copies=sum(g.count for g in groups),
                        may_act=who.can(Right.queues_manage), done=done[:20], gone=gone[:200], words=ACTION_WORDS,
                        confirm=confirm[:200])


@page_router.post("/queues/{action}")
async def queues_action(action: str, request: Request,
                        who: Annotated[Principal, Depends(need_for_change(Right.queues_manage))],
                        id: Annotated[str, Form(max_length=200)] = "",
                        route: Annotated[str, Form(max_length=200)] = "",
                        confirm: Annotated[str, Form(max_length=10)] = "") -> Response:
    if action == "delete" and confirm != "yes":  # mail dropped without a DSN: not on one stray click
        return redirect("/queues?confirm=" + quote(id[:200]))
    try:
        found = await ask(request, who, action, id, route)
    except ActionError:
        raise NotFound() from None
    if not found:
        return redirect("/queues?gone=" + quote(id))
    return redirect(f"/queues?done={quote(action)}&gone=")


async def _policy_page(request: Request, status_code: int = 200, *, since: str = "", until: str = "",
                       draft: str = "", check: CheckResult | None = None) -> Response:
    pages = policy_of(request)
    error, hits = "", []
    try:
        start, end = day_range(since[:10], until[:10])
        start, end = hits_range(start, end)
        hits = await pages.rule_hits(start, end)
    except (SearchError, RangeError) as exc:
        error, start, end = str(exc), None, None
    return await render(request, "policy.html", 400 if error and status_code == 200 else status_code,
                        policy=await pages.in_force(), hits=hits, hits_error=error, since=since[:10],
                        until=until[:10], shown_from=start, shown_to=end, draft=draft, check=check)


@page_router.get("/policy")
async def policy_page(request: Request, _: Annotated[Principal, Depends(need(Right.policy_read))],
                      since: Annotated[str, Query(max_length=10)] = "",
                      until: Annotated[str, Query(max_length=10)] = "") -> Response:
    return await _policy_page(request, since=since, until=until)


@page_router.post("/policy/check")
async def policy_check_page(request: Request, _: Annotated[Principal, Depends(need_for_change(Right.policy_read))],
                            draft: Annotated[str, Form(max_length=MAX_DRAFT)] = "",
                            upload: Annotated[UploadFile | None, File()] = None) -> Response:
    text = draft
    if upload is not None and upload.filename:
        raw = await upload.read(MAX_DRAFT + 1)
        text = raw.decode("utf-8", errors="replace")
    result = check_draft(text)
    return await _policy_page(request, draft=text[:MAX_DRAFT], check=result)  # a draft with errors: checked, 200
