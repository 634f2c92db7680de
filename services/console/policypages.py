"""The policy for the console: the file in force (read-only, as its YAML), the check of a draft with the errors by
field (``mailmoat_policy.parse_policy``, as ``mailmoat policy check``), and the mail-flow rules' hits counted from
the trace's ``RULE`` events in PostgreSQL (test-mode rules included: they are traced, and change nothing)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from mailmoat_policy import Policy, PolicyError, parse_policy

DRAFT_SOURCE = "draft"
MAX_DRAFT = 1_000_000
"""Characters of a draft checked at most."""
MAX_RANGE = timedelta(days=92)
"""The longest date range rule hits are counted over."""


class FieldError(BaseModel):
    path: str = Field(description="The field's dotted path (rules.0.name); empty for the whole document")
    message: str


class CheckResult(BaseModel):
    ok: bool
    errors: list[FieldError]
    text: str = Field(description="The check's output, as `mailmoat policy check` prints it")
    summary: str = ""


def field_errors(error: PolicyError, source: str = DRAFT_SOURCE) -> list[FieldError]:
    """``PolicyError``'s lines (``<source>: <path>: <reason>``) as (path, reason); a line about the whole document
    (not YAML, not a mapping) has no path."""
    out = []
    for line in str(error).splitlines():
        rest = line.removeprefix(f"{source}: ")
        head, sep, tail = rest.partition(": ")
        if sep and (" " not in head or head == "(top level)"):
            out.append(FieldError(path="" if head == "(top level)" else head, message=tail))
        elif out and not line.startswith(f"{source}: "):
            out[-1].message += "\n" + line  # a reason over several lines
        else:
            out.append(FieldError(path="", message=rest))
    return out


def summary(policy: Policy) -> str:
    test = sum(1 for r in policy.rules if r.mode == "test")
    return (f"ok ({len(policy.accepted_domains)} accepted domains, {len(policy.routes)} routes, {len(policy.rules)} "
            f"mail-flow rules ({test} in test mode), itinerary {' -> '.join(policy.pipeline.itinerary())})")


def check_draft(text: str) -> CheckResult:
    """Check a draft policy as ``mailmoat policy check`` does."""
    if len(text) > MAX_DRAFT:
        message = f"{DRAFT_SOURCE}: longer than {MAX_DRAFT} characters"
        return CheckResult(ok=False, errors=[FieldError(path="", message=message)], text=message)
    try:
        policy = parse_policy(text, DRAFT_SOURCE)
    except PolicyError as exc:
        return CheckResult(ok=False, errors=field_errors(exc), text=str(exc))
    done = summary(policy)
    return CheckResult(ok=True, errors=[], text=f"{DRAFT_SOURCE}: {done}", summary=done)


class PolicyInForce(BaseModel):
    path: str
    yaml: str = Field(description="The file as written")
    sha256: str
    modified: datetime | None
    error: str = Field(description="Why the file does not load now (the services keep their last good version)")
    summary: str


class RuleHits(BaseModel):
    rule: str
    mode: str = Field(description="enforce or test: the mode the hits were traced in")
    hits: int = Field(description="RULE events (one per message and rule)")
    last: datetime | None
    in_policy: bool = Field(description="The rule is in the policy in force")
    mode_now: str | None = Field(description="Its mode in the policy in force")


def read_policy(path: str) -> PolicyInForce:
    """The policy file in force (read-only): its text, digest, time, and whether it loads."""
    try:
        raw = Path(path).read_bytes()
        modified = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    except OSError as exc:
        return PolicyInForce(path=path, yaml="", sha256="", modified=None, error=f"cannot read: {exc.strerror or exc}",
                             summary="")
    text = raw.decode("utf-8", errors="replace")
    error, done = "", ""
    try:
        done = summary(parse_policy(text, path))
    except PolicyError as exc:
        error = str(exc)
    return PolicyInForce(path=path, yaml=text, sha256=hashlib.sha256(raw).hexdigest(), modified=modified, error=error,
                         summary=done)


class RangeError(ValueError):
    """A date range rule hits cannot be counted over."""


def hits_range(since: datetime | None, until: datetime | None, now: datetime | None = None
               ) -> tuple[datetime, datetime]:
    """[since, until): by default the last 7 days; at most ``MAX_RANGE``."""
    now = now or datetime.now(UTC)
    until = until or now
    try:
        since = since or until - timedelta(days=7)
    except OverflowError:  # 'to' in the first week of year 1
        raise RangeError("'to' is out of range") from None
    if since >= until:
        raise RangeError("the range is empty: 'from' must be before 'to'")
    if until - since > MAX_RANGE:
        raise RangeError(f"at most {MAX_RANGE.days} days at a time")
    return since, until


RULE_HITS_SQL = """
SELECT data->>'rule' AS rule, coalesce(data->>'mode', 'enforce') AS mode, count(*) AS hits, max(at) AS last
FROM trace_events
WHERE event = 'RULE' AND at >= %(since)s AND at < %(until)s AND data ? 'rule' AND NOT data ? 'parent_id'
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
"""
"""A rule's hits: its RULE events (a sender notice's own RULE event, under the notice's id, names the message it is
about in ``parent_id`` and is not a hit)."""


@dataclass
class PolicyPages:
    path: str
    pool: AsyncConnectionPool | None

    async def in_force(self) -> PolicyInForce:
        return await asyncio.to_thread(read_policy, self.path)

    async def rule_hits(self, since: datetime, until: datetime) -> list[RuleHits]:
        """Hits per rule and mode in [since, until), with the rules of the policy in force that had none."""
        rows: list[dict] = []
        if self.pool is not None:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(RULE_HITS_SQL, {"since": since, "until": until})
                rows = await cur.fetchall()
        try:
            rules = {r.name: r.mode for r in (await asyncio.to_thread(_load, self.path)).rules}
        except PolicyError:
            rules = {}
        out = [RuleHits(rule=r["rule"], mode=r["mode"], hits=r["hits"], last=r["last"], in_policy=r["rule"] in rules,
                        mode_now=rules.get(r["rule"])) for r in rows]
        seen = {h.rule for h in out}
        out += [RuleHits(rule=name, mode=mode, hits=0, last=None, in_policy=True, mode_now=mode)
                for name, mode in rules.items() if name not in seen]
        return out


def _load(path: str) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(exc)) from exc
    return parse_policy(text, path)
