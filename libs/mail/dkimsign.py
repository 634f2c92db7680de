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
import hashlib
import re
import time
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dkim.canonicalization import CanonicalizationPolicy

from mailmoat_mail.author import read_author
from mailmoat_mail.keyfiles import FileCache
from mailmoat_platform.models import Envelope
from mailmoat_policy import DkimKey, Policy

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


PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class LoadedKey:
    selector: str
    algorithm: str
    """``rsa`` or ``ed25519``."""
    private: PrivateKey


def read_private_key(text: bytes, algorithm: str) -> PrivateKey:
    """A key file's contents as a key; raises ``KeyFileError`` when it is not a key of ``algorithm``.

    RSA: PEM (PKCS#1 or PKCS#8), at least 1024 bits. Ed25519: PEM (PKCS#8) or the base64 seed
    dkimpy's ``dknewkey`` writes."""
    try:
        if algorithm == "ed25519" and b"-----BEGIN" not in text:
            seed = base64.b64decode(text.strip(), validate=True)
            if len(seed) != 32:
                raise ValueError("not a 32-byte seed")
            return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        key = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not {'an RSA' if algorithm == 'rsa' else 'an Ed25519'} private key: {exc}") from None
    if algorithm == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyFileError("not an RSA private key")
        if key.key_size < 1024:
            raise KeyFileError(f"an RSA key of {key.key_size} bits (RFC 8301: at least 1024, 2048 advised)")
        return key
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError("not an Ed25519 private key")
    return key


class KeyStore:
    """Private keys by file, read once and again only when the file changes (a rotated k8s Secret)."""

    def __init__(self, files: FileCache | None = None) -> None:
        self.files = files or FileCache()

    def load(self, path: str, algorithm: str) -> PrivateKey:
        try:
            return self.files.get(path, lambda text: read_private_key(text, algorithm), algorithm)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None

    def key(self, entry: DkimKey) -> LoadedKey:
        return LoadedKey(entry.selector, entry.algorithm, self.load(entry.key_file, entry.algorithm))


# --- the header section ---------------------------------------------------------------------------

Fields = list[list[bytes]]
"""Header fields as dkimpy holds them: [name, value after the colon with its folding and final CRLF]."""


def split_message(data: bytes) -> tuple[Fields, bytes] | None:
    """The header fields and the body, or None when the header section is not one a verifier reads
    (a line that is neither a field nor a continuation): such mail is not signed. Never raises."""
    if data.startswith(b"\r\n"):
        return [], data[2:]
    end = data.find(b"\r\n\r\n")
    head, body = (data[:end + 2], data[end + 4:]) if end >= 0 else (data, b"")
    fields: Fields = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return None
            fields[-1][1] += line + b"\r\n"
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or any(c < 0x21 or c > 0x7E for c in name):
            return None
        fields.append([name, value + b"\r\n"])
    return fields, body


def existing_signatures(fields: Fields) -> set[tuple[str, str]]:
    """(d=, s=) of the DKIM-Signature fields present, lower case."""
    found = set()
    for name, value in fields:
        if name.lower() != b"dkim-signature":
            continue
        tags = dict(_DKIM_TAGS.findall(re.sub(rb"\s+", b"", value)))
        d, s = tags.get(b"d", b""), tags.get(b"s", b"")
        found.add((d.decode("ascii", "replace").lower().rstrip("."), s.decode("ascii", "replace").lower()))
    return found


# --- what to sign ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The keys that sign a message (``keys`` empty: none, for ``reason``)."""

    domain: str = ""
    keys: tuple[DkimKey, ...] = ()
    reason: str = ""


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
    parsed = split_message(data)
    if parsed is None:
        return Plan(domain=domain, reason="the header section does not parse")
    present = existing_signatures(parsed[0])
    fresh = tuple(k for k in keys if (domain, k.selector) not in present)
    if not fresh:
        return Plan(domain=domain, reason="already signed")
    return Plan(domain=domain, keys=fresh)


def header_list(fields: Fields) -> list[bytes]:
    """The ``h=`` list: each ``SIGNED`` field as often as it occurs, ``OVERSIGNED`` ones once more."""
    counts: dict[bytes, int] = {}
    for name, _value in fields:
        lower = name.lower()
        counts[lower] = counts.get(lower, 0) + 1
    out: list[bytes] = []
    for field in SIGNED:
        name = field.encode("ascii")
        out += [name] * (counts.get(name, 0) + (1 if field in OVERSIGNED else 0))
    return out


_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_TRAILING_WSP = re.compile(rb"(?<![\t ])[\t ]+\r\n")
"""Tried at the start of a run only: from inside one it matches where the run does (a search from each
position of a run not followed by CRLF reads the run to its end: quadratic, 5 s for 80,000 octets)."""
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 relaxed body canonicalisation, exactly as dkimpy's, but only the runs of white
    space that change are replaced (dkimpy rewrites every single space: 140 ms for 1 MB of text
    against 6 here), and not at all when there are none (a base64 attachment)."""
    if b"\t" in body or b" \r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == len(body):
        body += b"\r\n"
    else:
        body = body[:end + 2] if end > 0 else b""
    return b"" if body == b"\r\n" else body


def _fold(tags: list[bytes], first: int) -> bytes:
    """Tags joined by ``; `` and folded at spaces only (never inside a value), lines up to 78 octets;
    ``first``: the octets before the value on its first line."""
    words: list[bytes] = []
    for index, tag in enumerate(tags):
        parts = tag.split(b" ")
        if index < len(tags) - 1:
            parts[-1] += b";"
        words += parts
    out, width = words[0], first + len(words[0])
    for word in words[1:]:
        if width + 1 + len(word) > 78:
            out, width = out + b"\r\n " + word, 1 + len(word)
        else:
            out, width = out + b" " + word, width + 1 + len(word)
    return out


def _signature(key: LoadedKey, signed: bytes) -> bytes:
    if isinstance(key.private, rsa.RSAPrivateKey):
        return key.private.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return key.private.sign(hashlib.sha256(signed).digest())  # RFC 8463: Ed25519 over the SHA-256 hash


def sign(data: bytes, domain: str, keys: list[LoadedKey], now: int | None = None) -> bytes:
    """The DKIM-Signature fields (CRLF-terminated) to prepend to ``data``, one per key, every one over
    ``data`` itself: relaxed/relaxed, ``t=``, the body hashed once for all. Raises ``ValueError`` when
    the header section does not parse (``signing_plan`` says so first)."""
    parsed = split_message(data)
    if parsed is None:
        raise ValueError("the header section does not parse")
    fields, body = parsed
    include = header_list(fields)
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    canonical = _RELAXED.canonicalize_headers([(n, v) for n, v in fields])
    selected = b"".join(name + b":" + value for name, value in dkim.select_headers(canonical, include))
    stamp = str(int(time.time()) if now is None else now).encode("ascii")
    out = b""
    for key in keys:
        tags = [b"v=1", b"a=" + ALGORITHMS[key.algorithm], b"c=relaxed/relaxed", b"d=" + domain.encode("ascii"),
                b"s=" + key.selector.encode("ascii"), b"t=" + stamp, b"h=" + b" : ".join(include),
                b"bh=" + body_hash, b"b="]
        value = _fold(tags, len(b"DKIM-Signature: "))
        ((name, own),) = _RELAXED.canonicalize_headers([(b"DKIM-Signature", b" " + value)])
        signature = base64.b64encode(_signature(key, selected + name + b":" + own.rstrip()))
        chunks = b"\r\n ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
        out += b"DKIM-Signature: " + value + b"\r\n " + chunks + b"\r\n"
    return out


class _Collect:
    """dkimpy's hasher interface, collecting the bytes to be signed (so that ``cryptography`` signs them)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.parts.append(data)

    def digest(self) -> bytes:
        return hashlib.sha256(b"".join(self.parts)).digest()


class _Arc(dkim.ARC):
    """dkimpy's ARC signer, with the RSA signatures made by ``cryptography`` (dkimpy's own are pure Python)."""

    key: rsa.RSAPrivateKey

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):  # type: ignore[no-untyped-def]
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        collected = _Collect()
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(collected, canon_policy, headers, include_headers,
                                                (header_name, b" " + header_value), dict(fields))
        signature = self.key.sign(b"".join(collected.parts), padding.PKCS1v15(), hashes.SHA256())
        index = next(i for i in range(len(fields)) if fields[i][0] == b"b")
        fields[index] = (b"b", base64.b64encode(signature))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)


def arc_seal(data: bytes, domain: str, selector: str, key: PrivateKey, authserv_id: str) -> bytes | None:
    """The ARC set (AAR, AMS, AS) to prepend to ``data``, from our ``Authentication-Results``
    (``authserv_id``); None when the message carries none of ours (nothing to vouch for), its header
    section does not parse, or the chain cannot be continued (RFC 8617 5.1.2)."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError("ARC seals with RSA keys only")
    parsed = split_message(data)
    if parsed is None:
        return None
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    signer = _Arc(data, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
    signer.key = key
    fields = signer.sign(selector.encode("ascii"), domain.encode("ascii"), pem, authserv_id.encode("ascii"),
                         include_headers=_arc_headers(parsed[0]))
    if not fields:
        return None
    return b"".join(f if f.endswith(b"\r\n") else f + b"\r\n" for f in fields)


def _arc_headers(fields: Fields) -> list[bytes]:
    """The AMS header list: the DKIM set as present, each field as often as it occurs (a verifier refuses a
    signature that leaves an instance unsigned, such as a second From), with no over-signing (a later hop
    may add to a forwarded message, and the seal must still say what we saw)."""
    counts: dict[bytes, int] = {}
    for name, _ in fields:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    return [f.encode("ascii") for f in SIGNED for _ in range(counts.get(f.encode("ascii"), 0))] or [b"from"]


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
