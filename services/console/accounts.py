"""Accounts of the console in PostgreSQL (``console_accounts``): create, read, change; the first admin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg import errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from .passwords import generate_password, hash_password, needs_rehash, password_problem, verify_password
from .rights import Principal, Role, addresses_of

log = logging.getLogger(__name__)

_BOOTSTRAP_LOCK = 0x6D6D_636F_6E73  # "mmcons": one first admin however many consoles start at once
_COLUMNS = "id, name, role, addresses, disabled, created_at, updated_at, password_changed_at"


class AccountError(ValueError):
    """A change refused (a name taken, a password too short, the last admin demoted)."""


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    role: Role
    addresses: tuple[str, ...]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime

    @property
    def principal(self) -> Principal:
        return Principal(self.id, self.name, self.role, addresses_of(self.addresses))


def _account(row: dict) -> Account:
    return Account(row["id"], row["name"], Role(row["role"]), tuple(row["addresses"]), row["disabled"],
                   row["created_at"], row["updated_at"], row["password_changed_at"])


def valid_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(c.isspace() or not c.isprintable() for c in name):
        raise AccountError("a name is 1 to 200 printable characters without spaces")
    return name


class Accounts:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def get(self, account_id: int) -> Account | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_COLUMNS} FROM console_accounts WHERE id = %s", (account_id,))
            row = await cur.fetchone()
        return _account(row) if row else None

    async def list(self) -> list[Account]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_COLUMNS} FROM console_accounts ORDER BY lower(name)")
            return [_account(r) for r in await cur.fetchall()]

    async def authenticate(self, name: str, password: str) -> Account | None:
        """The enabled account with this name and password, else None (as slow either way); a hash made
        with older parameters is replaced."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_COLUMNS}, password_hash FROM console_accounts WHERE lower(name) = lower(%s)",
                              (name.strip(),))
            row = await cur.fetchone()
        stored = row["password_hash"] if row else None
        if not await asyncio.to_thread(verify_password, stored, password) or row is None or row["disabled"]:
            return None
        if needs_rehash(stored):
            rehashed = await asyncio.to_thread(hash_password, password)
            async with self.pool.connection() as conn:
                await conn.execute("UPDATE console_accounts SET password_hash = %s WHERE id = %s",
                                   (rehashed, row["id"]))
        return _account(row)

    async def create(self, name: str, role: Role, password: str, addresses: Iterable[str] = ()) -> Account:
        name = valid_name(name)
        problem = password_problem(password)
        if problem:
            raise AccountError(problem)
        hashed = await asyncio.to_thread(hash_password, password)
        try:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    f"INSERT INTO console_accounts (name, role, password_hash, addresses) VALUES (%s, %s, %s, %s) "
                    f"RETURNING {_COLUMNS}", (name, Role(role).value, hashed,
                                              sorted(addresses_of(addresses))))
                row = await cur.fetchone()
        except errors.UniqueViolation:
            raise AccountError(f"an account named {name!r} exists") from None
        assert row is not None
        return _account(row)

    async def update(self, account_id: int, *, role: Role | None = None, addresses: Iterable[str] | None = None,
                     disabled: bool | None = None) -> Account | None:
        """Change an account (None: unchanged); the last enabled admin cannot be demoted or disabled."""
        sets, params = ["updated_at = now()"], []
        if role is not None:
            sets.append("role = %s")
            params.append(Role(role).value)
        if addresses is not None:
            sets.append("addresses = %s")
            params.append(sorted(addresses_of(addresses)))
        if disabled is not None:
            sets.append("disabled = %s")
            params.append(disabled)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK,))
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"UPDATE console_accounts SET {', '.join(sets)} WHERE id = %s RETURNING {_COLUMNS}",
                              (*params, account_id))
            row = await cur.fetchone()
            if row is None:
                return None
            await cur.execute("SELECT count(*) AS n FROM console_accounts WHERE role = 'admin' AND NOT disabled")
            left = await cur.fetchone()
            if left is not None and left["n"] == 0:
                raise AccountError("the last enabled admin cannot be demoted or disabled")
            if disabled:
                await conn.execute("UPDATE console_sessions SET revoked_at = now() "
                                   "WHERE account_id = %s AND revoked_at IS NULL", (account_id,))
        return _account(row)

    async def set_password(self, account_id: int, password: str) -> bool:
        """A new password; every session of the account is revoked."""
        problem = password_problem(password)
        if problem:
            raise AccountError(problem)
        hashed = await asyncio.to_thread(hash_password, password)
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("UPDATE console_accounts SET password_hash = %s, password_changed_at = now(), "
                                     "updated_at = now() WHERE id = %s", (hashed, account_id))
            if cur.rowcount != 1:
                return False
            await conn.execute("UPDATE console_sessions SET revoked_at = now() "
                               "WHERE account_id = %s AND revoked_at IS NULL", (account_id,))
        return True

    async def bootstrap_admin(self, name: str = "admin") -> tuple[Account, str] | None:
        """With no account at all: an ``admin`` account with a generated password, and that password (to
        be shown once); else None. Consoles starting together make one. The password is hashed only when
        there is no account (an argon2 hash takes ``memory_cost``, 64 MiB, while it runs): not at every start."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM console_accounts)")
            row = await cur.fetchone()
            if row and row[0]:
                return None
        password = generate_password()
        hashed = await asyncio.to_thread(hash_password, password)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK,))
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT EXISTS (SELECT 1 FROM console_accounts) AS any")
            row = await cur.fetchone()
            if row and row["any"]:
                return None
            await cur.execute(f"INSERT INTO console_accounts (name, role, password_hash) VALUES (%s, 'admin', %s) "
                              f"RETURNING {_COLUMNS}", (name, hashed))
            created = await cur.fetchone()
        assert created is not None
        return _account(created), password
