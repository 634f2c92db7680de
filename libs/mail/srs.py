"""Sender Rewriting Scheme (SRS), in the format of libsrs2 and postsrsd (pure).

``forward`` rewrites the envelope sender of mail that leaves for an outside recipient on an outside
sender's behalf, so the next hop checks SPF against our domain::

    user@example.org           -> SRS0=HHHH=TT=example.org=user@srs.domain
    SRS0=HHHH=TT=orig=user@fwd -> SRS1=HHHH=fwd==HHHH=TT=orig=user@srs.domain   (a forwarder's SRS0)
    SRS1=HHHH=fwd==...@other   -> SRS1=HHHH=fwd==...@srs.domain                  (first forwarder kept)

``reverse`` turns such an address at our SRS domain back into the one a bounce must go to, after
checking the hash and (SRS0) the timestamp; it raises ``SrsError`` for a forged or expired address.

HHHH: the first 4 characters of base64(HMAC-SHA1(secret, lower-cased fields)); TT: days since the
epoch modulo 1024 in two base32 characters. Hashes compare without case, as libsrs2 does (some
MTAs fold local parts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

HASH_LENGTH = 4
TIME_PRECISION = 86400
TIME_SLOTS = 1024
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SEPARATOR = "="


class SrsError(ValueError):
    """An address that is not a valid SRS address of ours (forged, damaged or expired)."""

    def __init__(self, message: str, *, expired: bool = False):
        super().__init__(message)
        self.expired = expired


def _hash(secret: bytes, *fields: str) -> str:
    mac = hmac.new(secret, b"".join(f.lower().encode("utf-8") for f in fields), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]


def timestamp(now: float) -> str:
    day = int(now // TIME_PRECISION) % TIME_SLOTS
    return BASE32[(day >> 5) & 31] + BASE32[day & 31]


def _age_days(stamp: str, now: float) -> int:
    stamp = stamp.upper()
    if len(stamp) != 2 or any(c not in BASE32 for c in stamp):
        raise SrsError("bad SRS timestamp")
    then = BASE32.index(stamp[0]) << 5 | BASE32.index(stamp[1])
    today = int(now // TIME_PRECISION) % TIME_SLOTS
    return (today - then) % TIME_SLOTS


def is_srs(local: str) -> bool:
    """Whether a local part looks like an SRS address (``SRS0=``/``SRS1=``, any case)."""
    head = local[:5].upper()
    return head in ("SRS0=", "SRS1=", "SRS0+", "SRS1+", "SRS0-", "SRS1-")


def _split(address: str) -> tuple[str, str]:
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise SrsError(f"{address!r} is not an address")
    return local, domain


def forward(sender: str, srs_domain: str, secret: bytes, now: float | None = None) -> str:
    """The SRS address that stands for ``sender`` on mail we forward (``sender`` already at
    ``srs_domain`` is returned unchanged)."""
    now = time.time() if now is None else now
    local, host = _split(sender)
    if host.lower() == srs_domain.lower():
        return sender
    if local[:5].upper() == "SRS0" + SEPARATOR:  # a forwarder's SRS0: keep it whole under SRS1
        rest = local[4:]  # "=HHHH=TT=orig=user"
        return f"SRS1{SEPARATOR}{_hash(secret, host, rest)}{SEPARATOR}{host}{SEPARATOR}{rest}@{srs_domain}"
    if local[:5].upper() == "SRS1" + SEPARATOR:  # SRS1=HHHH=first==...: keep the first forwarder
        parts = local[5:].split(SEPARATOR, 2)
        if len(parts) == 3:
            first, rest = parts[1], parts[2]  # rest keeps its leading "=": "=HHHH=TT=orig=user"
            return f"SRS1{SEPARATOR}{_hash(secret, first, rest)}{SEPARATOR}{first}{SEPARATOR}{rest}@{srs_domain}"
    stamp = timestamp(now)
    digest = _hash(secret, stamp, host, local)
    return f"SRS0{SEPARATOR}{digest}{SEPARATOR}{stamp}{SEPARATOR}{host}{SEPARATOR}{local}@{srs_domain}"


def _check(digest: str, secrets: list[bytes], *fields: str) -> None:
    for secret in secrets:
        if hmac.compare_digest(_hash(secret, *fields).lower(), digest.lower()):
            return
    raise SrsError("SRS hash does not verify")


@dataclass(frozen=True)
class Reversed:
    address: str
    """Where a bounce to the SRS address goes."""
    kind: str
    """``SRS0`` (the original sender) or ``SRS1`` (the first forwarder's SRS0 address)."""


def reverse(address: str, srs_domain: str, secrets: list[bytes], max_age_days: int,
            now: float | None = None) -> Reversed:
    """The address a bounce to ``address`` (at ``srs_domain``) goes to; ``SrsError`` when it is not one
    of ours, its hash does not verify with any secret, or (SRS0) it is older than ``max_age_days``."""
    now = time.time() if now is None else now
    local, host = _split(address)
    if host.lower() != srs_domain.lower():
        raise SrsError(f"not at the SRS domain {srs_domain}")
    if not secrets:
        raise SrsError("no SRS secret")
    tag, body = local[:4].upper(), local[5:]
    if local[4:5] not in ("=", "+", "-"):
        raise SrsError("not an SRS address")
    if tag == "SRS0":
        parts = body.split(SEPARATOR, 3)
        if len(parts) != 4 or not all(parts):
            raise SrsError("malformed SRS0 address")
        digest, stamp, orig_host, orig_local = parts
        _check(digest, secrets, stamp, orig_host, orig_local)
        if _age_days(stamp, now) > max_age_days:
            raise SrsError("SRS address expired", expired=True)
        return Reversed(f"{orig_local}@{orig_host}", "SRS0")
    if tag == "SRS1":
        parts = body.split(SEPARATOR, 2)
        if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2]:
            raise SrsError("malformed SRS1 address")
        digest, first, rest = parts
        if not rest.startswith(SEPARATOR):
            raise SrsError("malformed SRS1 address")
        _check(digest, secrets, first, rest)
        return Reversed(f"SRS0{rest}@{first}", "SRS1")
    raise SrsError("not an SRS address")


def read_secrets(text: str) -> list[bytes]:
    """Secrets from a file's text: one per non-empty line, the first signs."""
    return [line.strip().encode("utf-8") for line in text.splitlines() if line.strip()]


__all__ = ["Reversed", "SrsError", "forward", "is_srs", "read_secrets", "reverse", "timestamp"]
