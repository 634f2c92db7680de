"""DKIM signing (RFC 6376, RFC 8463) and ARC sealing (RFC 8617) of the gateway's mail, with dkimpy.

Interface::

    keys = KeyStore()                               # private keys read from files, re-read when they change
    plan = signing_plan(envelope, data, policy)     # which keys sign this message, or why none does
    headers = sign(data, plan.domain, loaded_keys)  # DKIM-Signature fields to prepend, one per key
    sealed = arc_seal(data, domain, selector, key, authserv_id)  # the ARC set to prepend, or None
    private_pem, record = generate_key("rsa")       # a new key and its DNS TXT record

The header set is RFC 6376 5.4.1's, plus Message-ID and the MIME fields; those of ``OVERSIGNED`` are
signed once more than they occur (5.4.2), so that a field added later (a second From or Subject, a Cc)
breaks the signature. Every signature is computed over the same bytes, so RSA and Ed25519 signatures
stand side by side and each verifies on its own.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat_common.author import read_author
from mailmoat_common.keyfiles import FileCache
from mailmoat_common.models import Envelope
from mailmoat_common.policy import DkimKey, Policy

SIGNED = (
    "from", "reply-to", "subject", "date", "to", "cc",
    "resent-date", "resent-from", "resent-to", "resent-cc",
    "in-reply-to", "references",
    "list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
    "message-id", "mime-version", "content-type", "content-transfer-encoding",
)
"""Header fields signed when present: RFC 6376 5.4.1's list, Message-ID and the MIME fields."""

OVERSIGNED = frozenset({
    "from", "subject", "date", "to", "cc", "message-id", "mime-version", "content-type",
    "content-transfer-encoding",
})
"""Fields signed once more than they occur (an empty instance), so none can be added (RFC 6376 5.4.2)."""

ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

_DKIM_TAGS = re.compile(rb"(?:^|;)\s*([ds])\s*=\s*([^;\s]*)")


class KeyFileError(Exception):
    """A key file that cannot be read or is not a key of its algorithm."""


@dataclass(frozen=True)
class LoadedKey:
    selector: str
    algorithm: str
    """``rsa`` or ``ed25519``."""
    private: bytes
    """As dkimpy takes it: PKCS#1 PEM for RSA, the base64 32-byte seed for Ed25519."""


def read_private_key(text: bytes, algorithm: str) -> bytes:
    """A key file's contents as dkimpy takes them; raises ``KeyFileError`` when it is not such a key.

    RSA: PEM (PKCS#1 or PKCS#8). Ed25519: PEM (PKCS#8) or the base64 seed dkimpy's ``dknewkey`` writes."""
    try:
        if algorithm == "ed25519" and b"-----BEGIN" not in text:
            seed = base64.b64decode(text.strip(), validate=True)
            if len(seed) != 32:
                raise ValueError("not a 32-byte seed")
            return base64.b64encode(seed)
        key = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not a {algorithm} private key: {exc}") from None
    if algorithm == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyFileError("not an RSA private key")
        if key.key_size < 1024:
            raise KeyFileError(f"an RSA key of {key.key_size} bits (RFC 8301: at least 1024, 2048 advised)")
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError("not an Ed25519 private key")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw)


class KeyStore:
    """Private keys by file, read once and again only when the file changes (a rotated k8s Secret)."""

    def __init__(self, files: FileCache | None = None) -> None:
        self.files = files or FileCache()

    def load(self, path: str, algorithm: str) -> bytes:
        try:
            return self.files.get(path, lambda text: read_private_key(text, algorithm), algorithm)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None

    def key(self, entry: DkimKey) -> LoadedKey:
        return LoadedKey(entry.selector, entry.algorithm, self.load(entry.key_file, entry.algorithm))


# --- what to sign ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The keys that sign a message (``keys`` empty: none, for ``reason``)."""

    domain: str = ""
    keys: tuple[DkimKey, ...] = ()
    reason: str = ""


def existing_signatures(data: bytes) -> set[tuple[str, str]]:
    """(d=, s=) of the DKIM-Signature fields the message already carries, lower case."""
    found = set()
    headers, _ = dkim.rfc822_parse(data)
    for name, value in headers:
        if name.lower() != b"dkim-signature":
            continue
        tags = {k: v for k, v in _DKIM_TAGS.findall(re.sub(rb"\s+", b"", value))}
        d, s = tags.get(b"d", b""), tags.get(b"s", b"")
        found.add((d.decode("ascii", "replace").lower().rstrip("."), s.decode("ascii", "replace").lower()))
    return found


def signing_plan(envelope: Envelope, data: bytes, policy: Policy) -> Plan:
    """Which of the policy's keys sign this message: only mail from the organisation's own servers
    (``direction`` outbound, set by ingress from ``organization.internal_networks``) and reports the
    gateway makes itself, whose one From address is at a domain ``dkim.domains`` lists; a key whose
    domain and selector already signed the message is not used again."""
    if not policy.dkim.domains:
        return Plan(reason="no dkim domains")
    if envelope.direction != "outbound":
        return Plan(reason="not outbound")
    author = read_author(data)
    single = author.single
    if single is None:
        return Plan(reason=f"no single author: {author.problem}")
    domain = single.dns_domain
    keys = policy.dkim.keys_for(domain) if domain else []
    if not keys:
        return Plan(domain=domain, reason=f"From domain {domain or single.domain!r} has no key")
    present = existing_signatures(data)
    fresh = tuple(k for k in keys if (domain, k.selector) not in present)
    if not fresh:
        return Plan(domain=domain, reason="already signed")
    return Plan(domain=domain, keys=fresh)


def header_list(data: bytes) -> list[bytes]:
    """The ``h=`` list for ``data``: each ``SIGNED`` field as often as it occurs, ``OVERSIGNED`` ones once more."""
    headers, _ = dkim.rfc822_parse(data)
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        lower = name.lower()
        counts[lower] = counts.get(lower, 0) + 1
    out: list[bytes] = []
    for field in SIGNED:
        name = field.encode("ascii")
        extra = 1 if field in OVERSIGNED else 0
        out += [name] * (counts.get(name, 0) + extra)
    return out


def sign(data: bytes, domain: str, keys: list[LoadedKey], now: int | None = None) -> bytes:
    """The DKIM-Signature fields (CRLF-terminated) to prepend to ``data``, one per key, every one over
    ``data`` itself (relaxed/relaxed)."""
    include = header_list(data)
    out = b""
    for key in keys:
        signer = dkim.DKIM(data, signature_algorithm=ALGORITHMS[key.algorithm], linesep=b"\r\n")
        field = signer.sign(key.selector.encode("ascii"), domain.encode("ascii"), key.private,
                            canonicalize=(b"relaxed", b"relaxed"), include_headers=include)
        if not field.endswith(b"\r\n"):
            field += b"\r\n"
        out += field
    return out


def arc_seal(data: bytes, domain: str, selector: str, private: bytes, authserv_id: str) -> bytes | None:
    """The ARC set (AAR, AMS, AS) to prepend to ``data``, from our ``Authentication-Results``
    (``authserv_id``); None when the message carries none of ours (nothing to vouch for) or the chain
    cannot be continued (RFC 8617 5.1.2)."""
    fields = dkim.arc_sign(data, selector.encode("ascii"), domain.encode("ascii"), private,
                           authserv_id.encode("ascii"), include_headers=_arc_headers(data), linesep=b"\r\n")
    if not fields:
        return None
    return b"".join(f if f.endswith(b"\r\n") else f + b"\r\n" for f in fields)


def _arc_headers(data: bytes) -> list[bytes]:
    """The AMS header list: the DKIM set as present (no over-signing: a later hop may add to a forwarded
    message, and the seal must still say what we saw)."""
    headers, _ = dkim.rfc822_parse(data)
    present = {name.lower() for name, _ in headers}
    return [f.encode("ascii") for f in SIGNED if f.encode("ascii") in present] or [b"from"]


# --- keys -----------------------------------------------------------------------------------------


def generate_key(algorithm: str, bits: int = 2048) -> tuple[bytes, str]:
    """A new private key (PEM; PKCS#1 for RSA, PKCS#8 for Ed25519) and its DKIM TXT record value."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"
    if algorithm == "ed25519":
        ekey = ed25519.Ed25519PrivateKey.generate()
        pem = ekey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        raw = ekey.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return pem, f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    raise ValueError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")


def txt_record(name: str, record: str) -> str:
    """A zone-file line publishing ``record`` at ``name``, in character-strings of at most 255 octets."""
    chunks = " ".join(f'"{record[i:i + 250]}"' for i in range(0, len(record), 250))
    return f"{name.rstrip('.')}. 3600 IN TXT ( {chunks} )"


__all__ = ["ALGORITHMS", "OVERSIGNED", "SIGNED", "KeyFileError", "KeyStore", "LoadedKey", "Plan", "arc_seal",
           "existing_signatures", "generate_key", "header_list", "read_private_key", "sign", "signing_plan",
           "txt_record"]
