"""What rule conditions look at, read lazily from the envelope and the bytes (pure, read-only).

Bodies and attachments are parsed only when a condition asks for them; text parts are transfer-decoded
(base64, quoted-printable) and decoded from their charset; RFC 2047 header words are decoded.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from email.message import Message
from functools import cached_property

from mailmoat_antispam.verdict import AntispamVerdict
from mailmoat_antivirus.verdict import AntivirusVerdict
from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_mail import filetypes, mimeedit, mimeparts
from mailmoat_mail.author import Author, read_author
from mailmoat_mail.markup import visible_text
from mailmoat_platform.models import Envelope
from mailmoat_platform.verdicts import detail_in, details
from mailmoat_policy import Policy

MAX_TEXT = 1_048_576
"""Characters of subject-and-body text conditions look at (longer bodies are cut)."""
MAX_PARTS = 1_000
_ENCRYPTED_OLE = "EncryptedPackage".encode("utf-16-le")


def domain_of(address: str) -> str:
    _, sep, domain = address.rpartition("@")
    return domain.strip().lower().rstrip(".") if sep else ""


def decode_header_value(value: str) -> str:
    """An RFC 2047 header value as text, unfolded."""
    text = mimeparts.decoded_field(value)
    return re.sub(r"\r?\n[ \t]+", " ", text).replace("\r", "").replace("\n", "")



def part_text(part: Message) -> str:
    """A text part's body decoded from its transfer encoding and charset (unknown charsets: UTF-8, else Latin-1)."""
    return mimeparts.decode(mimeparts.payload(part), mimeparts.charset(part))



def _encrypted(payload: bytes, kind: str | None) -> bool:
    """Password protection seen in the content: a zip with an encrypted member, an encrypted Office
    document (OLE ``EncryptedPackage``) or a PDF with an ``/Encrypt`` dictionary."""
    if kind == "zip" or (kind is not None and payload[:2] == b"PK"):
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                return any(info.flag_bits & 0x1 for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
            return False
    if kind == "ole":
        return _ENCRYPTED_OLE in payload
    if kind == "pdf":
        return b"/Encrypt" in payload
    return False


def _zip_kind(payload: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            return filetypes.refine_zip(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
        return "zip"


@dataclass
class Attachment:
    name: str | None
    extension: str | None
    kind: str | None
    """True type from the content (``exe``, ``zip``, ``docm``, ``pdf``, ...), None when unknown."""
    size: int
    encrypted: bool


class Facts:
    """The message as rule conditions see it; ``data`` and the live state are the engine's."""

    def __init__(self, envelope: Envelope, data: bytes, policy: Policy, rcpt_to: list[str], scl: int | None):
        self.envelope = envelope
        self.data = data
        self.policy = policy
        self.rcpt_to = rcpt_to
        self.scl_override = scl
        """The SCL an earlier rule set (-1 for a bypass), which takes the place of the verdicts'."""
        self._decoded: dict[str, list[str]] = {}

    # --- envelope and verdicts ---------------------------------------------------------------

    @property
    def sender(self) -> str:
        return self.envelope.mail_from.strip().lower()

    @cached_property
    def author(self) -> Author:
        """The From fields as a mail client shows them (the one author parser)."""
        return read_author(self.data)

    @property
    def recipients(self) -> list[str]:
        return [r.strip().lower() for r in self.rcpt_to]

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def spam(self) -> AntispamVerdict | None:
        """The antispam verdict's detail (as a rule's SCL left it: the engine rewrites the verdict)."""
        return detail_in(self.envelope, "antispam", AntispamVerdict)

    @property
    def scl(self) -> int | None:
        """SCL set by an earlier rule, else the antispam verdict's, else -1 when allow-listed by the
        connection filter; None when nothing says."""
        if self.scl_override is not None:
            return self.scl_override
        if self.spam is not None and self.spam.scl is not None:
            return self.spam.scl
        conn = detail_in(self.envelope, "connection_filter", ConnectionVerdict)
        if conn is not None and conn.allow_listed(self.envelope.verdicts["connection_filter"]):
            return -1
        return None

    @property
    def bcl(self) -> int | None:
        return self.spam.bcl if self.spam is not None else None

    @cached_property
    def verdict_names(self) -> frozenset[str]:
        """The names of ``RULE_VERDICTS`` the filter verdicts carry (each stage's ``rule_verdicts``)."""
        names: set[str] = set()
        for verdict, detail in details(self.envelope):
            names |= detail.rule_verdicts(verdict)
        return frozenset(names)

    # --- headers ---------------------------------------------------------------------------------

    @cached_property
    def _head(self) -> Message:
        end = mimeedit.sections(self.data)[0]
        return mimeparts.parse(self.data[:end] + b"\r\n")

    def header(self, name: str) -> list[str]:
        """Every field of that name, decoded once per message, however many conditions read it (a field of
        thousands of encoded words takes a tenth of a second)."""
        key = name.lower()
        if key not in self._decoded:
            self._decoded[key] = [decode_header_value(mimeparts.text(v)) for v in self._head.get_all(name) or []]
        return self._decoded[key]

    @cached_property
    def subject(self) -> str:
        return " ".join(self.header("Subject"))[:MAX_TEXT]

    # --- body and attachments -------------------------------------------------------------------

    @cached_property
    def _tree(self) -> Message:
        return mimeparts.parse(self.data)

    def _leaves(self) -> list[tuple[Message, bool]]:
        """(leaf part, inside an attached message) in order."""
        out: list[tuple[Message, bool]] = []

        def walk(part: Message, attached: bool, encoded_in: int = 0) -> None:
            if len(out) >= MAX_PARTS:
                return
            encoded = mimeparts.encoded_message(part) if encoded_in < mimeparts.MAX_ENCODED else None
            if encoded is not None:  # an attached message sent transfer-encoded: read decoded
                walk(mimeparts.parse(encoded), True, encoded_in + 1)
                return
            payload = part.get_payload() if part.is_multipart() else None  # a leaf's text may not decode
            if isinstance(payload, list):
                inner = attached or part.get_content_type() == "message/rfc822"
                for child in payload:
                    if isinstance(child, Message):
                        walk(child, inner, encoded_in)
            else:
                out.append((part, attached))

        walk(self._tree, False)
        return out

    @cached_property
    def body(self) -> str:
        """The message's own text and HTML parts (not attachments, not attached messages), as text."""
        texts: list[str] = []
        size = 0
        for part, attached in self._leaves():
            if attached or part.get_content_maintype() != "text" or _is_attachment(part):
                continue
            text = part_text(part)
            if part.get_content_subtype() == "html":
                text = visible_text(text)
            texts.append(text)
            size += len(text)
            if size >= MAX_TEXT:
                break
        return "\n".join(texts)[:MAX_TEXT]

    @cached_property
    def attachments(self) -> list[Attachment]:
        out = []
        for part, _ in self._leaves():
            if not _is_attachment(part):  # the whole message counts too when it is one named file
                continue
            name = mimeparts.filename(part)
            payload = mimeparts.payload(part)
            kind = filetypes.detect(payload[: filetypes.HEAD])
            if kind == "zip":
                kind = _zip_kind(payload)
            out.append(Attachment(name, filetypes.extension(name), kind, len(payload), _encrypted(payload, kind)))
        return out

    @property
    def av_found_encrypted(self) -> bool:
        """The antivirus verdict saw an encrypted archive (blocked or allowed)."""
        av = self.envelope.verdicts.get("antivirus")
        if av is None:
            return False
        detail = detail_in(self.envelope, "antivirus", AntivirusVerdict)
        return av.result == "encrypted" or (detail is not None and detail.found_encrypted)


def _is_attachment(part: Message) -> bool:
    return mimeparts.attachment(part)
