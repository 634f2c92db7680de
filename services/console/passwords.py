"""Passwords: argon2id hashes (argon2-cffi, RFC 9106's second recommended parameters), generated passwords."""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024
"""Longer inputs are refused before hashing (hashing work an attacker could ask for)."""

HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16,
                        type=Type.ID)


@cache
def _dummy() -> str:
    """The hash checked when there is no account: made at the first check of any password (so the first
    answer takes as long whether the account exists or not), not at start-up (each hash takes
    ``memory_cost``, 64 MiB, for as long as it runs)."""
    return HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """The argon2id PHC string of ``password``."""
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``. With no stored hash (no such account) a dummy hash is
    checked anyway, so the answer takes as long as for an account that exists."""
    if len(password) > MAX_LENGTH:
        return False
    dummy = _dummy()
    try:
        return HASHER.verify(stored or dummy, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """The hash was made with other parameters than today's (rehash at the next sign-in)."""
    try:
        return HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    return None


def generate_password() -> str:
    """A random password (20 URL-safe characters, 120 bits)."""
    return secrets.token_urlsafe(15)
