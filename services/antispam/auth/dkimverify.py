"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, its DNS answered by our resolver.

The keys every signature and seal names are fetched first, concurrently and asynchronously; dkimpy
then verifies in a worker thread with a look-up function that only reads those answers.

ARC with Ed25519: dkimpy (1.1.8) verifies Ed25519 DKIM signatures (RFC 8463) but its ARC code knows
only ``rsa-sha256`` and fails every ``a=ed25519-sha256`` seal as an unknown algorithm. RFC 8617 uses
the DKIM algorithm registry, so the adapter below does what the upstream fix does: it lets ARC accept
``ed25519-sha256`` (the hash is SHA-256, the key type decides the verification) and additionally
requires that a signature's algorithm matches the type of the key it names.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import dkim
import dkim.crypto
import dkim.util

from mailmoat_antispam.auth.headers import Field, fields, may_hold
from mailmoat_antispam.auth.resolver import DnsAnswer, Resolver
from mailmoat_mail.author import dns_name

MAX_SIGNATURES = 10
"""Signatures verified per message; more get ``policy`` (RFC 6376 6.1 lets a verifier limit the work)."""

MAX_ARC_SETS = 50
"""RFC 8617 4.2.1: a chain of more than 50 sets fails."""

ARC_ALGORITHMS = {b"rsa-sha256": b"rsa", b"ed25519-sha256": b"ed25519"}
"""ARC signing algorithms and the key type (``k=``) each needs."""

# The upstream fix: the algorithms ARC accepts are DKIM's (dkimpy reads this table when it validates
# an ARC header's tags; it is shared by every ARC object, so it is extended once, here).
dkim.crypto.ARC_HASH_ALGORITHMS.setdefault(b"ed25519-sha256", dkim.crypto.HASH_ALGORITHMS[b"ed25519-sha256"])


class _Arc(dkim.ARC):
    """dkimpy's ARC verifier, refusing a signature whose algorithm does not fit its key's type."""

    def verify_sig_process(self, sig, include_headers, sig_header, dnsfunc):  # type: ignore[no-untyped-def]
        if ARC_ALGORITHMS.get(sig.get(b"a", b"")) != self.ktag:
            raise dkim.ValidationError(f"a={sig.get(b'a', b'').decode('ascii', 'replace')} does not fit a "
                                       f"{self.ktag.decode('ascii', 'replace')} key")
        return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)


def arc_verify(data: bytes, dnsfunc, minkey: int = 1024) -> tuple[bytes | None, list, str]:  # type: ignore[no-untyped-def]
    """``dkim.arc_verify`` with the adapter's verifier (RSA and Ed25519 seals)."""
    verifier = _Arc(data, logger=_quiet, minkey=minkey, timeout=5)
    try:
        return verifier.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return dkim.CV_Fail, [], str(exc)


_quiet = logging.getLogger("mailmoat.antispam.dkim")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(frozen=True)
class DkimResult:
    result: str
    """pass, fail, policy, temperror or permerror (RFC 8601 2.7.1)."""
    domain: str = ""
    """The signing domain (``d=``)."""
    selector: str = ""
    identity: str = ""
    """The agent or user identifier (``i=``), when present."""
    b: str = ""
    """The first 8 characters of the signature (``header.b``), to tell signatures apart."""
    reason: str = ""


@dataclass(frozen=True)
class ArcResult:
    result: str = "none"
    """pass, fail or none (RFC 8617 chain validation status)."""
    reason: str = ""
    instances: int = 0
    sealers: tuple[str, ...] = ()
    """``d=`` of each ARC-Seal, oldest (i=1) first."""
    newest_results: str = ""
    """The newest ``ARC-Authentication-Results`` value (what the last sealer saw), for overrides."""


@dataclass
class _Keys:
    answers: dict[str, DnsAnswer] = field(default_factory=dict)

    def dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        answer = self.answers.get(name.decode("ascii", "replace").lower().rstrip("."))
        if answer is None or answer.status != "ok" or not answer.records:
            return None
        return answer.records[0].encode("utf-8", "surrogateescape")


def _tags(value: str) -> dict[str, str]:
    try:
        parsed = dkim.util.parse_tag_value(re.sub(r"\s+", " ", value).encode("utf-8", "replace"))
    except Exception:  # dkimpy raises its own InvalidTagValueList and a few others on malformed input
        return {}
    return {k.decode("ascii", "replace"): v.decode("utf-8", "replace") for k, v in parsed.items()}


def _key_name(tags: dict[str, str]) -> str | None:
    selector, domain = tags.get("s", "").strip(), tags.get("d", "").strip()
    if not selector or not domain or _bad_name(domain, selector):  # such a name is never looked up
        return None
    return f"{selector}._domainkey.{domain}".lower().rstrip(".")


def _bad_name(domain: str, selector: str) -> str:
    """Why ``d=`` or ``s=`` is not a name RFC 6376 3.5 allows (dot-separated labels: letters, digits, hyphens;
    U-labels as RFC 8616 4.2 lets them be), or "". A verifier that looked such a name up anyway would find the
    key of whoever controls the name it really asks for — ``legitimate.test'x.evil.test`` is a name in
    evil.test, and the bytes after a NUL are dropped by C resolvers — while a reader of the result (and of
    ``Authentication-Results``) may take the signer for legitimate.test."""
    if not dns_name(domain.removesuffix(".")):
        return f"d={domain!r} is not a domain name"
    if not dns_name(selector.removesuffix(".")):
        return f"s={selector!r} is not a selector (dot-separated labels)"
    return ""


async def _fetch(resolver: Resolver, names: Iterable[str]) -> _Keys:
    unique = sorted(set(names))
    answers = await asyncio.gather(*(resolver.query(n, "TXT") for n in unique))
    return _Keys(dict(zip(unique, answers, strict=True)))


def _signatures(headers: list[Field]) -> list[dict[str, str]]:
    return [_tags(f.value) for f in headers if f.name.lower() == "dkim-signature"]


async def verify_dkim(data: bytes, resolver: Resolver, *, minkey: int = 1024) -> list[DkimResult]:
    """One result per DKIM-Signature, top to bottom; [] when the message is not signed."""
    signatures = _signatures(fields(data)) if may_hold(data, b"dkim-signature") else []
    if not signatures:
        return []
    keys = await _fetch(resolver, filter(None, (_key_name(t) for t in signatures[:MAX_SIGNATURES])))
    return await asyncio.to_thread(_verify_all, data, signatures, keys, minkey)


def _verify_all(data: bytes, signatures: list[dict[str, str]], keys: _Keys, minkey: int) -> list[DkimResult]:
    results: list[DkimResult] = []
    for index, tags in enumerate(signatures):
        if index >= MAX_SIGNATURES:
            results.append(DkimResult("policy", tags.get("d", "").strip().lower(), tags.get("s", "").strip(),
                                      reason=f"not verified: more than {MAX_SIGNATURES} signatures"))
            continue
        results.append(_verify_one(data, index, tags, keys, minkey))
    return results


def _verify_one(data: bytes, index: int, tags: dict[str, str], keys: _Keys, minkey: int) -> DkimResult:
    domain = tags.get("d", "").strip().lower()
    selector = tags.get("s", "").strip()
    b = re.sub(r"\s+", "", tags.get("b", ""))[:8]
    base = {"domain": domain, "selector": selector, "identity": tags.get("i", "").strip(), "b": b}
    if tags and domain and selector and _bad_name(domain, selector):
        return DkimResult("permerror", reason=_bad_name(domain, selector), **base)
    name = _key_name(tags)
    if not tags or name is None:
        return DkimResult("permerror", reason="malformed signature (tags d= and s= required)", **base)
    answer = keys.answers.get(name)
    if answer is None or answer.status == "temperror":
        reason = answer.error if answer is not None else "no answer"
        return DkimResult("temperror", reason=f"key look-up {name}: {reason}", **base)
    if answer.void:
        return DkimResult("permerror", reason=f"no key published at {name}", **base)
    try:
        verifier = dkim.DKIM(data, logger=_quiet, minkey=minkey)
        ok = verifier.verify(idx=index, dnsfunc=keys.dnsfunc)
    except dkim.KeyFormatError as exc:
        return DkimResult("permerror", reason=f"bad key: {exc}", **base)
    except dkim.DKIMException as exc:
        text = str(exc) or type(exc).__name__
        if text.startswith(("body hash mismatch", "x= value is past")):  # RFC 6376 6.1: PERMFAIL, not a syntax error
            return DkimResult("fail", reason=text.split(" (", 1)[0], **base)
        return DkimResult("permerror", reason=text, **base)
    except Exception as exc:  # a malformed message must give a result, never an exception
        return DkimResult("permerror", reason=f"{type(exc).__name__}: {exc}", **base)
    if ok:
        return DkimResult("pass", reason="signature verified", **base)
    return DkimResult("fail", reason="signature did not verify (body or signed headers changed, or wrong key)", **base)


ARC_FIELDS = ("arc-seal", "arc-message-signature", "arc-authentication-results")

_AAR_INSTANCE = re.compile(r"\s*i\s*=\s*([0-9]{1,2})\s*;(.*)$", re.S)


def _instance(field: Field) -> int | None:
    """An ARC field's instance, 1 to 50 (RFC 8617 4.2.1): the ``i=`` tag of a seal or message signature,
    the leading ``i=N;`` of an ARC-Authentication-Results (4.1.1). None when missing or malformed, or when
    dkimpy, which takes the first ``i=<digits>`` anywhere in a field, reads another instance: then the
    sets it validates are not the ones the sealers and results are read from."""
    if field.name.lower() == "arc-authentication-results":
        match = _AAR_INSTANCE.match(field.value)
        text = match.group(1) if match else ""
    else:
        text = _tags(field.value).get("i", "").strip()
    ours = int(text) if re.fullmatch(r"[0-9]{1,2}", text) else 0
    theirs = dkim.ARC.INSTANCE_RE.search(field.value.encode("utf-8"))
    if not 1 <= ours <= MAX_ARC_SETS or theirs is None or int(theirs.group(1)) != ours:
        return None
    return ours


async def verify_arc(data: bytes, resolver: Resolver, *, minkey: int = 1024) -> ArcResult:
    """The ARC chain's validation status (RFC 8617 5.2), its sealers and the newest AAR."""
    if not may_hold(data, b"arc-"):
        return ArcResult("none", "no ARC sets")
    arc = [f for f in fields(data) if f.name.lower() in ARC_FIELDS]
    if not arc:
        return ArcResult("none", "no ARC sets")
    names = [f.name.lower() for f in arc]
    if names.count("arc-seal") > MAX_ARC_SETS or names.count("arc-message-signature") > MAX_ARC_SETS:
        return ArcResult("fail", f"more than {MAX_ARC_SETS} ARC sets")
    numbered: list[tuple[int, Field]] = []
    for f in arc:
        instance = _instance(f)
        if instance is None:
            return ArcResult("fail", f"{f.name} without a well-formed instance (i=1 to {MAX_ARC_SETS})")
        numbered.append((instance, f))
    seals = sorted(((i, _tags(f.value)) for i, f in numbered if f.name.lower() == "arc-seal"), key=lambda s: s[0])
    sealers = tuple(t.get("d", "").strip().lower() for _, t in seals)
    newest = seals[-1][0] if seals else 0
    newest_results = ""
    for i, f in numbered:
        match = _AAR_INSTANCE.match(f.value) if f.name.lower() == "arc-authentication-results" else None
        if match and i == newest:
            newest_results = match.group(2).strip()
    signed = [_tags(f.value) for f in arc if f.name.lower() != "arc-authentication-results"]
    keys = await _fetch(resolver, filter(None, (_key_name(t) for t in signed)))
    temporary = [n for n, a in keys.answers.items() if a.status == "temperror"]
    if temporary:
        return ArcResult("fail", f"key look-up failed: {', '.join(temporary)}", newest, sealers, newest_results)
    cv, reason = await asyncio.to_thread(_arc, data, keys, minkey)
    return ArcResult(cv, reason, newest, sealers, newest_results)


def _arc(data: bytes, keys: _Keys, minkey: int) -> tuple[str, str]:
    try:
        cv, _, reason = arc_verify(data, keys.dnsfunc, minkey)
    except Exception as exc:  # dkimpy may raise on malformed headers; that chain fails
        return "fail", f"{type(exc).__name__}: {exc}"
    if cv is None:
        return "fail", str(reason)
    text = cv.decode("ascii") if isinstance(cv, bytes) else str(cv)
    return text, str(reason)


__all__ = ["ARC_ALGORITHMS", "ArcResult", "DkimResult", "arc_verify", "verify_arc", "verify_dkim"]
