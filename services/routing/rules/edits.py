"""Byte-level edits rule actions make (pure): only the touched header fields or MIME parts change.

Lines end in CRLF (ingress refuses anything else).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.policy
import email.utils
import html
import re

from mailmoat_mail import mimeedit, mimeparts
from mailmoat_mail.mimeedit import CRLF, Span

_LONG_LINE = 998
_PARAM_CHUNK = 200
"""Characters of a parameter value per folded line (quoted, at most twice as many octets)."""
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,200}")
"""A parameter name that can be written again (RFC 2045 token, not too long)."""


# --- header fields --------------------------------------------------------------------------------


def _field(name: str, value: str) -> bytes:
    if value.isascii():
        return f"{name}: {value}".encode("ascii") + CRLF
    encoded = email.header.Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}".encode("ascii") + CRLF


def remove_header(raw: bytes, name: str) -> tuple[bytes, int]:
    """``raw`` without the message's header fields called ``name``; (bytes, fields removed)."""
    end = mimeedit.sections(raw)[0]
    wanted = name.lower().encode("ascii")
    spans = [(s, e) for field, s, e in mimeedit.header_fields(raw, 0, end) if field == wanted]
    if not spans:
        return raw, 0
    out = bytearray()
    pos = 0
    for start, stop in spans:
        out += raw[pos:start]
        pos = stop
    out += raw[pos:]
    return bytes(out), len(spans)


def set_header(raw: bytes, name: str, value: str) -> bytes:
    """``raw`` with one ``name: value`` field: the first field of that name is replaced in place and any
    others removed; when there is none it is added at the top (after any folded lines the message
    opens with)."""
    end = mimeedit.sections(raw)[0]
    wanted = name.lower().encode("ascii")
    fields = mimeedit.header_fields(raw, 0, end)
    spans = [(s, e) for field, s, e in fields if field == wanted]
    line = _field(name, value)
    if not spans:
        # After folded lines that open the message (of no field), which would fold into the new one.
        top = fields[0][2] if raw[:1] in (b" ", b"\t") else 0
        return raw[:top] + line + raw[top:]
    out = bytearray(raw[: spans[0][0]]) + line
    pos = spans[0][1]
    for start, stop in spans[1:]:
        out += raw[pos:start]
        pos = stop
    out += raw[pos:]
    return bytes(out)


# --- disclaimers ----------------------------------------------------------------------------------


class Skipped(Exception):
    """A part the disclaimer cannot be added to (undecodable charset, ...)."""


def default_html(text: str) -> str:
    return "<p>" + "<br>".join(html.escape(line) for line in text.splitlines()) + "</p>"


def _decode(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise Skipped("bad base64") from exc
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)  # hard line breaks stay CRLF, an encoded CR or LF (=0D, =0A) stays itself
    return body


def _qp(data: bytes) -> bytes:
    """Quoted-printable with CRLF line breaks, and no line starting with ``-``: decoded text that reads
    ``--boundary`` on a line of its own must not become a MIME delimiter once encoded again."""
    lines = data.split(CRLF)
    encoded = CRLF.join(binascii.b2a_qp(line, quotetabs=False, istext=False).replace(b"\n", CRLF) for line in lines)
    return re.sub(rb"^-", b"=2D", encoded, flags=re.MULTILINE)


def _encode(data: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", CRLF)
    if cte == "quoted-printable":
        return _qp(data)
    return data


def _insert(decoded: bytes, addition: bytes, subtype: str) -> bytes:
    if subtype == "html":
        index = decoded.lower().rfind(b"</body")
        if index != -1:
            return decoded[:index] + addition + CRLF + decoded[index:]
        return decoded + (b"" if decoded.endswith(CRLF) or not decoded else CRLF) + addition + CRLF
    if not decoded:
        return addition + CRLF
    return decoded + (b"" if decoded.endswith(CRLF) else CRLF) + CRLF + addition + CRLF


def _crlf(text: str) -> str:
    return "\r\n".join(text.splitlines())


_PROBE = "\r\n</body></BODY> Az09.,:;!?=-_'\"()"


def _ascii_compatible(codec: str) -> bool:
    """The charset writes ASCII as ASCII, so line breaks and ``</body>`` are found and added as bytes
    (not so: UTF-16, EBCDIC)."""
    try:
        return _PROBE.encode(codec) == _PROBE.encode("ascii")
    except UnicodeError:
        return False


def _content_headers(raw: bytes, span: Span, header_end: int, ctype: str, params: list[tuple[str, str]],
                     cte: str) -> bytes:
    """The entity's header fields with Content-Type and Content-Transfer-Encoding rewritten where the
    first of them was (at the end when there was none); the other fields kept, in their order."""
    rendered = [item for k, v in params if _TOKEN.fullmatch(k) and v.isascii() for item in _param(k, v)]
    field = f"Content-Type: {ctype}" + "".join(f"; {item}" for item in rendered)
    if len(field) > _LONG_LINE:
        field = f"Content-Type: {ctype}" + "".join(f";\r\n {item}" for item in rendered)
    new = field.encode("ascii") + CRLF + f"Content-Transfer-Encoding: {cte}".encode("ascii") + CRLF
    out: list[bytes] = []
    placed = False
    for name, s, e in mimeedit.header_fields(raw, span.start, header_end):
        if name not in (b"content-type", b"content-transfer-encoding"):
            out.append(raw[s:e].removesuffix(CRLF) + CRLF)
        elif not placed:
            out.append(new)
            placed = True
    if span.path == "1" and not any(line.lower().startswith(b"mime-version:") for line in out):
        out.append(b"MIME-Version: 1.0\r\n")
    return b"".join(out) + (b"" if placed else new)


def _param(name: str, value: str) -> list[str]:
    """``name="value"``; RFC 2231 continuations (``name*0="..."; name*1="..."``) for a long value."""
    if len(value) <= _PARAM_CHUNK:
        return [f'{name}="{email.utils.quote(value)}"']
    chunks = [value[i:i + _PARAM_CHUNK] for i in range(0, len(value), _PARAM_CHUNK)]
    return [f'{name}*{n}="{email.utils.quote(chunk)}"' for n, chunk in enumerate(chunks)]


def _rewrite(raw: bytes, span: Span, text: str, html_text: str) -> bytes:
    """The new bytes of one text part, ``raw[span.start:span.end]``, with the disclaimer appended."""
    if span.start >= 2 and raw[span.start - 2:span.start] != CRLF:
        # An empty part whose delimiter line ends in the CRLF of the next delimiter: written into, its
        # new fields would run into that delimiter line.
        raise Skipped("part without a line of its own")
    header_end, body_start = mimeedit.sections(raw, span.start, span.end)
    head = mimeparts.parse(raw[span.start:header_end] + CRLF)
    subtype = head.get_content_subtype()
    cte = mimeparts.transfer_encoding(head) or "7bit"
    if cte not in ("7bit", "8bit", "binary", "base64", "quoted-printable"):
        raise Skipped(f"transfer encoding {cte}")
    charset = (mimeparts.charset(head) or "us-ascii").lower()
    codec = mimeparts.codec(charset)
    if codec is None:
        raise Skipped(f"charset {charset}")
    body = raw[body_start:span.end]
    decoded = _decode(body, cte)
    addition_text = _crlf(html_text if subtype == "html" else text)
    new_cte, new_charset = cte, charset
    if _ascii_compatible(codec):
        errors = "xmlcharrefreplace" if subtype == "html" else "strict"
        try:
            addition = addition_text.encode(codec, errors)
            new = _insert(decoded, addition, subtype)
        except UnicodeError:
            new = b""
        else:
            if cte == "7bit" and not addition.isascii():
                new_cte = "quoted-printable"
    else:
        new = b""
    if not new:
        # The disclaimer cannot be written in the part's charset: the part becomes UTF-8.
        try:
            current = decoded.decode(codec)
        except UnicodeError as exc:
            raise Skipped(f"charset {charset}") from exc
        new = _insert(current.encode("utf-8"), addition_text.encode("utf-8"), subtype)
        new_charset = "utf-8"
        if cte in ("7bit", "8bit", "binary"):
            new_cte = "quoted-printable"
    if new_cte in ("7bit", "8bit", "binary") and any(len(line) > _LONG_LINE for line in new.split(CRLF)):
        new_cte = "quoted-printable"
    encoded = _encode(new, new_cte)
    encoded = encoded.removesuffix(CRLF) + (CRLF if body.endswith(CRLF) or span.end == len(raw) else b"")
    if new_cte == cte and new_charset == charset:
        head_bytes = raw[span.start:body_start]
        if body_start == header_end:  # no blank line after the fields: end the last one, then add it
            head_bytes = (head_bytes.removesuffix(CRLF) + CRLF if head_bytes else b"") + CRLF
        return head_bytes + encoded
    params = [(k, v) for k, v in mimeparts.content_params(head) if k.lower() != "charset"]
    if new_charset != charset or mimeparts.charset(head) is not None:  # never declare one the part did not
        params.append(("charset", new_charset))
    headers = _content_headers(raw, span, header_end, head.get_content_type(), params, new_cte)
    return headers + CRLF + encoded


def _targets(span: Span) -> tuple[list[Span], str | None]:
    """The message's own text/plain and text/html parts (not attachments, not attached messages);
    a reason when the message cannot take a disclaimer (signed or encrypted)."""
    if span.content_type in ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime"):
        return [], f"{span.content_type} message"
    if span.content_type == "message/rfc822":
        return [], None
    if span.children:
        out: list[Span] = []
        for child in span.children:
            found, reason = _targets(child)
            if reason:
                return [], reason
            out += found
        return out, None
    if span.content_type in ("text/plain", "text/html") and not (span.attachment and span.path != "1"):
        return [span], None
    return [], None


def append_disclaimer(raw: bytes, text: str, html_text: str | None) -> tuple[bytes, list[str], str | None]:
    """``raw`` with the disclaimer after the text of each plain-text and HTML body part; (bytes, paths
    changed, why nothing was changed). Signed or encrypted messages are left alone."""
    tree = mimeedit.parts(raw)
    targets, reason = _targets(tree)
    if reason:
        return raw, [], reason
    html_value = html_text if html_text is not None else default_html(text)
    out = bytearray()
    pos = 0
    done: list[str] = []
    for span in sorted(targets, key=lambda s: s.start):
        try:
            new = _rewrite(raw, span, text, html_value)
        except Skipped:
            continue
        out += raw[pos:span.start] + new
        pos = span.end
        done.append(span.path)
    out += raw[pos:]
    if not done:
        return raw, [], reason or "no text part"
    return bytes(out), done, None


__all__ = ["append_disclaimer", "default_html", "remove_header", "set_header"]
