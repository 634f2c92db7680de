"""The audit log (``console_audit``): who did what, when and from where; admins read it in the console."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from .rights import Principal


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    client_ip: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def detail_text(self) -> str:
        return json.dumps(self.detail, sort_keys=True, ensure_ascii=False) if self.detail else ""


class AuditLog:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def write(self, action: str, *, actor: Principal | str, client_ip: str | None, target: str = "",
                    outcome: str = "ok", detail: dict[str, Any] | None = None) -> None:
        """Record one action; ``actor`` is the principal, or the name tried when nobody is signed in."""
        name, actor_id = (actor.name, actor.account_id) if isinstance(actor, Principal) else (actor, None)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO console_audit (actor, actor_id, action, target, outcome, detail, client_ip) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (name[:200], actor_id, action, target[:500], outcome, Jsonb(detail or {}), client_ip))

    async def page(self, *, limit: int = 50, before: int | None = None, actor: str = "", action: str = "",
                   target: str = "") -> tuple[list[AuditEntry], int | None]:
        """The newest entries (before entry id ``before``), and the id to pass for the next page (None: no more);
        only those of ``actor`` (a name, any case), of ``action`` (``quarantine.release``, or a prefix ending
        in a dot: ``quarantine.``) and about ``target`` (a held message's or a queue's id, an account) when given."""
        conds = ["(%(before)s::bigint IS NULL OR id < %(before)s)"]
        args: dict[str, Any] = {"before": before, "n": limit + 1}
        if actor.strip():
            conds.append("lower(actor) = lower(%(actor)s)")
            args["actor"] = actor.strip()
        if action.strip():
            wanted = action.strip()
            conds.append("starts_with(action, %(action)s)" if wanted.endswith(".") else "action = %(action)s")
            args["action"] = wanted
        if target.strip():
            conds.append("target = %(target)s")
            args["target"] = target.strip()
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT id, at, actor, action, target, outcome, host(client_ip) AS client_ip, detail "
                f"FROM console_audit WHERE {' AND '.join(conds)} ORDER BY id DESC LIMIT %(n)s", args)
            rows = await cur.fetchall()
        entries = [AuditEntry(r["id"], r["at"], r["actor"], r["action"], r["target"], r["outcome"], r["client_ip"],
                              r["detail"]) for r in rows[:limit]]
        return entries, (entries[-1].id if len(rows) > limit and entries else None)
