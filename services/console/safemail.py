"""A held message made safe to show (pure): its headers as text, its body as sanitised HTML or escaped text,
its attachments listed (never opened, never offered for download).

Hostile HTML is cleaned with nh3 (the Rust ``ammonia`` sanitiser): no script, style, form or embedded
content, no event handler or ``style`` attribute (CSS expressions), no image (``img``, ``area``, ``map``),
only ``http``, ``https`` and ``mailto`` links, each ``rel="noopener noreferrer nofollow"``. The console's
Content-Security-Policy (no script source at all, images from the console only) stands behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from functools import cache

from mailmoat_mail import markup, mimeparts

MAX_HEADERS_BYTES = 32 * 1024
"""Header text shown at most (the rest is cut, saying so)."""
MAX_BODY_CHARS = 200_000
"""Body text (HTML or plain) rendered at most."""
MAX_PARTS = 200
"""MIME parts walked at most (a message nesting thousands is cut off)."""
MAX_NESTING = 500
"""HTML nested deeper is shown as its text: the sanitiser's tree builder takes time quadratic in the nesting
(seconds for some thousands)."""
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass
class SafeMessage:
    headers: str
    """The header section as text (folded lines kept), possibly cut."""
    subject: str = ""
    html: str = ""
    """Sanitised HTML of the first HTML body (safe to insert into a page), or empty."""
    text: str = ""
    """The first plain-text body (to be escaped by the template), used when there is no HTML."""
    attachments: list[Attachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was cut or could not be read."""


@cache
def tags() -> frozenset[str]:
    """nh3's default tags without images: a held message loads nothing, not even from the console."""
    import nh3  # with the first message shown, not at the console's start

    return frozenset(nh3.ALLOWED_TAGS) - {"img", "area", "map"}


def sanitize_html(markup: str) -> str:
    """HTML that runs nothing and fetches nothing (see the module's docstring)."""
    import nh3

    return nh3.clean(markup, tags=set(tags()), url_schemes=set(URL_SCHEMES), link_rel=LINK_REL,
                     strip_comments=True)


def header_text(data: bytes) -> str:
    """The raw header section (up to the first empty line), decoded leniently."""
    end = len(data)
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = data.find(separator)
        if at != -1:
            end = min(end, at)
    return data[:end].decode("utf-8", "replace")


def _content(part: Message) -> str:
    """A text part's body decoded from its transfer encoding and charset (UTF-8, else Latin-1, when the
    charset is unknown or unusable)."""
    return mimeparts.decode(mimeparts.payload(part), mimeparts.charset(part))


def _subject(data: bytes) -> str:
    """The Subject, RFC 2047 decoded; empty when there is none or it does not parse."""
    return mimeparts.subject(data)[:500]


def render(data: bytes) -> SafeMessage:
    """Headers, a safe body and the attachments of a message's bytes. The MIME structure is read by the
    lenient parser every filter stage uses (``mailmoat_mail.mimeparts``), so that whatever a stage
    could read and hold can be shown."""
    headers = header_text(data)
    notes: list[str] = []
    if len(headers) > MAX_HEADERS_BYTES:
        headers = headers[:MAX_HEADERS_BYTES]
        notes.append(f"headers cut at {MAX_HEADERS_BYTES} characters")
    message = mimeparts.parse(data)
    safe = SafeMessage(headers=headers, subject=_subject(data), notes=notes)
    html = text = None
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            notes.append(f"only the first {MAX_PARTS} MIME parts were read")
            break
        if part.is_multipart():
            continue
        kind = mimeparts.content_type(part)
        filename = mimeparts.filename(part)
        if filename or mimeparts.disposition(part) == "attachment" or not kind.startswith("text/"):
            size = len(mimeparts.payload(part))
            safe.attachments.append(Attachment((filename or "(no name)")[:200], kind[:100], size))
            continue
        if kind == "text/html" and html is None:
            html = _content(part)
        elif kind == "text/plain" and text is None:
            text = _content(part)
    for name, value in (("HTML", html), ("text", text)):
        if value is not None and len(value) > MAX_BODY_CHARS:
            notes.append(f"the {name} body was cut at {MAX_BODY_CHARS} characters")
    if html is not None and markup.nesting(html[:MAX_BODY_CHARS]) > MAX_NESTING:
        notes.append(f"the HTML body nests elements more than {MAX_NESTING} deep: shown as its text")
        safe.text = markup.visible_text(html[:MAX_BODY_CHARS])
    elif html is not None:
        safe.html = sanitize_html(html[:MAX_BODY_CHARS])
    elif text is not None:
        safe.text = text[:MAX_BODY_CHARS]
    return safe
