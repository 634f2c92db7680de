"""DANE for SMTP (RFC 7672), the pure half: TLSA records and whether a server's certificate chain
matches them.

Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (RFC 7672 3.1.3); PKIX-TA(0)/PKIX-EE(1),
unknown selectors and matching types are ignored. DANE-EE matches the server's own certificate (or
its public key) and checks neither name nor expiry (RFC 7672 3.1.1). DANE-TA matches a certificate
the server sends in its chain (not the leaf); the leaf must then chain to it and name the MX host or
the destination domain (RFC 7672 3.2.2).
"""

from __future__ import annotations

import _ssl
import datetime
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography's X.509 is imported with the first chain checked against TLSA records
    from cryptography import x509

DANE_TA = 2
DANE_EE = 3
SELECTORS = (0, 1)
"""0: the full certificate (DER); 1: its SubjectPublicKeyInfo (DER)."""
MATCHING = (0, 1, 2)
"""0: exact; 1: SHA-256; 2: SHA-512."""
DIGEST_SIZES = {1: 32, 2: 64}
"""The size of the data of a digest matching type: a record of another size is malformed (unusable)."""


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """DANE-TA or DANE-EE with a known selector and matching type, and data of the digest's size: a
        malformed record is unusable as one of unsupported parameters is (as Postfix takes it), so a host
        publishing only such records gets TLS without authentication (RFC 7672 2.2)."""
        return (self.usage in (DANE_TA, DANE_EE) and self.selector in SELECTORS and self.mtype in MATCHING
                and len(self.data) == DIGEST_SIZES.get(self.mtype, len(self.data)) and bool(self.data))

    def text(self) -> str:
        """Presentation form (``3 1 1 ab12…``), as TLS-RPT's ``policy-string`` carries it."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass(frozen=True)
class DaneCheck:
    """What a delivery to one MX host must satisfy under DANE (carried by its target)."""

    records: tuple[Tlsa, ...] = ()
    """Usable TLSA records: the server's chain must match one."""
    names: tuple[str, ...] = ()
    """Reference identifiers for DANE-TA: the MX host name, then the destination domain."""
    error: str | None = None
    """Why the host must not be used at all (its TLSA look-up failed or did not validate)."""

    @property
    def tls_mode(self) -> str:
        """``dane`` (TLS that matches the records), or ``required`` (TLS, unauthenticated) when the
        host publishes TLSA records of which none is usable (RFC 7672 2.2: encrypt, don't authenticate)."""
        return "dane" if self.records else "required"


def parse_tlsa(text: str) -> Tlsa:
    """A TLSA record from its presentation form (``3 1 1 AB12 CD34``); ValueError when malformed."""
    parts = text.split()
    if len(parts) < 4:
        raise ValueError(f"TLSA record {text!r} has fewer than four fields")
    if not all(p.isascii() and p.isdigit() for p in parts[:3]):
        raise ValueError(f"TLSA record {text!r} has a field that is not a decimal number")
    usage, selector, mtype = (int(p) for p in parts[:3])
    if not all(0 <= v <= 255 for v in (usage, selector, mtype)):
        raise ValueError(f"TLSA record {text!r} has a field out of range")
    return Tlsa(usage, selector, mtype, bytes.fromhex("".join(parts[3:])))


def usable(records: Iterable[Tlsa]) -> tuple[Tlsa, ...]:
    return tuple(r for r in records if r.usable)


def selected(cert: x509.Certificate, selector: int) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if selector == 0:
        return cert.public_bytes(Encoding.DER)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def tlsa_for(cert: x509.Certificate, usage: int, selector: int, mtype: int) -> Tlsa:
    """The TLSA record that pins ``cert`` (what an administrator publishes)."""
    return Tlsa(usage, selector, mtype, digest(selected(cert, selector), mtype))


def matches(record: Tlsa, cert: x509.Certificate) -> bool:
    return record.usable and digest(selected(cert, record.selector), record.mtype) == record.data


def _names_leaf(leaf: x509.Certificate, ta: x509.Certificate, intermediates: list[x509.Certificate],
                names: Sequence[str], now: datetime.datetime) -> bool:
    from cryptography import x509
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

    store = Store([ta])
    # Names come from subjectAltName, as for the web, but its criticality is not held against the
    # server (RFC 7672 asks for no Web PKI profile beyond the chain and the name).
    ee = ExtensionPolicy.permit_all().require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    builder = PolicyBuilder().store(store).time(now).extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
    for name in names:
        verifier = builder.build_server_verifier(x509.DNSName(name))
        try:
            verifier.verify(leaf, intermediates)
        except (VerificationError, ValueError):
            continue
        return True
    return False


def check_chain(records: Sequence[Tlsa], chain_der: Sequence[bytes], names: Sequence[str],
                now: datetime.datetime | None = None) -> str | None:
    """None when the server's chain (leaf first, as sent) matches a usable record; else why not.
    ``names``: the reference identifiers for DANE-TA (the MX host name, then the destination domain)."""
    records = usable(records)
    if not records:
        return "no usable TLSA record"
    if not chain_der:
        return "the server sent no certificate"
    from cryptography import x509

    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        return f"unreadable server certificate: {exc}"
    leaf, rest = chain[0], chain[1:]
    if any(r.usage == DANE_EE and matches(r, leaf) for r in records):
        return None
    when = now or datetime.datetime.now(datetime.UTC)
    for record in (r for r in records if r.usage == DANE_TA):
        for index, ta in enumerate(rest):
            if matches(record, ta) and _names_leaf(leaf, ta, rest[:index], names, when):
                return None
    if any(r.usage == DANE_TA for r in records) and any(matches(r, ta) for r in records for ta in rest):
        return "the certificate does not chain to the TLSA trust anchor for " + " or ".join(names)
    return "no TLSA record matches the server's certificate chain"


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER (unverified: DANE does its own checking)."""
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    get_chain = getattr(ssl_object, "get_unverified_chain", None) or getattr(inner, "get_unverified_chain", None)
    if get_chain is not None:
        chain = get_chain() or []
        return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


__all__ = [
    "DANE_EE", "DANE_TA", "DaneCheck", "Tlsa", "check_chain", "matches", "parse_tlsa", "peer_chain", "tlsa_for",
    "usable",
]
