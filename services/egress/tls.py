"""The egress TLS policy, one explicit row per mode: when to STARTTLS and how to check the certificate.

aiosmtplib's ``start_tls=None`` quietly stays in clear text when the server does not offer
STARTTLS, so it is never used: every session connects with ``start_tls=False`` and the client
issues STARTTLS itself as the row says, refusing to continue in clear text when it must not.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Literal

from mailmoat_platform.models import TlsMode

CA_FILE_ENV = "MAILMOAT_EGRESS_CA_FILE"

Starttls = Literal["never", "if_offered", "must"]


@dataclass(frozen=True)
class TlsRule:
    starttls: Starttls
    """never: stay in clear text; if_offered: upgrade when the server offers it; must: upgrade or defer."""
    verify_chain: bool
    """The server certificate must chain to a trusted CA."""
    check_hostname: bool
    """The certificate must name the host (``tls_name`` or the host connected to)."""


TLS_RULES: dict[str, TlsRule] = {
    "none": TlsRule(starttls="never", verify_chain=False, check_hostname=False),
    "opportunistic": TlsRule(starttls="if_offered", verify_chain=False, check_hostname=False),
    "required": TlsRule(starttls="must", verify_chain=False, check_hostname=False),
    "verify-ca": TlsRule(starttls="must", verify_chain=True, check_hostname=False),
    "verify": TlsRule(starttls="must", verify_chain=True, check_hostname=True),
    # MTA-STS testing: verified like ``verify``; when verification fails the session goes on over
    # unverified TLS (SessionPool.acquire) and the failure is reported, not the delivery refused.
    "sts-testing": TlsRule(starttls="if_offered", verify_chain=True, check_hostname=True),
    # DANE (RFC 7672): TLS or nothing; the chain is matched against the host's TLSA records after the
    # handshake (SessionPool._open), not against CAs.
    "dane": TlsRule(starttls="must", verify_chain=False, check_hostname=False),
}
STS_TESTING = "sts-testing"


def rule_for(mode: TlsMode | str) -> TlsRule:
    try:
        return TLS_RULES[mode]
    except KeyError:
        raise ValueError(f"unknown TLS mode {mode!r}") from None


def ca_file() -> str | None:
    return os.environ.get(CA_FILE_ENV) or None


def ssl_context(mode: TlsMode | str, cafile: str | None = None) -> ssl.SSLContext | None:
    """The client context for ``mode`` (None for ``none``); trusted CAs: ``cafile`` alone when given,
    else the system's."""
    rule = rule_for(mode)
    if rule.starttls == "never":
        return None
    if rule.verify_chain and cafile:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if rule.verify_chain:
        context.check_hostname = rule.check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_kwargs(mode: TlsMode | str, cafile: str | None = None) -> dict[str, Any]:
    """aiosmtplib ``SMTP`` arguments for ``mode``: never implicit TLS, never automatic STARTTLS."""
    rule = rule_for(mode)
    return {
        "use_tls": False,
        "start_tls": False,
        "validate_certs": rule.verify_chain,
        "tls_context": ssl_context(mode, cafile),
    }


def server_name(mode: TlsMode | str, host: str, tls_name: str | None) -> str:
    """Name given to the TLS handshake (SNI, and the name checked under ``verify``)."""
    rule_for(mode)
    return tls_name or host
