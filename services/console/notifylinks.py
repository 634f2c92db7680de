"""The signed, expiring links of quarantine digests (pure, but for the key kept in PostgreSQL).

A link names one held message, one recipient and what it does: ``view`` (the safe preview), ``release``
(what ``quarantine.release_by`` leaves to non-admins) or ``request`` (ask an administrator to release a
message only administrators may release). Its token is that, with its expiry, signed with HMAC-SHA256 by
itsdangerous under the console's ``links`` key (``console_keys``, made at first use and shared by every
replica). A token changed in any byte, signed under another key or for another purpose does not verify;
one past its expiry says so. The token is the only authority a link carries: it works without signing in,
for its recipient and its message only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, URLSafeSerializer
from psycopg_pool import AsyncConnectionPool

Action = Literal["view", "release", "request"]
ACTIONS: tuple[Action, ...] = ("view", "release", "request")
SALT = "mailmoat.quarantine-digest-link"
"""Separates these signatures from any other use of the key."""
KEY_NAME = "links"
MAX_TOKEN = 2000
"""Longer tokens are refused unread."""


class LinkInvalid(ValueError):
    """The token was not made by this console (changed, cut, another key or purpose)."""


class LinkExpired(ValueError):
    """A genuine token past its expiry."""


@dataclass(frozen=True)
class Link:
    qid: str
    recipient: str
    """The recipient the link was sent to, lower case."""
    action: Action
    expires: int
    """Epoch seconds."""


class LinkSigner:
    """Makes and checks link tokens with ``keys`` (the last one signs; all verify, for a rotation)."""

    def __init__(self, keys: list[bytes], clock: Callable[[], float] = time.time):
        if not keys:
            raise ValueError("a link signer needs a key")
        self._serializer = URLSafeSerializer(keys, salt=SALT)
        self._clock = clock

    def sign(self, qid: str, recipient: str, action: Action, *, days: int) -> str:
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}")
        expires = int(self._clock()) + days * 86400
        return str(self._serializer.dumps({"q": qid, "r": recipient.strip().lower(), "a": action, "e": expires}))

    def verify(self, token: str) -> Link:
        """The link a token stands for; ``LinkInvalid`` or ``LinkExpired``."""
        if not token or len(token) > MAX_TOKEN:
            raise LinkInvalid("not a link of this console")
        try:
            payload = self._serializer.loads(token)
        except BadSignature:
            raise LinkInvalid("not a link of this console") from None
        try:
            link = Link(str(payload["q"]), str(payload["r"]), payload["a"], int(payload["e"]))
        except (KeyError, TypeError, ValueError):
            raise LinkInvalid("not a link of this console") from None
        if link.action not in ACTIONS:
            raise LinkInvalid("not a link of this console")
        if self._clock() >= link.expires:
            raise LinkExpired("this link has expired")
        return link


async def link_keys(pool: AsyncConnectionPool) -> list[bytes]:
    """The links' signing key from ``console_keys`` (made now when there is none; every replica gets the same)."""
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO console_keys (name, secret) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                           (KEY_NAME, secrets.token_bytes(32)))
        cur = await conn.execute("SELECT secret FROM console_keys WHERE name = %s", (KEY_NAME,))
        row = await cur.fetchone()
    assert row is not None
    return [bytes(row[0])]


async def link_signer(pool: AsyncConnectionPool) -> LinkSigner:
    return LinkSigner(await link_keys(pool))
