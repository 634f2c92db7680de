"""The ``Authentication-Results:`` header field (RFC 8601) for an authentication result. Pure."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailmoat_mail.author import dns_name

if TYPE_CHECKING:
    from mailmoat_antispam.auth import AuthResult

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+$")
_BREAKS = re.compile(r"[\r\n\t]+")
_MAX_COMMENT = 200


def _printable(text: str) -> str:
    """``text`` with every character outside printable ASCII (0x20-0x7E) as ``?``."""
    if text.isascii() and text.isprintable():  # the usual case, without a look at each character
        return text
    return "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)


def _value(text: str) -> str:
    """A token as is, anything else as a quoted-string (characters a header cannot carry become ``?``)."""
    text = _printable(text)
    if _TOKEN.match(text):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _comment(text: str) -> str:
    text = _printable(_BREAKS.sub(" ", text).strip())[:_MAX_COMMENT]
    text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f" ({text})" if text else ""


def _domain(text: str) -> str:
    """A domain as an A-label; anything that is not a host name is a quoted-string (odd characters as ``?``), so
    that no reader takes a part of it for the domain: ``legitimate.test'x.evil.test`` or ``a.test(x`` unquoted
    are read by some as ``legitimate.test`` or ``a.test`` followed by a quote or a comment."""
    if not text:
        return '""'
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    if dns_name(text.removesuffix(".")):
        return text
    return _quoted(_printable(text))


def resinfos(result: AuthResult) -> list[str]:
    """One ``method=result ...`` element per check, in the order spf (MAIL FROM, then HELO), dkim (each
    signature), dmarc (each author domain), arc, compauth."""
    out: list[str] = []
    spf = result.spf
    prop = "smtp.helo" if spf.identity == "helo" else "smtp.mailfrom"
    out.append(f"spf={spf.result}{_comment(spf.reason)} {prop}={_domain(spf.domain)}")
    if result.spf_helo is not None:
        helo = result.spf_helo
        out.append(f"spf={helo.result}{_comment(helo.reason)} smtp.helo={_domain(helo.domain)}")
    if not result.dkim:
        out.append("dkim=none (message not signed)")
    for sig in result.dkim:
        props = f" header.d={_domain(sig.domain)}"
        if sig.selector:
            props += f" header.s={_value(sig.selector)}"
        if sig.b:
            props += f" header.b={_value(sig.b)}"
        out.append(f"dkim={sig.result}{_comment(sig.reason)}{props}")
    for dmarc in result.dmarc_all or [result.dmarc]:
        if dmarc.domain:
            summary = f"p={dmarc.policy} pct={dmarc.pct} action={dmarc.effective}" if dmarc.record_domain else ""
            if dmarc.override:
                summary += f" override={dmarc.override}"
            out.append(f"dmarc={dmarc.result}{_comment(summary)} header.from={_domain(dmarc.domain)}")
        else:
            out.append(f"dmarc={dmarc.result}{_comment(dmarc.reason)}")
    arc = result.arc
    arc_note = f"i={arc.instances} sealers={','.join(arc.sealers)}" if arc.instances else ""
    out.append(f"arc={arc.result}{_comment(arc_note)}")
    out.append(f"compauth={result.compauth.result} reason={result.compauth.reason}")
    return out


def authentication_results(authserv_id: str, result: AuthResult) -> bytes:
    """One ``Authentication-Results:`` field, folded, ending in CRLF."""
    lines = [f"Authentication-Results: {_value(authserv_id)};"]
    parts = resinfos(result)
    for index, part in enumerate(parts):
        lines.append(f" {part}{';' if index < len(parts) - 1 else ''}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


__all__ = ["authentication_results", "resinfos"]
