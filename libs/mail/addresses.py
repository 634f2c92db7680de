"""One address grammar for the gateway: SMTP paths and parameters by RFC 5321, with RFC 6531 (SMTPUTF8).

Ingress parses ``MAIL FROM`` / ``RCPT TO`` with it and refuses what does not parse; egress checks the
addresses it is about to send with it, so whatever ingress accepted egress can send. Pure functions,
no I/O.

What is kept as written: the local part (it is interpreted only by the destination host; a quoted
string is written in its canonical form, see ``_canonical_quoted``) and the domain (its case). A
source route (``<@a,@b:user@c>``) is parsed and reported, never part of the address. Beyond the RFC
grammar, non-ASCII whitespace and control characters are refused (RFC 6531 allows them in principle;
no mail system can deliver them, and an SMTP client cannot put Unicode whitespace on a command line).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

import idna

ErrorKind = Literal["syntax", "utf8", "param"]
MAX_DOMAIN = 255
MAX_LABEL = 63

_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ATOM = rf"[{_ATEXT}]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SIMPLE = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*)@({_LABEL}(?:\.{_LABEL})*)>")
"""The common case, ``<dot-atom@ascii.domain>``, matched at once."""
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_ASCII_LABEL = re.compile(rf"{_LABEL}\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
"""``IPv4-address-literal``: Snum is ASCII digits (``\\d`` would take any Unicode digit, and ``int`` reads it)."""
_NOT_IN_ADDRESSES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})
_UNFIT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_PARAMS = re.compile(r"(?: [A-Za-z0-9][A-Za-z0-9-]*(?:=[!-<>-~]+)?)*\Z")
"""ASCII parameters, each keyword once checked separately (``_parameters`` for the rest)."""


class AddressError(ValueError):
    """A path or parameter that does not parse. ``kind``: ``syntax`` (the path), ``utf8`` (non-ASCII
    without SMTPUTF8), ``param`` (a malformed, unknown or repeated parameter)."""

    def __init__(self, kind: ErrorKind, reason: str):
        super().__init__(reason)
        self.kind: ErrorKind = kind
        self.reason = reason


@dataclass(frozen=True)
class Mailbox:
    """``local@domain``, both as written (a quoted local part keeps its quotes)."""

    local_part: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"

    @property
    def quoted(self) -> bool:
        return self.local_part.startswith('"')

    @property
    def local_text(self) -> str:
        """The local part's content: a quoted string without its quotes and quoted pairs."""
        if not self.quoted:
            return self.local_part
        return re.sub(r"\\(.)", r"\1", self.local_part[1:-1], flags=re.DOTALL)

    @property
    def ascii(self) -> bool:
        return self.local_part.isascii() and self.domain.isascii()


@dataclass(frozen=True)
class Path:
    """A reverse or forward path: a mailbox (None for the null sender ``<>``), the source route it
    named (RFC 5321 says to ignore it), and whether it was the bare ``<Postmaster>`` of RCPT TO."""

    mailbox: Mailbox | None
    route: tuple[str, ...] = ()
    postmaster: bool = False

    @property
    def address(self) -> str:
        """The mailbox as the envelope keeps it: ``""`` for the null sender, ``Postmaster`` for the bare form."""
        if self.postmaster:
            return "Postmaster"
        return self.mailbox.address if self.mailbox is not None else ""


@dataclass(frozen=True)
class Command:
    """A parsed ``MAIL FROM:`` or ``RCPT TO:`` argument: the path and its parameters (keywords in upper
    case, in order; None for a parameter without a value)."""

    path: Path
    params: dict[str, str | None] = field(default_factory=dict)


# --- characters --------------------------------------------------------------------------------------


def _utf8_char(char: str) -> bool:
    """A non-ASCII character an address may hold (RFC 6532 UTF8-non-ascii, less whitespace and controls;
    a lone surrogate is a byte that was not UTF-8)."""
    return unicodedata.category(char) not in _NOT_IN_ADDRESSES and not char.isspace()


def _atom_ok(text: str, utf8: bool) -> bool:
    if not text:
        return False
    for char in text:
        if char.isascii():
            if char not in _ATEXT_SET:
                return False
        elif not (utf8 and _utf8_char(char)):
            return False
    return True


_ATEXT_SET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-")


def _check_text(text: str, what: str) -> None:
    """Refuse what was not UTF-8 (surrogate escapes) or holds control characters, before anything else."""
    found = _UNFIT.search(text)
    if found is not None:
        if found.group() >= "\ud800":
            raise AddressError("syntax", f"{what} is not valid UTF-8")
        raise AddressError("syntax", f"{what} contains a control character")


# --- grammar ------------------------------------------------------------------------------------------


def _domain(text: str, utf8: bool) -> str:
    """``Domain`` (RFC 5321 4.1.2; U-labels by RFC 6531 3.3); the text as written, or AddressError."""
    if not text:
        raise AddressError("syntax", "missing domain")
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("syntax", "domain too long")
    for label in text.split("."):
        if _ASCII_LABEL.match(label):
            continue
        if label.isascii() or not utf8:
            raise AddressError("syntax", f"invalid domain {text!r}")
        if not all(char.isascii() or _utf8_char(char) for char in label):
            raise AddressError("syntax", f"invalid domain {text!r}")
        try:
            encoded = idna.encode(label, uts46=True)
            mapped = idna.uts46_remap(label, std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError, ValueError):
            raise AddressError("syntax", f"invalid internationalised domain {text!r}") from None
        if mapped != label.lower():
            # Not a U-label but a form IDNA mapping turns into another label (or labels): width and
            # compatibility forms, dots other than '.', not NFC. DNS would find the mapped domain while
            # everything here compares the domain as written. Case alone is kept as written.
            raise AddressError("syntax", f"domain label {label!r} is not a U-label (IDNA maps it to {mapped!r})")
        if len(encoded) > MAX_LABEL:
            raise AddressError("syntax", "domain label too long")
    return text


def _address_literal(text: str) -> str:
    """``address-literal``: ``[IPv4]`` or ``[IPv6:...]`` (no general literal tag is registered)."""
    inner = text[1:-1]
    match = _IPV4.match(inner)
    if match is not None:
        if all(int(part) <= 255 for part in match.groups()):
            return text
        raise AddressError("syntax", f"invalid IPv4 address literal {text!r}")
    if inner[:5].lower() == "ipv6:":
        value = inner[5:]
        if value and all(c in "0123456789abcdefABCDEF:." for c in value):
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                pass
            else:
                return text
        raise AddressError("syntax", f"invalid IPv6 address literal {text!r}")
    raise AddressError("syntax", f"invalid address literal {text!r}")


def _quoted_end(text: str, start: int, utf8: bool) -> int:
    """Index just past the quoted string that opens at ``start`` (RFC 5321 Quoted-string)."""
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return index + 1
        if char == "\\":
            if index + 1 >= len(text):
                break
            pair = text[index + 1]
            if not (" " <= pair <= "~"):
                raise AddressError("syntax", "invalid quoted pair in the local part")
            index += 2
            continue
        if char.isascii():
            if not (" " <= char <= "~"):
                raise AddressError("syntax", "invalid character in the quoted local part")
        elif not (utf8 and _utf8_char(char)):
            raise AddressError("syntax", "invalid character in the quoted local part")
        index += 1
    raise AddressError("syntax", "unterminated quoted local part")


def _dot_string(text: str) -> bool:
    return bool(_DOT_STRING.match(text)) or all(_atom_ok(atom, True) for atom in text.split("."))


def _canonical_quoted(content: str) -> str:
    """A quoted local part in the one form every mail system writes the same (as Postfix does): its
    content as a dot-string when it is one, else quoted with only ``"`` and ``\\`` escaped. The mailbox
    is the same (RFC 5321 4.1.2: quoting is not part of the local part); aiosmtplib, for one, rewrites
    any other form into this one."""
    text = re.sub(r"\\(.)", r"\1", content, flags=re.DOTALL)
    if _dot_string(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox(text: str, *, utf8: bool = True) -> Mailbox:
    """``Mailbox`` = Local-part "@" ( Domain / address-literal ), or AddressError."""
    _check_text(text, "address")
    if text.startswith('"'):
        end = _quoted_end(text, 0, utf8=True)
        local = _canonical_quoted(text[1:end - 1])
        if text[end:end + 1] != "@":
            raise AddressError("syntax", "expected @ after the quoted local part")
        rest = text[end + 1:]
    else:
        local, at, rest = text.partition("@")
        if not at:
            raise AddressError("syntax", "missing @domain")
        if not _dot_string(local):
            raise AddressError("syntax", f"invalid local part {local!r}")
    if rest.startswith("[") and rest.endswith("]"):
        domain = _address_literal(rest)
    else:
        domain = _domain(rest, utf8=True)
    found = Mailbox(local, domain)
    if not utf8 and not found.ascii:
        raise AddressError("utf8", "non-ASCII address without SMTPUTF8")
    return found


def _route(text: str) -> tuple[str, ...]:
    """``A-d-l`` = At-domain *( "," At-domain ), without the final ``:``."""
    domains = []
    for part in text.split(","):
        if not part.startswith("@"):
            raise AddressError("syntax", "invalid source route")
        domains.append(_domain(part[1:], utf8=True))
    return tuple(domains)


def _path_end(arg: str, utf8: bool) -> int:
    """Index just past the ``>`` that closes the path opening at ``arg[0]``."""
    index = 1
    while index < len(arg):
        char = arg[index]
        if char == '"':
            index = _quoted_end(arg, index, utf8)
            continue
        if char == ">":
            return index + 1
        if char == "<":
            break
        index += 1
    raise AddressError("syntax", "path not closed with >")


def path(inner: str, *, utf8: bool, null: bool = False, postmaster: bool = False) -> Path:
    """The content between ``<`` and ``>``: ``[A-d-l ":"] Mailbox``; ``""`` when ``null`` is allowed;
    ``Postmaster`` (any case) when ``postmaster`` is."""
    if not inner:
        if null:
            return Path(None)
        raise AddressError("syntax", "empty path")
    if postmaster and inner.lower() == "postmaster":
        return Path(None, postmaster=True)
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        head, colon, inner = inner.partition(":")
        if not colon:
            raise AddressError("syntax", "missing @domain")
        route = _route(head)
    return Path(mailbox(inner, utf8=utf8), route)


def _parameters(text: str, utf8: bool) -> dict[str, str | None]:
    """``Mail-parameters`` / ``Rcpt-parameters`` (RFC 5321 4.1.2): keyword[=value], each keyword once."""
    params: dict[str, str | None] = {}
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _KEYWORD.match(keyword):
            raise AddressError("param", f"invalid parameter {item!r}")
        if eq:
            if not value or "=" in value or not all(
                ("!" <= c <= "~") if c.isascii() else (utf8 and _utf8_char(c)) for c in value
            ):
                raise AddressError("param", f"invalid parameter value {item!r}")
        keyword = keyword.upper()
        if keyword in params:
            raise AddressError("param", f"parameter {keyword} given twice")
        params[keyword] = value if eq else None
    return params


def _quick(arg: str) -> tuple[Path, dict[str, str | None]] | None:
    """The common case at once: ``<dot-atom@ascii.domain>`` and ASCII parameters, each given once."""
    match = _SIMPLE.match(arg)
    if match is None or len(match.group(2)) > MAX_DOMAIN:
        return None
    rest = arg[match.end():]
    if not rest:
        return Path(Mailbox(match.group(1), match.group(2))), {}
    if not _PARAMS.match(rest):
        return None
    params: dict[str, str | None] = {}
    for item in rest.split():
        keyword, eq, value = item.partition("=")
        keyword = keyword.upper()
        if keyword in params:
            return None
        params[keyword] = value if eq else None
    return Path(Mailbox(match.group(1), match.group(2))), params


def split(arg: str) -> tuple[str, str]:
    """``<path> params`` → (the path's content, the parameter text); AddressError when not ``<...>``."""
    arg = arg.lstrip(" \t")
    if not arg.startswith("<"):
        raise AddressError("syntax", "address must be enclosed in <>")
    match = _SIMPLE.match(arg)
    end = match.end() if match is not None else _path_end(arg, utf8=True)
    rest = arg[end:]
    if rest and rest[0] not in " \t":
        raise AddressError("syntax", "text after the closing >")
    return arg[1:end - 1], rest


def _fast(inner: str) -> Path | None:
    match = _SIMPLE.fullmatch(f"<{inner}>")
    if match is None or len(match.group(2)) > MAX_DOMAIN:
        return None
    return Path(Mailbox(match.group(1), match.group(2)))


def parse_mail(arg: str) -> Command:
    """The argument of ``MAIL FROM:`` (after the colon): reverse path and parameters. Non-ASCII is
    allowed only with the ``SMTPUTF8`` parameter of the same command."""
    quick = _quick(arg)
    if quick is not None:
        return Command(*quick)
    _check_text(arg, "sender address")
    inner, rest = split(arg)
    try:
        params = _parameters(rest, utf8=True)
    except AddressError:
        params = None
    utf8 = params is not None and "SMTPUTF8" in params
    found = _fast(inner) or path(inner, utf8=True, null=True)
    if not utf8 and found.mailbox is not None and not found.mailbox.ascii:
        raise AddressError("utf8", "non-ASCII sender address without SMTPUTF8")
    if params is None:
        params = _parameters(rest, utf8=False)
    elif not utf8 and not rest.isascii():
        raise AddressError("param", "non-ASCII parameter without SMTPUTF8")
    return Command(found, params)


def parse_rcpt(arg: str, *, utf8: bool) -> Command:
    """The argument of ``RCPT TO:`` (after the colon): forward path (or ``<Postmaster>``) and parameters;
    non-ASCII only when the transaction's MAIL FROM gave ``SMTPUTF8``."""
    quick = _quick(arg)
    if quick is not None:
        return Command(*quick)
    _check_text(arg, "recipient address")
    inner, rest = split(arg)
    found = _fast(inner) or path(inner, utf8=True, postmaster=True)
    if not utf8 and found.mailbox is not None and not found.mailbox.ascii:
        raise AddressError("utf8", "non-ASCII recipient address without SMTPUTF8")
    return Command(found, _parameters(rest, utf8))


def sendable(address: str, *, utf8: bool) -> str | None:
    """Why ``address`` (as an envelope keeps it: ``""`` for the null sender) cannot go on an SMTP
    command line, or None when it can. Egress asks this before it sends."""
    if address == "":
        return None
    try:
        mailbox(address, utf8=utf8)
    except AddressError as exc:
        return exc.reason
    return None


def routing_trick(found: Path) -> str | None:
    """What makes a forward path sender-specified routing (a relay attempt from an untrusted client):
    a source route, ``%`` or ``!`` in the local part, ``@`` in a quoted local part; None otherwise."""
    if found.route:
        return "source route"
    if found.mailbox is None:
        return None
    text = found.mailbox.local_text
    for char, name in (("@", "@ in the local part"), ("%", "% in the local part"), ("!", "! in the local part")):
        if char in text:
            return name
    return None


def recipient_key(mailbox_: Mailbox, *, fold_local: bool) -> str:
    """What makes two recipients the same: the domain without case, and the local part without case
    too when ``fold_local`` (an accepted domain, whose mailboxes the organisation's servers compare
    without case)."""
    local = mailbox_.local_text.casefold() if fold_local else mailbox_.local_text
    return f"{local}@{mailbox_.domain.casefold()}"
