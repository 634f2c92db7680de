"""Message content for scoring (pure): header fields, decoded text and HTML parts, URLs.

Parts are decoded from base64 and quoted-printable and from their charset (unknown charsets as UTF-8
when the bytes are UTF-8, else Latin-1); the bytes of the message itself are never changed, this is a
read-only view. Parsing goes through ``mimeparts`` (raw 8-bit header values, RFC 2231, deep nesting).
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message

import ada_url

from mailmoat_mail import mimeparts
from mailmoat_mail.markup import visible_text

MAX_PART_BYTES = 2_000_000
"""Text of one part beyond this is not looked at (scoring cost stays bounded)."""
MAX_PARTS = 200

_URL = re.compile(r"""(?i)\b(?:(?:https?|ftp):[/\\]{2}|www\.)[^\s<>"'`{}|\\^\[\]]+""")
_HREF = re.compile(r"""(?is)\b(?:href|src|action|background)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_ATTRIBUTES = ("href", "src", "action", "background")
_ATTRIBUTE = re.compile(r"(?i)href|src|action|background")
_WWW = re.compile(r"(?i)www\.")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_TAB_AND_NEWLINE = str.maketrans("", "", "\t\n\r")
_SPECIAL = frozenset(("http:", "https:", "ftp:"))
_TRAILING = ".,;:!?)]}'\""


@dataclass
class Content:
    """What scoring reads of a message."""

    headers: list[tuple[str, str]]
    """(lower-case name, unfolded value) in order."""
    subject: str = ""
    text: str = ""
    """Decoded text of all text parts (HTML reduced to text)."""
    html: str = ""
    """Decoded HTML of all HTML parts (markup kept, for the advanced spam filter)."""
    urls: list[str] = field(default_factory=list)
    """Distinct URLs from text and HTML, in order of appearance."""
    parts: int = 0
    attachments: int = 0
    defects: list[str] = field(default_factory=list)
    header_bytes: bytes = b""

    def header(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def first(self, name: str) -> str | None:
        values = self.header(name)
        return values[0] if values else None


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """The header block and the body (at the first empty line)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = data.find(sep)
        if index >= 0:
            return data[: index + len(sep) // 2], data[index + len(sep):]
    return data, b""


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def parse_headers(header_bytes: bytes) -> list[tuple[str, str]]:
    """Header fields as (lower-case name, unfolded value); invalid lines are skipped."""
    out: list[tuple[str, str]] = []
    text = header_bytes.decode("utf-8", "replace")
    for raw in re.split(r"\r?\n(?![ \t])", text):
        name, colon, value = raw.partition(":")
        if colon and name and not name[0].isspace():
            out.append((name.strip().lower(), _unfold(value)))
    return out



def _payload_text(part: Message) -> str:
    """A text part decoded from its transfer encoding and charset (unknown or none: UTF-8, else Latin-1)."""
    return mimeparts.decode(mimeparts.payload(part)[:MAX_PART_BYTES], mimeparts.charset(part))


def html_to_text(markup: str) -> str:
    """The text a reader sees of an HTML part (``markup.visible_text``): what scoring and the classifier read."""
    return visible_text(markup)


def _clean_url(url: str) -> str:
    url = html.unescape(url.strip()).rstrip(_TRAILING)
    if url.lower().startswith("www."):
        url = "http://" + url
    return url


def _found(source: str, words: tuple[str, ...], pattern: re.Pattern[str]) -> list[int]:
    """Where any of ``words`` (lower case) occurs in ``source``, case-insensitively: by ``str.find`` in an ASCII
    text (lower-casing keeps its offsets), else where ``pattern`` (those words, ``(?i)``) matches."""
    if not source.isascii():
        return [m.start() for m in pattern.finditer(source)]
    low = source.lower()
    out = []
    for word in words:
        at = low.find(word)
        while at >= 0:
            out.append(at)
            at = low.find(word, at + 1)
    return out


def _matches_at(source: str, starts: Iterable[int], pattern: re.Pattern[str]) -> list[re.Match[str]]:
    """``pattern.finditer(source)`` when every match of ``pattern`` starts at one of ``starts``: tried there in
    order, a start inside a match already found skipped."""
    found: list[re.Match[str]] = []
    end = 0
    for start in sorted(set(starts)):
        if start < end:
            continue
        match = pattern.match(source, start)
        if match is not None:
            found.append(match)
            end = match.end()
    return found


def href_matches(markup: str) -> list[re.Match[str]]:
    """``_HREF.finditer(markup)``, tried only where one of its attribute names starts."""
    return _matches_at(markup, _found(markup, _ATTRIBUTES, _ATTRIBUTE), _HREF)


def url_matches(source: str) -> list[str]:
    """``_URL.findall(source)``, found faster: a match starts with ``www.`` or 3 to 5 characters before ``:`` and
    two slashes or backslashes (the scheme), so ``_URL`` is tried only at those places, in order, as ``finditer``
    would find them (``match`` at a position sees the characters before it for ``\\b``, as a search does)."""
    starts: set[int] = set()
    for mark in (":/", ":\\"):
        at = source.find(mark)
        while at >= 0:
            if source[at + 2:at + 3] in ("/", "\\"):
                starts.update(range(max(0, at - 5), at - 2))
            at = source.find(mark, at + 2)
    starts.update(_found(source, ("www.",), _WWW))
    return [match.group(0) for match in _matches_at(source, starts, _URL)]


def link_url(value: str) -> str:
    """An attribute's value (character references and all) as the string a browser's URL parser reads: leading
    and trailing C0 controls and spaces and every tab and newline removed; a scheme-relative link (``//host``)
    given ``http:``, as a web mail page would give it its own scheme."""
    url = html.unescape(value).strip(_C0_AND_SPACE).translate(_TAB_AND_NEWLINE)
    if len(url) >= 2 and url[0] in "/\\" and url[1] in "/\\":
        url = "http:" + url
    return url


def extract_urls(text: str, markup: str = "") -> list[str]:
    """Distinct http(s)/ftp URLs from plain text and from HTML attributes and text, in order.

    An attribute's value counts when a browser, with no base URL, reads it as an http, https or ftp URL
    (``link_url``, ``url_host``): ``http:\\\\host``, ``http:host``, ``h&#9;ttp://host`` too. In text, a URL is
    ``http://``, ``https://`` or ``ftp://`` (the two slashes may be backslashes) or ``www.``, up to white space
    or a character URLs do not hold as written."""
    seen: dict[str, None] = {}
    if markup:
        for match in href_matches(markup):
            url = link_url(next(g for g in match.groups() if g is not None))
            if url_host(url):
                seen.setdefault(url, None)
    for source in (text, html.unescape(markup)):
        for url in url_matches(source):
            seen.setdefault(_clean_url(url), None)
    return [u for u in seen if u and url_host(u)]


@functools.lru_cache(maxsize=4096)
def _browser_url(url: str) -> tuple[str, str, str]:
    """(host, port, href) of an http, https or ftp URL as a browser parses it with no base URL (the WHATWG URL
    Standard, by ada), the port "" when it is the scheme's default; ("", "", "") for any other URL or none."""
    try:
        parts = ada_url.parse_url(url, ("protocol", "hostname", "port", "href"))
    except ValueError:
        return "", "", ""
    if parts["protocol"] not in _SPECIAL:
        return "", "", ""
    return parts["hostname"].rstrip("."), parts["port"], parts["href"]


def url_host(url: str) -> str:
    """The host a browser goes to for an http, https or ftp URL (WHATWG URL Standard, no base URL), '' when a
    browser would not parse it (or for any other scheme).

    As the browser has it: lower case, an internationalised name in A-labels (``xn--``, UTS #46 as browsers),
    percent-escapes decoded, an IPv4 address in any form (``0x7f.1``, ``2130706433``) in dotted decimal, an IPv6
    address in brackets; a backslash ends the host as a slash does. Without port and without trailing dots (the
    name DNS resolves is the same: ``example.com.`` is ``example.com``)."""
    return _browser_url(url)[0]


def url_href(url: str) -> str:
    """The URL as the browser writes it out (``http:\\\\Bit.ly\\x`` is ``http://bit.ly/x``), '' as ``url_host``."""
    return _browser_url(url)[2]


def url_port(url: str) -> int | None:
    """The port a browser connects to for ``url`` when it is not the scheme's default (80, 443, 21), else None."""
    port = _browser_url(url)[1]
    return int(port) if port else None


def parse(data: bytes) -> Content:
    """Read a message for scoring; never raises for a malformed message."""
    header_bytes, _ = split_header(data)
    headers = parse_headers(header_bytes)
    content = Content(headers=headers, header_bytes=header_bytes)
    subject = content.first("subject")
    content.subject = mimeparts.decoded_field(subject) if subject else ""
    message = mimeparts.parse(data)
    texts: list[str] = []
    markups: list[str] = []
    for index, part in enumerate(message.walk()):
        if index >= MAX_PARTS:
            break
        content.defects += [type(d).__name__ for d in getattr(part, "defects", [])]
        if part.is_multipart():
            continue
        content.parts += 1
        ctype = mimeparts.content_type(part)
        if mimeparts.disposition(part) == "attachment" or not ctype.startswith("text/"):
            content.attachments += 1
            continue
        body = _payload_text(part)
        if ctype == "text/html":
            markups.append(body)
            texts.append(html_to_text(body))
        else:
            texts.append(body)
    content.text = "\n".join(texts)
    content.html = "\n".join(markups)
    content.urls = extract_urls(content.text, content.html)
    return content
