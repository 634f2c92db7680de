"""SPF (RFC 7208): ``check_host()`` over the asynchronous resolver.

Mechanisms all/include/a/mx/ptr/ip4/ip6/exists, modifiers redirect/exp (others ignored), macros
(section 7), the limit of 10 DNS-querying terms and of 2 void look-ups (4.6.4), 10 MX and PTR names
per mechanism. Results: pass, fail, softfail, neutral, none, temperror, permerror; never an exception.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass

from mailmoat_antispam.auth.resolver import DnsAnswer, Resolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_NAMES = 10
DEFAULT_EXPLANATION = "the sending host is not authorised to send mail for this domain"
"""Explanation of a fail without a usable ``exp=`` (RFC 7208 6.2 leaves its text to the receiver)."""

_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$", re.S)
_MECHANISM = re.compile(r"^([+?~-]?)([A-Za-z][A-Za-z0-9_.-]*)(.*)$", re.S)
_DUAL_CIDR = re.compile(r"^(?:/(0|[1-9][0-9]?))?(?://(0|[1-9][0-9]{0,2}))?$")
_MACRO = re.compile(r"%(?:\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}|(.)|$)", re.I)


@dataclass(frozen=True)
class SpfResult:
    result: str
    """pass, fail, softfail, neutral, none, temperror or permerror."""
    domain: str = ""
    """The domain checked (MAIL FROM domain, or the HELO name for the null sender)."""
    identity: str = "mailfrom"
    """``mailfrom`` or ``helo``: which identity was checked."""
    reason: str = ""
    explanation: str = ""
    """For fail: the explanation (the ``exp=`` text, or a default)."""
    lookups: int = 0


class SpfError(Exception):
    result = "permerror"


class TempError(SpfError):
    result = "temperror"


class PermError(SpfError):
    result = "permerror"


@dataclass
class _Term:
    kind: str  # mechanism name or "redirect"/"exp"
    qualifier: str = "pass"
    arg: str | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass
class _Record:
    directives: list[_Term]
    redirect: str | None
    exp: str | None


class _Context:
    """One evaluation: the connecting address, the identities and the shared limits."""

    def __init__(self, resolver: Resolver, ip: IpAddress, sender: str, helo: str, receiver: str):
        self.resolver = resolver
        self.ip = ip
        self.sender = sender
        self.local, _, self.sender_domain = sender.rpartition("@")
        self.helo = helo
        self.receiver = receiver
        self.lookups = 0
        self.voids = 0
        self.timestamp = int(time.time())
        self.validated: str | None = None

    def count_lookup(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS-querying terms")

    async def query(self, name: str, rdtype: str, *, void_counts: bool = True) -> DnsAnswer:
        answer = await self.resolver.query(name, rdtype)
        if answer.status == "temperror":
            raise TempError(f"{name} {rdtype}: {answer.error or 'DNS error'}")
        if void_counts and answer.void:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise PermError(f"more than {MAX_VOID_LOOKUPS} void look-ups")
        return answer


def valid_domain(domain: str) -> bool:
    """A name check_host() can evaluate: dotted, labels 1-63 octets, not an address literal (4.3)."""
    if not domain or domain.startswith("[") or len(domain.rstrip(".")) > 253:
        return False
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2:
        return False
    return all(0 < len(label) <= 63 for label in labels)


def _parse_ip(ip: str) -> IpAddress:
    address = ipaddress.ip_address(ip.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def check_spf(resolver: Resolver, ip: str, mail_from: str, helo: str, *, receiver: str = "unknown") -> SpfResult:
    """SPF for the envelope: the MAIL FROM identity, or the HELO identity for the null sender (2.4)."""
    helo = (helo or "").strip()
    try:
        address = _parse_ip(ip)
    except ValueError:
        return SpfResult("none", reason=f"client address {ip!r} is not an IP address")
    if mail_from and "@" in mail_from:
        local, _, domain = mail_from.rpartition("@")
        identity = "mailfrom"
        sender = f"{local or 'postmaster'}@{domain}"
    else:
        domain = helo
        identity = "helo"
        sender = f"postmaster@{helo}"
    context = _Context(resolver, address, sender, helo, receiver)
    result, reason, explanation = await check_host(context, domain)
    return SpfResult(result, domain.lower().rstrip("."), identity, reason, explanation, context.lookups)


async def check_host(context: _Context, domain: str) -> tuple[str, str, str]:
    """RFC 7208 check_host(): (result, reason, explanation) for ``domain``."""
    if not valid_domain(domain):
        return "none", f"{domain!r} is not a valid domain", ""
    try:
        return await _evaluate(context, domain, top=True)
    except SpfError as exc:
        return exc.result, str(exc), ""


async def _find_record(context: _Context, domain: str) -> str | None:
    answer = await context.resolver.query(domain, "TXT")
    if answer.status == "temperror":
        raise TempError(f"{domain} TXT: {answer.error or 'DNS error'}")
    records = [r for r in answer.records if re.match(r"^v=spf1(?: |$)", r, re.I)]
    if len(records) > 1:
        raise PermError(f"{domain}: more than one SPF record")
    return records[0] if records else None


async def _evaluate(context: _Context, domain: str, *, top: bool = False) -> tuple[str, str, str]:
    text = await _find_record(context, domain)
    if text is None:
        return "none", f"{domain}: no SPF record", ""
    record = _parse(text)
    for term in record.directives:
        if await _matches(context, term, domain):
            explanation = ""
            if term.qualifier == "fail":
                explanation = await _explain(context, record.exp, domain)
            return term.qualifier, f"{domain}: matched {_describe(term)}", explanation
    if record.redirect is not None:
        context.count_lookup()
        target = await _expand(context, record.redirect, domain)
        if not valid_domain(target):
            raise PermError(f"redirect to invalid domain {target!r}")
        result, reason, explanation = await _evaluate(context, target)
        if result == "none":
            raise PermError(f"redirect target {target} has no SPF record")
        return result, reason, explanation
    return "neutral", f"{domain}: no mechanism matched", ""


def _describe(term: _Term) -> str:
    prefix = {"pass": "", "fail": "-", "softfail": "~", "neutral": "?"}[term.qualifier]
    return f"{prefix}{term.kind}{':' + term.arg if term.arg else ''}"


def _parse(text: str) -> _Record:
    """The record's terms; any syntax error anywhere is a permerror (4.6)."""
    directives: list[_Term] = []
    redirect: str | None = None
    exp: str | None = None
    for word in text.split(" ")[1:]:
        if not word:
            continue
        modifier = _MODIFIER.match(word)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                _check_domain_spec(value)
                if name == "redirect":
                    if redirect is not None:
                        raise PermError("redirect= appears twice")
                    redirect = value
                else:
                    if exp is not None:
                        raise PermError("exp= appears twice")
                    exp = value
            else:
                _check_macro_string(value)
            continue
        directives.append(_parse_directive(word))
    return _Record(directives, redirect, exp)


def _parse_directive(word: str) -> _Term:
    match = _MECHANISM.match(word)
    if not match:
        raise PermError(f"unknown term {word!r}")
    qualifier = _QUALIFIERS[match.group(1) or "+"]
    name = match.group(2).lower()
    rest = match.group(3)
    if name not in _MECHANISMS:
        raise PermError(f"unknown mechanism {word!r}")
    term = _Term(name, qualifier)
    if name == "all":
        if rest:
            raise PermError(f"bad term {word!r}")
        return term
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise PermError(f"{name} needs an address: {word!r}")
        network, slash, length = rest[1:].partition("/")
        try:
            address = ipaddress.ip_address(network)
        except ValueError:
            raise PermError(f"bad address in {word!r}") from None
        if (name == "ip4") != isinstance(address, ipaddress.IPv4Address) or "%" in network:
            raise PermError(f"bad address in {word!r}")
        limit = 32 if name == "ip4" else 128
        if slash:
            # At most three digits before int(): a record's length is the sender's to choose, and Python
            # refuses to convert a string of over 4,300 digits (any such length is out of range anyway).
            if not re.fullmatch(r"0|[1-9][0-9]{0,2}", length) or int(length) > limit:
                raise PermError(f"bad prefix length in {word!r}")
            prefix = int(length)
        else:
            prefix = limit
        term.arg = network
        if name == "ip4":
            term.cidr4 = prefix
        else:
            term.cidr6 = prefix
        return term
    spec = ""
    cidr = ""
    if rest.startswith(":"):
        body = rest[1:]
        if name in ("a", "mx"):
            cidr_match = re.search(r"(/[0-9]*)?(//[0-9]*)?$", body)
            cidr = cidr_match.group(0) if cidr_match else ""
            spec = body[: len(body) - len(cidr)]
        else:
            spec = body
        if not spec:
            raise PermError(f"empty domain in {word!r}")
    elif rest.startswith("/") and name in ("a", "mx"):
        cidr = rest
    elif rest:
        raise PermError(f"bad term {word!r}")
    if name in ("include", "exists") and not spec:
        raise PermError(f"{name} needs a domain: {word!r}")
    if spec:
        _check_domain_spec(spec)
        term.arg = spec
    if cidr:
        if name not in ("a", "mx"):
            raise PermError(f"no prefix length allowed in {word!r}")
        cidr_parts = _DUAL_CIDR.match(cidr)
        if not cidr_parts:
            raise PermError(f"bad prefix length in {word!r}")
        v4, v6 = cidr_parts.group(1), cidr_parts.group(2)
        if v4 is not None:
            if int(v4) > 32:
                raise PermError(f"bad prefix length in {word!r}")
            term.cidr4 = int(v4)
        if v6 is not None:
            if int(v6) > 128:
                raise PermError(f"bad prefix length in {word!r}")
            term.cidr6 = int(v6)
    return term


def _check_macro_string(value: str, letters: str = "slodiphvcrt") -> None:
    position = 0
    for match in _MACRO.finditer(value):
        if match.start() != position and "%" in value[position:match.start()]:
            raise PermError(f"bad macro in {value!r}")
        letter, other = match.group(1), match.group(5)
        if letter is None and other not in ("%", "_", "-"):
            raise PermError(f"bad macro in {value!r}")
        if letter is not None and letter.lower() not in letters:
            raise PermError(f"unknown macro letter {letter!r}")
        position = match.end()
    for char in value:
        if ord(char) < 0x21 or ord(char) > 0x7E:
            raise PermError(f"bad character in {value!r}")


def _toplabel(label: str) -> bool:
    """RFC 7208 ``toplabel``: alphanumerics with at least one letter, or alphanumerics and hyphens with a
    hyphen, starting and ending alphanumeric. In one pass: the label is the sender's, of any length, and the
    regular expression of the ABNF backtracks quadratically on a long one."""
    if not label.isascii() or not label or not label[0].isalnum() or not label[-1].isalnum():
        return False
    if "-" in label:
        return all(c.isalnum() or c == "-" for c in label)
    return label.isalnum() and not label.isdigit()


def _ends_in_macro(spec: str) -> bool:
    """``re.search(r"%\\{[^}]*\\}\\.?$", spec)`` for a spec ``_check_macro_string`` let through (no line break):
    a ``%{`` after the last ``}`` before the final one (a dot may follow it). The search reads from every
    ``%{`` to the end of a spec with no ``}`` after it (``%%{`` repeated: quadratic, 0.44 s for 64 KB)."""
    body = spec.removesuffix(".")
    return body.endswith("}") and "%{" in body[:-1].rpartition("}")[2]


def _check_domain_spec(spec: str) -> None:
    """domain-spec: a macro-string ending in a top label or a macro (7.1)."""
    _check_macro_string(spec, "slodiphv")
    if _ends_in_macro(spec):
        return
    label = spec.rstrip(".").rsplit(".", 1)
    if len(label) < 2 or not _toplabel(label[1]):
        raise PermError(f"bad domain {spec!r}")


async def _matches(context: _Context, term: _Term, domain: str) -> bool:
    ip = context.ip
    kind = term.kind
    if kind == "all":
        return True
    if kind == "ip4":
        return isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network(
            f"{term.arg}/{term.cidr4}", strict=False)
    if kind == "ip6":
        return isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network(
            f"{term.arg}/{term.cidr6}", strict=False)
    context.count_lookup()
    target = await _expand(context, term.arg, domain) if term.arg else domain
    if kind == "include":
        if not valid_domain(target):
            raise PermError(f"include of invalid domain {target!r}")
        result, _, _ = await _evaluate(context, target)
        if result == "pass":
            return True
        if result in ("fail", "softfail", "neutral"):
            return False
        if result == "temperror":
            raise TempError(f"include:{target}: temperror")
        raise PermError(f"include:{target}: {result}")
    if not valid_domain(target):
        return False
    if kind == "a":
        return _in_networks(ip, await _addresses(context, target), term)
    if kind == "mx":
        answer = await context.query(target, "MX")
        hosts = [h for h in answer.records if h]
        if len(hosts) > MAX_NAMES:
            raise PermError(f"{target}: more than {MAX_NAMES} MX records")
        for host in hosts:
            if _in_networks(ip, await _addresses(context, host, void_counts=False), term):
                return True
        return False
    if kind == "ptr":
        validated = await _validated_names(context)
        target = target.lower().rstrip(".")
        return any(n == target or n.endswith("." + target) for n in validated)
    if kind == "exists":
        answer = await context.query(target, "A")
        return bool(answer.records)
    raise PermError(f"unknown mechanism {kind}")


async def _addresses(context: _Context, name: str, *, void_counts: bool = True) -> list[IpAddress]:
    rdtype = "A" if isinstance(context.ip, ipaddress.IPv4Address) else "AAAA"
    answer = await context.query(name, rdtype, void_counts=void_counts)
    out: list[IpAddress] = []
    for record in answer.records:
        try:
            out.append(ipaddress.ip_address(record))
        except ValueError:
            continue
    return out


def _in_networks(ip: IpAddress, addresses: list[IpAddress], term: _Term) -> bool:
    prefix = term.cidr4 if isinstance(ip, ipaddress.IPv4Address) else term.cidr6
    for address in addresses:
        if address.version == ip.version and ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False):
            return True
    return False


async def _validated_names(context: _Context) -> list[str]:
    """PTR names of the client whose forward look-up returns it (5.5); DNS errors skip a name."""
    reverse = ipaddress.ip_address(context.ip).reverse_pointer
    answer = await context.resolver.query(reverse, "PTR")
    if answer.status == "temperror":
        return []
    names: list[str] = []
    for name in answer.records[:MAX_NAMES]:
        try:
            addresses = await _addresses(context, name, void_counts=False)
        except TempError:
            continue
        if context.ip in addresses:
            names.append(name.lower().rstrip("."))
    return names


async def _explain(context: _Context, exp: str | None, domain: str) -> str:
    """The ``exp=`` explanation for a fail; any error gives the default explanation (6.2)."""
    if exp is None:
        return DEFAULT_EXPLANATION
    try:
        target = await _expand(context, exp, domain)
        answer = await context.resolver.query(target, "TXT")
        if answer.status != "ok" or len(answer.records) != 1:
            return DEFAULT_EXPLANATION
        text = answer.records[0]
        if any(ord(c) > 0x7E or ord(c) < 0x20 for c in text):
            return DEFAULT_EXPLANATION
        return await _expand(context, text, domain, explanation=True)
    except SpfError:
        return DEFAULT_EXPLANATION


def _ip_text(ip: IpAddress, *, dotted: bool) -> str:
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if dotted:
        return ".".join(ip.exploded.replace(":", ""))
    return ip.compressed


async def _expand(context: _Context, text: str, domain: str, *, explanation: bool = False) -> str:
    """``_expand_text`` after finding the validated name of the client when ``%{p}`` is used."""
    if context.validated is None and re.search(r"%\{p", text, re.I):
        names = await _validated_names(context)
        domain_lower = domain.lower().rstrip(".")
        exact = [n for n in names if n == domain_lower]
        below = [n for n in names if n.endswith("." + domain_lower)]
        context.validated = (exact or below or names or ["unknown"])[0]
    return _expand_text(context, text, domain, explanation=explanation)


def _expand_text(context: _Context, text: str, domain: str, *, explanation: bool = False) -> str:
    """Macro expansion (7.3); for a domain-spec the result is cut to 253 octets from the left (7.3)."""
    out: list[str] = []
    position = 0
    for match in _MACRO.finditer(text):
        out.append(text[position:match.start()])
        position = match.end()
        letter, digits, reverse, delimiters, other = match.groups()
        if letter is None:
            if other == "%":
                out.append("%")
            elif other == "_":
                out.append(" ")
            elif other == "-":
                out.append("%20")
            else:
                raise PermError(f"bad macro in {text!r}")
            continue
        value = _macro_value(context, letter.lower(), domain, explanation)
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            significant = digits.lstrip("0")
            if not significant:
                raise PermError(f"macro with zero labels in {text!r}")
            if len(significant) <= 3:  # more labels than a name can have (127) keep them all (7.3)
                parts = parts[-int(significant):]
        value = ".".join(parts)
        if letter.isupper():
            value = urllib.parse.quote(value, safe="-._~")
        out.append(value)
    out.append(text[position:])
    expanded = "".join(out)
    if not explanation:
        while len(expanded) > 253 and "." in expanded:
            expanded = expanded.split(".", 1)[1]
    return expanded


def _macro_value(context: _Context, letter: str, domain: str, explanation: bool) -> str:
    if letter in "crt" and not explanation:
        raise PermError(f"macro %{{{letter}}} is allowed only in explanations")
    match letter:
        case "s":
            return context.sender
        case "l":
            return context.local or "postmaster"
        case "o":
            return context.sender_domain
        case "d":
            return domain
        case "i":
            return _ip_text(context.ip, dotted=True)
        case "p":
            return context.validated or "unknown"
        case "v":
            return "in-addr" if isinstance(context.ip, ipaddress.IPv4Address) else "ip6"
        case "h":
            return context.helo
        case "c":
            return _ip_text(context.ip, dotted=False)
        case "r":
            return context.receiver
        case "t":
            return str(context.timestamp)
    raise PermError(f"unknown macro letter {letter!r}")


__all__ = ["SpfResult", "check_host", "check_spf", "valid_domain"]
