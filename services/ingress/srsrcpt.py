"""Bounces to the SRS addresses the gateway gave out (``srs``): RCPT TO at the SRS domain.

``srs_recipient`` answers for a recipient at ``srs.domain`` whose local part is an SRS0/SRS1 address:
valid (hash verifies with one of the secrets, SRS0 not older than ``srs.max_age_days``) → the address
the bounce goes to, accepted from any client although it is not ours (the hash is the
authorisation: only addresses we made come back); forged, damaged or expired → ``550 5.1.1``: the
address does not exist (any more), which is what a sender's MTA must hear about a bounce address; the
reason stays in our trace, not in the reply. A secret file that cannot be read → ``451 4.3.0``.
Anything else at the SRS domain is not an SRS address and takes the usual recipient checks.
"""

from __future__ import annotations

import time

from mailmoat_ingress import replies
from mailmoat_mail import srs
from mailmoat_mail.keyfiles import FileCache
from mailmoat_policy import Policy

INVALID = "550 5.1.1 Recipient address rejected: not a valid bounce address"
UNAVAILABLE = replies.TEMPORARY

_FILES = FileCache()


def srs_recipient(policy: Policy, address: str, now: float | None = None,
                  files: FileCache = _FILES) -> tuple[str | None, str, str] | None:
    """None when ``address`` is no SRS address of ours; else (refusal or None, the address to deliver
    to, why — for the trace)."""
    if not policy.srs.enabled:
        return None
    local, _, domain = address.rpartition("@")
    if domain.lower().rstrip(".") != policy.srs.domain or not srs.is_srs(local):
        return None
    assert policy.srs.secret_file is not None
    try:
        secrets = files.get(policy.srs.secret_file, lambda raw: srs.read_secrets(raw.decode("utf-8")), "srs")
    except (OSError, UnicodeDecodeError) as exc:
        return UNAVAILABLE, address, f"SRS secret unavailable: {exc}"
    try:
        back = srs.reverse(address, policy.srs.domain, secrets, policy.srs.max_age_days,
                           time.time() if now is None else now)
    except srs.SrsError as exc:
        return INVALID, address, str(exc)
    return None, back.address, f"SRS {back.kind} reversed"


__all__ = ["INVALID", "srs_recipient"]
