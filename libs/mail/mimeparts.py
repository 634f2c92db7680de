"""Reading MIME messages safely (pure): parsing, header values, decoded payloads, file names, text.

Malformed mail is normal input for a mail gateway: nothing here raises for what a message contains.
Raw 8-bit bytes in header fields (``filename="Fr\\xf6sche.txt"`` from older clients) are kept as the
bytes they are while parsing, so boundaries and parameters match the body byte for byte, and are
turned into text (UTF-8 when they are UTF-8, else Latin-1) only where a value leaves the parser
(``text``): no ``email.header.Header`` object and no lone surrogate ever reaches the caller. RFC 2231
parameters (continuations, charsets, unknown charsets) are decoded; unknown or broken body charsets
fall back to Latin-1.

``parse`` is the one way to parse: ``email`` with a compat32 policy whose header values are plain
strings. ``MAX_DEPTH`` bounds how deep callers descend into nested multiparts and attached messages;
``MAX_PARTS`` how many entities ``parse`` builds, whatever the message holds.
"""

from __future__ import annotations

import codecs
import email
import email.errors
import email.feedparser
import email.header
import email.utils
import urllib.parse
from email._policybase import Compat32
from email.message import Message, _parseparam

from mailmoat_mail.author import decode_words, unfold

MAX_DEPTH = 128
"""How deep the walks descend into nested multiparts / attached messages (deeper parts are not walked)."""

MAX_PARTS = 10_000
"""The most entities ``parse`` builds from one message: past them it stops reading (the rest is not in the tree).
One MIME entity costs the parser about as much as 100 octets of text, and a message of tiny parts (or a
``message/delivery-status`` part of empty blocks, one entity each) would otherwise cost seconds and gigabytes."""

MAX_ENCODED = 3
"""How many attached messages sent transfer-encoded, one inside another, a walk decodes (``encoded_message``):
each is parsed again whole, so their nesting costs the square of the message's size."""

_CHUNK = 8192
"""Octets fed to the parser at a time (as the library's own ``message_from_bytes`` does)."""


class _RawHeaders(Compat32):
    """compat32, except that header values with raw 8-bit bytes stay ``str`` (surrogate-escaped)."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return value if isinstance(value, str) else str(value)


def collapse(value: object) -> str:
    """``email.utils.collapse_rfc2231_value``, where a charset the library cannot even look up (raw 8-bit
    bytes in its name: ``UnicodeEncodeError``; a NUL: ``ValueError``) counts as an unknown one, whose value
    is taken as written."""
    try:
        return email.utils.collapse_rfc2231_value(value)  # type: ignore[arg-type]
    except (ValueError, LookupError):  # UnicodeError is a ValueError
        if isinstance(value, tuple) and len(value) == 3:
            return email.utils.unquote(str(value[2]))
        return str(value)


_MISSING = object()


def raw_param(field: str, name: str) -> str | None:
    """Parameter ``name`` of a header field read without the library's RFC 2231 decoding, for a field that
    decoding fails on (a continuation numbered beside an unnumbered one of another parameter makes it raise
    ``TypeError`` for every parameter): the plain ``name=`` if there is one, else the ``name*`` pieces in
    order, %-escapes undone as Latin-1, charset and language dropped."""
    plain: str | None = None
    pieces: dict[int, str] = {}
    for item in _parseparam(field)[1:]:
        key, equals, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not equals:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key == name:
            plain = value if plain is None else plain
            continue
        if not key.startswith(name + "*"):
            continue
        index = key[len(name) + 1:]
        encoded = index.endswith("*") or not index
        index = index.rstrip("*") or "0"
        if not index.isdigit() or len(index) > 3:
            continue
        if encoded:
            if int(index) == 0 and value.count("'") >= 2:
                value = value.split("'", 2)[2]
            value = urllib.parse.unquote(value, encoding="latin-1")
        pieces.setdefault(int(index), value)
    if plain is not None:
        return plain
    return "".join(pieces[i] for i in sorted(pieces)) if pieces else None


def content_params(part: Message) -> list[tuple[str, str]]:
    """The Content-Type parameters (after the type), RFC 2231 decoded, continuations joined; read with
    ``raw_param`` when the library's decoding fails on them (``TypeError``, as above)."""
    try:
        return [(str(k), collapse(v)) for k, v in (part.get_params(header="content-type") or [])[1:]]
    except TypeError:
        field = str(part.get("content-type", ""))
        names = dict.fromkeys(item.partition("=")[0].strip().lower().partition("*")[0]
                              for item in _parseparam(field)[1:])
        return [(name, value) for name in names if name and (value := raw_param(field, name)) is not None]


class _Message(Message):
    """A parsed entity whose boundary and file name are read whatever its parameters hold (the parser reads
    the boundary itself: with ``Message``'s, an RFC 2231 charset with raw 8-bit bytes or continuations the
    library cannot order made the whole message unreadable)."""

    def _param(self, name: str, header: str) -> object:
        try:
            value = self.get_param(name, _MISSING, header)
        except Exception:  # the library's RFC 2231 decoding failed on the field
            raw = raw_param(str(self.get(header, "")), name)
            return _MISSING if raw is None else raw
        return value if value is _MISSING else collapse(value)

    def get_boundary(self, failobj: object = None) -> object:  # type: ignore[override]
        boundary = self._param("boundary", "content-type")
        return failobj if boundary is _MISSING else str(boundary).rstrip()

    def get_filename(self, failobj: object = None) -> object:  # type: ignore[override]
        name = self._param("filename", "content-disposition")
        if name is _MISSING:
            name = self._param("name", "content-type")
        return failobj if name is _MISSING else str(name).strip()


POLICY = _RawHeaders(message_factory=_Message)

_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "escape-codec", "undefined"})
"""Codecs Python has that are no MIME charsets (slow, surrogate-producing or always failing)."""


class NestedTooDeep(email.errors.MessageDefect):
    """The parser gave up on the nesting: the body is kept whole, as one opaque leaf."""


class TooManyParts(email.errors.MessageDefect):
    """The parser stopped reading after ``MAX_PARTS`` entities: what follows them is not in the tree."""


def parse(raw: bytes, max_parts: int = MAX_PARTS) -> Message:
    """The message (or entity) parsed leniently; header values are ``str`` whatever bytes they hold.

    Nesting too deep for the parser (``RecursionError``, near a thousand levels) leaves the body
    unparsed, as the single payload of the top entity, with a ``NestedTooDeep`` defect. Past
    ``max_parts`` entities the parser reads no further (within one chunk of input): the top entity
    gets a ``TooManyParts`` defect, and the tree holds what was read, as if the message ended there."""
    try:
        return _parse(raw, max_parts)
    except RecursionError:
        pass
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end == -1 else end
    head, body = (raw, b"") if end == -1 else (raw[:end], raw[end:].lstrip(b"\r\n"))
    message = email.message_from_bytes(head + b"\r\n\r\n", policy=POLICY)
    message.set_payload(body.decode("ascii", "surrogateescape"))
    message.defects.append(NestedTooDeep())
    return message


def _parse(raw: bytes, max_parts: int) -> Message:
    built = 0

    def counted(policy: Compat32 = POLICY) -> Message:
        nonlocal built
        built += 1
        return _Message(policy)

    parser = email.feedparser.BytesFeedParser(counted, policy=POLICY)
    built = 0  # the parser calls the factory once to try it
    for start in range(0, len(raw), _CHUNK):
        if built > max_parts:
            break
        parser.feed(raw[start : start + _CHUNK])
    message = parser.close()
    if built > max_parts:
        message.defects.append(TooManyParts())
    return message


def too_deep(part: Message) -> bool:
    """The parser could not take this entity apart (see ``parse``)."""
    return any(isinstance(d, NestedTooDeep) for d in getattr(part, "defects", ()))


def too_many(part: Message) -> bool:
    """The parser stopped reading this message after ``MAX_PARTS`` entities (see ``parse``)."""
    return any(isinstance(d, TooManyParts) for d in getattr(part, "defects", ()))


def entity_bound(raw: bytes) -> int | None:
    """At least as many entities as ``parse`` would build from ``raw``, counted off its bytes without parsing,
    or None when it may hold a ``message/delivery-status`` part (one entity per block of fields: no such bound).

    Each entity is the top one, the part after a line starting ``--``, or the message inside a ``message/``
    entity (declared as such, or a part of a ``multipart/digest``, which has a delimiter line of its own)."""
    lowered = raw.lower()
    if b"delivery-status" in lowered:
        return None
    # Lines start after LF, after a CR not followed by LF ("\r--" is one), and at the start.
    delimiters = raw.count(b"\n--") + raw.count(b"\r--") + raw.startswith(b"--")
    return 1 + 2 * delimiters + lowered.count(b"message/")


LIBRARY_WORDS = 200
"""Encoded words in one field up to which ``decoded_field`` lets the library decode them."""


def decoded_field(value: str) -> str:
    """A header field's value with its RFC 2047 encoded words decoded; as written where they do not decode.

    Up to ``LIBRARY_WORDS`` encoded words the library decodes them (it joins adjacent words of one charset
    before decoding, so a character split across two survives); beyond, word by word (``author.decode_words``,
    one pass): the library's decoder takes time quadratic in the words, about a second for 20,000."""
    if value.count("=?") > LIBRARY_WORDS:
        return decode_words(value)
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # a charset the library refuses, a word that does not decode, ...: read as written
        return value


def subject(data: bytes) -> str:
    """The Subject of a message (or of the first bytes of one: only its header section is read), unfolded,
    its encoded words decoded (``decoded_field``), as clean text; ``""`` when there is none."""
    ends = [found + len(end) for end in (b"\r\n\r\n", b"\n\n") if (found := data.find(end)) >= 0]
    value = header(parse(data[: min(ends, default=len(data))]), "subject")
    return text(decoded_field(value)) if value else ""


def _unescape(value: str) -> str:
    """Surrogate-escaped raw bytes as text: UTF-8 when they are UTF-8, else Latin-1."""
    if not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return "".join(chr(ord(c) - 0xDC00) if "\udc80" <= c <= "\udcff" else c for c in value)


def text(value: object) -> str:
    """A header value (or parameter) as clean text: raw 8-bit bytes decoded, no surrogates, no NUL or
    other control characters (each becomes U+FFFD, tab kept), safe to put in JSON and PostgreSQL."""
    if value is None:
        return ""
    if isinstance(value, tuple):  # an RFC 2231 triple that could not be collapsed
        value = value[2] if len(value) == 3 else ""
    value = _unescape(value if isinstance(value, str) else str(value))
    return "".join(
        "\ufffd" if ("\ud800" <= c <= "\udfff") or (ord(c) < 32 and c != "\t") or c == "\x7f" else c
        for c in value
    )


def header(part: Message, name: str) -> str | None:
    """The first ``name`` field of ``part``, unfolded, as clean text; None when absent. (Unfolded first: ``text``
    would make each line break of a fold a U+FFFD, and a reader shows a folded field as one line.)"""
    try:
        value = part.get(name)
    except Exception:  # never for message content
        return None
    return None if value is None else text(unfold(str(value)))


def disposition(part: Message) -> str:
    """``attachment``, ``inline``, ... (lower case) from Content-Disposition; ``""`` when absent."""
    try:
        value = part.get_content_disposition()
    except Exception:
        value = None
    return text(value).strip().lower() if value else ""


def content_type(part: Message) -> str:
    """``maintype/subtype`` in lower case (``text/plain`` when missing or invalid, as RFC 2045 says)."""
    try:
        value = part.get_content_type()
    except Exception:
        return "text/plain"
    value = text(value)
    return value if value.isascii() else "application/octet-stream"


def param(part: Message, name: str, header_name: str = "content-type") -> str | None:
    """A parameter of a header field, RFC 2231 continuations and charsets decoded; None when absent."""
    try:
        value = part.get_param(name, header=header_name)
        if value is None:
            return None
    except Exception:  # the library's RFC 2231 decoding failed on the field: read it without
        raw = raw_param(str(part.get(header_name, "")), name)
        return None if raw is None else text(raw)
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value with %-escapes undone)
        chosen, raw = (value[0], value[2]) if len(value) == 3 else (None, "")
        return text(decode(_latin1_bytes(str(raw)), chosen if isinstance(chosen, str) else None))
    return text(value)


def _latin1_bytes(value: str) -> bytes:
    """The bytes behind a string of Latin-1 characters and surrogate-escaped raw bytes."""
    out = bytearray()
    for c in value:
        code = ord(c)
        if code < 256:
            out.append(code)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        else:
            out += c.encode("utf-8", "replace")
    return bytes(out)


def boundary_bytes(part: Message) -> bytes | None:
    """The multipart boundary as the bytes that appear in the body (raw 8-bit kept); None when absent."""
    try:
        value = part.get_boundary()
    except Exception:
        return None
    if not isinstance(value, str) or not value:
        return None
    return value.encode("utf-8", "surrogateescape")


def charset(part: Message) -> str | None:
    """The ``charset`` parameter, lower case ASCII; None when absent or not a plain name."""
    try:
        value = part.get_content_charset()
    except Exception:
        return None
    return value if isinstance(value, str) and value.isascii() and value.isprintable() else None


def transfer_encoding(part: Message) -> str:
    """The part's Content-Transfer-Encoding, lower-case, without the whitespace (line folds included) a
    sender may write around it; ``""`` when there is none."""
    return (header(part, "Content-Transfer-Encoding") or "").strip().lower()


def _decodable(part: Message) -> Message:
    """``part``, or a leaf with its payload and its transfer encoding as ``transfer_encoding`` reads it when
    the library would not recognise it as written (``base64 ``: it would give the encoded text, which mail
    programs decode, and a filter would not look at the content a reader sees)."""
    written = part.get("Content-Transfer-Encoding")
    encoding = transfer_encoding(part)
    if written is None or str(written).lower() == encoding:
        return part
    leaf = Message()
    leaf["Content-Transfer-Encoding"] = encoding
    leaf._payload = part._payload  # as parsed: raw 8-bit bytes kept as surrogates
    return leaf


def payload(part: Message) -> bytes:
    """The part's body decoded from its transfer encoding; the raw body when it cannot be decoded."""
    try:
        data = _decodable(part).get_payload(decode=True)
    except Exception:  # binascii, charset and codec errors of every kind
        data = None
    if isinstance(data, bytes):
        return data
    try:
        raw = part.get_payload()
    except Exception:
        return b""
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def encoded_message(part: Message) -> bytes | None:
    """The message a ``message/rfc822`` entity holds when it came with a transfer encoding (base64 or
    quoted-printable: RFC 2046 5.2.1 forbids it, senders do it), decoded; None for any other entity.

    The library parses the encoded text as if it were the message (its parts are then the encoded
    lines); this gives the bytes it stands for, to parse again."""
    if part.get_content_type() != "message/rfc822":
        return None
    encoding = transfer_encoding(part)
    inner = part.get_payload()
    if encoding not in ("base64", "quoted-printable") or not isinstance(inner, list) or not inner:
        return None
    first = inner[0]
    if not isinstance(first, Message):
        return None
    # Encoded text seldom reads as header fields: then it is all the inner entity's body, as written.
    text = first._payload if not first.keys() and isinstance(first._payload, str) else _as_written(first)
    leaf = _Message(POLICY)
    leaf["Content-Transfer-Encoding"] = encoding
    leaf.set_payload(text)
    return payload(leaf)


def _as_written(entity: Message) -> str:
    """An entity as text: the library's generator, or, where it raises (it encodes a text body again in the
    entity's charset, and an unknown charset is a ``LookupError``), its fields and body as read."""
    try:
        return entity.as_string()
    except Exception:  # a charset or header the generator cannot write out: as read instead
        body = entity._payload if isinstance(entity._payload, str) else ""
        return "".join(f"{name}: {value}\n" for name, value in entity.items()) + "\n" + body


def codec(charset_name: str) -> str | None:
    """The name of Python's codec for a MIME charset; None when unknown or no charset (``base64``,
    ``punycode``, ...)."""
    try:
        found = codecs.lookup(charset_name.strip())
    except (LookupError, ValueError, UnicodeError):  # unknown; a NUL or a surrogate in the name
        return None
    if not getattr(found, "_is_text_encoding", True) or found.name in _NOT_CHARSETS:
        return None
    return found.name


def decode(data: bytes, charset_name: str | None) -> str:
    """Bytes as text in ``charset_name``; without one, or when it is unknown or fails, UTF-8 when the
    bytes are UTF-8, else Latin-1 (which never fails)."""
    name = codec(charset_name) if charset_name else None
    if name is not None:
        try:
            return _no_surrogates(str(data, name, "replace"))
        except Exception:  # codecs that fail on their own terms
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _no_surrogates(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def filename(part: Message) -> str | None:
    """The part's file name (Content-Disposition or Content-Type ``name``), clean text, stripped;
    None when absent."""
    name = param(part, "filename", "content-disposition")
    if name is None:
        name = param(part, "name", "content-type")
    if name is None:
        return None
    return name.strip() or None


def attachment(part: Message) -> bool:
    """Named, or ``Content-Disposition: attachment``."""
    return filename(part) is not None or disposition(part) == "attachment"


__all__ = ["LIBRARY_WORDS", "MAX_DEPTH", "MAX_ENCODED", "MAX_PARTS", "POLICY", "attachment", "boundary_bytes",
           "charset", "content_params", "content_type", "decode", "decoded_field", "disposition", "encoded_message",
           "entity_bound", "filename", "header", "param", "parse", "payload", "subject", "text", "too_deep",
           "too_many", "transfer_encoding"]
