"""Block sender: EOP's Tenant Allow/Block List entry made from the quarantine. Administrators block a held
message's sender address or its domain (or any address or domain on the list page) for a number of days (30 by
default) and remove entries; the help desk sees the list. The entries are ``sender_blocks`` rows
(``mailmoat_records.senderblocks``) the antispam stage treats as the policy's blocked senders and domains.
Every add and remove, done or refused, is audited (``sender-block.add``, ``sender-block.remove``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailmoat_records.quarantine import Held
from mailmoat_records.senderblocks import DEFAULT_DAYS, MAX_DAYS, BlockError, SenderBlock, SenderBlocks, normalize

from .api import Problem, quarantine_of
from .core import NotFound, client_ip, console_of, need, need_for_change
from .pages import TEMPLATES, redirect, render
from .rights import Principal, Right

api_router = APIRouter(prefix="/api", tags=["console"])
page_router = APIRouter(include_in_schema=False)
_AUTH = {401: {"model": Problem}, 403: {"model": Problem}}


def install(app: FastAPI, blocks: SenderBlocks | None) -> None:
    app.state.sender_blocks = blocks


def blocks_of(request: Request) -> SenderBlocks:
    found = getattr(request.app.state, "sender_blocks", None)
    if found is None:
        raise NotFound()
    return found


def block_choices(held: Held) -> list[tuple[str, str]]:
    """What a held message's page offers to block: (kind, value) for its envelope sender and its From addresses,
    then their domains; the null sender offers nothing of its own."""
    addresses: list[str] = []
    for candidate in [held.envelope.mail_from, *held.authors]:
        try:
            _, address = normalize("sender", candidate or "")
        except BlockError:
            continue
        if address not in addresses:
            addresses.append(address)
    domains = list(dict.fromkeys(a.rpartition("@")[2] for a in addresses))
    return [("sender", a) for a in addresses] + [("domain", d) for d in domains]


TEMPLATES.env.globals["block_choices"] = block_choices


async def add_block(request: Request, who: Principal, kind: str, value: str, days: int, note: str = "",
                    qid: str | None = None) -> SenderBlock:
    """Add (or renew) an entry, audited; ``BlockError`` (audited as refused) for a value that cannot be blocked."""
    audit = console_of(request).audit
    try:
        entry = await blocks_of(request).add(kind, value, by=who.name, days=days, qid=qid,
                                             note=note)
    except BlockError as exc:
        await audit.write("sender-block.add", actor=who, client_ip=client_ip(request), target=value[:200],
                          outcome="refused", detail={"kind": kind[:20], "reason": str(exc), "qid": qid})
        raise
    await audit.write("sender-block.add", actor=who, client_ip=client_ip(request), target=entry.value,
                      detail={"kind": entry.kind, "id": entry.id, "expires": entry.expires_at.isoformat(),
                              "days": days, "qid": qid, "note": entry.note})
    return entry


async def remove_block(request: Request, who: Principal, entry_id: int) -> SenderBlock | None:
    entry = await blocks_of(request).remove(entry_id)
    await console_of(request).audit.write(
        "sender-block.remove", actor=who, client_ip=client_ip(request),
        target=entry.value if entry else str(entry_id), outcome="ok" if entry else "not-found",
        detail={"id": entry_id, **({"kind": entry.kind, "expires": entry.expires_at.isoformat()} if entry else {})})
    return entry


async def held_for_block(request: Request, who: Principal, qid: str) -> Held:
    held = await quarantine_of(request).get(qid[:200], who)
    if held is None:
        raise NotFound()
    return held


# --- API -------------------------------------------------------------------------------------------------

class BlockOut(BaseModel):
    id: int
    kind: Literal["sender", "domain"]
    value: str
    created_at: datetime
    expires_at: datetime
    created_by: str
    qid: str | None = Field(description="The held message it was blocked from, if any")
    note: str

    @classmethod
    def of(cls, entry: SenderBlock) -> BlockOut:
        return cls(**entry.__dict__)


class BlockIn(BaseModel):
    kind: Literal["sender", "domain"] = "sender"
    value: str = Field(min_length=1, max_length=320, description="An address, or a domain (its subdomains too)")
    days: int = Field(DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="Days until the entry expires")
    note: str = Field("", max_length=500)


class HeldBlockIn(BaseModel):
    kind: Literal["sender", "domain"] = "sender"
    address: str | None = Field(None, max_length=320, description="One of the message's sender or From addresses "
                                "(default: the first of them)")
    days: int = Field(DEFAULT_DAYS, ge=1, le=MAX_DAYS)
    note: str = Field("", max_length=500)


class BlocksOut(BaseModel):
    entries: list[BlockOut]
    may_change: bool


def _refused(exc: BlockError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


@api_router.get("/sender-blocks", response_model=BlocksOut, responses={**_AUTH, 404: {"model": Problem}})
async def api_blocks(request: Request, who: Annotated[Principal, Depends(need(Right.senders_read))]) -> BlocksOut:
    """The senders and domains blocked from the console, in force, newest first."""
    entries = await blocks_of(request).entries()
    return BlocksOut(entries=[BlockOut.of(e) for e in entries], may_change=who.can(Right.senders_block))


@api_router.post("/sender-blocks", response_model=BlockOut, status_code=201,
                 responses={**_AUTH, 400: {"model": Problem}, 404: {"model": Problem}})
async def api_block(body: BlockIn, request: Request,
                    who: Annotated[Principal, Depends(need_for_change(Right.senders_block))]) -> Any:
    """Block an address or a domain for `days` (an entry already there is renewed)."""
    try:
        return BlockOut.of(await add_block(request, who, body.kind, body.value, body.days, body.note))
    except BlockError as exc:
        return _refused(exc)


@api_router.post("/quarantine/{qid}/block-sender", response_model=BlockOut, status_code=201,
                 responses={**_AUTH, 400: {"model": Problem}, 404: {"model": Problem}})
async def api_block_held_sender(qid: str, body: HeldBlockIn, request: Request,
                                who: Annotated[Principal, Depends(need_for_change(Right.senders_block))]) -> Any:
    """Block a held message's sender address (`kind` sender) or its domain (`kind` domain)."""
    held = await held_for_block(request, who, qid)
    senders = [v for k, v in block_choices(held) if k == "sender"]
    address = senders[0] if body.address is None and senders else (body.address or "").strip().lower()
    if address not in senders:
        return _refused(BlockError("address: not a sender or From address of this message"))
    value = address if body.kind == "sender" else address.rpartition("@")[2]
    try:
        return BlockOut.of(await add_block(request, who, body.kind, value, body.days, body.note, qid=held.id))
    except BlockError as exc:
        return _refused(exc)


@api_router.delete("/sender-blocks/{entry_id}", status_code=204,
                   responses={**_AUTH, 404: {"model": Problem}})
async def api_unblock(entry_id: int, request: Request,
                      who: Annotated[Principal, Depends(need_for_change(Right.senders_block))]) -> Response:
    """Remove an entry."""
    if await remove_block(request, who, entry_id) is None:
        raise NotFound()
    return Response(status_code=204)


# --- pages -----------------------------------------------------------------------------------------------

async def _list_page(request: Request, who: Principal, status_code: int = 200, **context: Any) -> Response:
    entries = await blocks_of(request).entries()
    context.setdefault("error", "")
    return await render(request, "sender_blocks.html", status_code, entries=entries,
                        may_change=who.can(Right.senders_block), default_days=DEFAULT_DAYS, max_days=MAX_DAYS,
                        **context)


@page_router.get("/sender-blocks")
async def blocks_page(request: Request, who: Annotated[Principal, Depends(need(Right.senders_read))],
                      added: str = "", removed: str = "") -> Response:
    return await _list_page(request, who, added=added[:320], removed=removed[:320])


@page_router.post("/sender-blocks")
async def blocks_add(request: Request, who: Annotated[Principal, Depends(need_for_change(Right.senders_block))],
                     kind: Annotated[str, Form(max_length=20)] = "sender",
                     value: Annotated[str, Form(max_length=320)] = "",
                     days: Annotated[int, Form(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
                     note: Annotated[str, Form(max_length=500)] = "") -> Response:
    try:
        entry = await add_block(request, who, kind, value, days, note)
    except BlockError as exc:
        return await _list_page(request, who, 400, error=str(exc))
    return redirect("/sender-blocks?added=" + quote(entry.value))


@page_router.post("/sender-blocks/{entry_id}/remove")
async def blocks_remove(entry_id: int, request: Request,
                        who: Annotated[Principal, Depends(need_for_change(Right.senders_block))]) -> Response:
    entry = await remove_block(request, who, entry_id)
    if entry is None:
        raise NotFound()
    return redirect("/sender-blocks?removed=" + quote(entry.value))


@page_router.post("/quarantine/{qid}/block-sender")
async def held_block_sender(qid: str, request: Request,
                            who: Annotated[Principal, Depends(need_for_change(Right.senders_block))],
                            entry: Annotated[str, Form(max_length=400)] = "",
                            days: Annotated[int, Form(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS) -> Response:
    """The held message's form: ``entry`` is ``kind:value``, one of ``block_choices``."""
    held = await held_for_block(request, who, qid)
    kind, _, value = entry.partition(":")
    if (kind, value) not in block_choices(held):
        return await _list_page(request, who, 400, error="Choose one of the message's senders or their domains.")
    try:
        added = await add_block(request, who, kind, value, days, qid=held.id)
    except BlockError as exc:
        return await _list_page(request, who, 400, error=str(exc))
    return redirect("/sender-blocks?added=" + quote(added.value))
