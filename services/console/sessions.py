"""Server-side sessions (``console_sessions``): the cookie holds a random token, the table its SHA-256, the
session's CSRF token, its expiry (absolute and idle) and its revocation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from .rights import Principal, Role, addresses_of

SESSION_COOKIE = "mailmoat_session"
SECURE_SESSION_COOKIE = "__Host-mailmoat_session"
"""With ``Secure``: the ``__Host-`` prefix makes the browser refuse it from a subdomain or over HTTP."""


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    token_hash: bytes


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token (an empty or missing one never matches)."""
    return bool(given) and bool(expected) and hmac.compare_digest(expected.encode(), (given or "").encode())


class Sessions:
    def __init__(self, pool: AsyncConnectionPool, *, lifetime: timedelta, idle: timedelta):
        self.pool = pool
        self.lifetime = lifetime
        self.idle = idle

    async def create(self, account_id: int, client_ip: str | None, user_agent: str) -> tuple[str, str]:
        """A new session: (cookie token, CSRF token)."""
        token, csrf = new_token(), new_token()
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO console_sessions (token_hash, account_id, csrf, expires_at, client_ip, user_agent) "
                "VALUES (%s, %s, %s, now() + %s, %s, %s)",
                (token_hash(token), account_id, csrf, self.lifetime, client_ip, user_agent[:300]))
        return token, csrf

    async def lookup(self, token: str | None) -> Session | None:
        """The live session of a cookie token (not revoked, not expired, used within the idle time, its
        account enabled), its last use moved to now; else None."""
        if not token or len(token) > 100:
            return None
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "UPDATE console_sessions s SET last_seen = now() FROM console_accounts a "
                "WHERE s.token_hash = %s AND a.id = s.account_id AND s.revoked_at IS NULL "
                "AND s.expires_at > now() AND s.last_seen > now() - %s AND NOT a.disabled "
                "RETURNING s.csrf, a.id, a.name, a.role, a.addresses", (token_hash(token), self.idle))
            row = await cur.fetchone()
        if row is None:
            return None
        principal = Principal(row["id"], row["name"], Role(row["role"]), addresses_of(row["addresses"]))
        return Session(principal, row["csrf"], token_hash(token))

    async def revoke(self, token_hash_: bytes) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE console_sessions SET revoked_at = now() "
                               "WHERE token_hash = %s AND revoked_at IS NULL", (token_hash_,))

    async def prune(self, keep: timedelta = timedelta(days=1)) -> int:
        """Delete sessions expired or revoked more than ``keep`` ago; how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM console_sessions WHERE expires_at < now() - %s "
                                     "OR revoked_at < now() - %s", (keep, keep))
            return cur.rowcount
