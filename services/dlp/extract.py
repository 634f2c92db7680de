"""The text of a message (pure, bounded): the Subject, text parts (decoded in their charset, HTML as the
text a reader sees), and the text of attachments (PDF, DOCX, XLSX, text files, and these inside
archives), one ``Text`` per part, in message order.

Everything is bounded by ``dlp.limits`` (``Budget``) and archives by ``antimalware.archives``: what is
skipped is noted. An attachment that cannot be read is noted and the walk goes on; nothing here raises
for what a message holds, except ``OutOfTime`` when the message's time is used up.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

from mailmoat_dlp import archives, documents
from mailmoat_dlp.budget import Budget, OutOfTime, redact
from mailmoat_dlp.policy import Dlp
from mailmoat_mail import filetypes, mimeparts
from mailmoat_mail.markup import visible_text
from mailmoat_policy import ArchiveLimits

TEXT_EXTENSIONS = frozenset({"txt", "csv", "tsv", "log", "md", "json", "xml", "ini", "cfg", "yaml", "yml", "sql",
                             "eml", "vcf", "ics", "rtf"})
HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml"})
SNIFF = 4096


@dataclass(frozen=True)
class Text:
    part: str
    """``subject``, a MIME part path (``1.2``) with a file name, or an archive member under it (redacted)."""
    text: str


def _subject(message: Message) -> str:
    return mimeparts.decoded_field(mimeparts.header(message, "subject") or "")


def _leaves(message: Message, budget: Budget) -> Iterator[tuple[str, Message]]:
    """``(path, part)`` of every leaf, depth first in message order (``1`` is the message itself, ``1.2``
    its second part, an attached message's parts under its own path)."""
    stack: list[tuple[str, Message, int, int]] = [("1", message, 0, 0)]
    while stack:
        path, part, depth, encoded_in = stack.pop()
        encoded = mimeparts.encoded_message(part)
        if encoded is not None:  # an attached message sent transfer-encoded: read decoded
            if encoded_in >= mimeparts.MAX_ENCODED or depth >= mimeparts.MAX_DEPTH:
                budget.note(f"{path}: attached messages sent transfer-encoded nested too deep, not read")
            else:
                stack.append((f"{path}.1", mimeparts.parse(encoded), depth + 1, encoded_in + 1))
            continue
        if part.is_multipart() and not mimeparts.too_deep(part):
            if depth >= mimeparts.MAX_DEPTH:
                budget.note(f"parts nested deeper than {mimeparts.MAX_DEPTH} not read")
                continue
            children = part.get_payload()
            if isinstance(children, list):
                for index in range(len(children), 0, -1):
                    child = children[index - 1]
                    if isinstance(child, Message):
                        stack.append((f"{path}.{index}", child, depth + 1, encoded_in))
            continue
        yield path, part


def _textual(data: bytes) -> bool:
    head = data[:SNIFF]
    if not head or b"\x00" in head:
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return control * 50 <= len(head)


def _plain(data: bytes, charset: str | None = None) -> str:
    return mimeparts.decode(data, charset)


def _ooxml(data: bytes) -> str | None:
    """``docx`` or ``xlsx`` for a Word or Excel document (macro-enabled too), None for other zips."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError):
        return None
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    return None


class _Walk:
    def __init__(self, settings: Dlp, archive_limits: ArchiveLimits, budget: Budget):
        self.settings = settings
        self.archive_limits = archive_limits
        self.budget = budget

    def file(self, data: bytes, name: str | None, where: str, tally: archives.Tally | None = None,
             depth: int = 0) -> Iterator[Text]:
        """The text of one attachment or archive member (nothing for files without text)."""
        kind = filetypes.detect(data[: filetypes.HEAD])
        ext = filetypes.extension(name)
        try:
            if kind == "pdf":
                yield Text(where, documents.pdf_text(data, self.budget))
            elif kind == "zip" and (office := _ooxml(data)) is not None:
                read = documents.docx_text if office == "docx" else documents.xlsx_text
                yield Text(where, read(data, self.budget))
            elif kind in archives.ARCHIVES:
                yield from self.archive(data, kind, name or "", where, tally or archives.Tally(self.archive_limits),
                                        depth + 1)
            elif ext in HTML_EXTENSIONS and _textual(data):
                yield Text(where, visible_text(_plain(data)))
            elif kind is None and (ext in TEXT_EXTENSIONS or _textual(data)):
                yield Text(where, _plain(data))
        except (OutOfTime, archives.ArchiveLimit):
            raise
        except (documents.Unreadable, archives.Unopenable) as exc:
            self.budget.note(f"{where}: {exc}")
        except Exception as exc:  # a library failing on hostile input: this file is skipped, the rest read
            self.budget.note(f"{where}: not readable ({type(exc).__name__})")

    def archive(self, data: bytes, kind: str, name: str, where: str, tally: archives.Tally, depth: int
                ) -> Iterator[Text]:
        if depth > self.archive_limits.max_depth:
            raise archives.ArchiveLimit(f"archives nested deeper than {self.archive_limits.max_depth} "
                                        "(antimalware.archives.max_depth)")
        for member_path, member in archives.members(data, kind, name, where, tally, self.budget):
            if not self.budget.take_part():
                self.budget.note(f"parts after {self.budget.limits.max_parts} not read (dlp.limits.max_parts)")
                return
            yield from self.file(member, member_path, redact(member_path, 300), tally, depth)

    def leaf(self, path: str, part: Message) -> Iterator[Text]:
        content_type = mimeparts.content_type(part)
        name = mimeparts.filename(part)
        where = f"{path} {redact(name)}" if name else path
        attached = mimeparts.attachment(part)
        if attached and not self.settings.attachments:
            return
        if content_type.startswith(("multipart/", "message/")) and not mimeparts.too_deep(part):
            return
        data = mimeparts.payload(part)
        if len(data) > self.settings.limits.max_part_size:
            self.budget.note(f"{where}: {len(data)} bytes, not read (dlp.limits.max_part_size)")
            return
        if not self.budget.take_part():
            self.budget.note(f"parts after {self.settings.limits.max_parts} not read (dlp.limits.max_parts)")
            return
        if content_type == "text/html":
            yield Text(where, visible_text(_plain(data, mimeparts.charset(part))))
        elif content_type.startswith("text/") and filetypes.detect(data[: filetypes.HEAD]) is None:
            yield Text(where, _plain(data, mimeparts.charset(part)))
        elif self.settings.attachments or not attached:
            try:
                yield from self.file(data, name, where)
            except archives.ArchiveLimit as exc:
                self.budget.note(f"{where}: {exc}")


def extract(raw: bytes, settings: Dlp, archive_limits: ArchiveLimits, budget: Budget) -> Iterator[Text]:
    """The texts of a message, each cut to what is left of ``max_text``; stops (noted) when the message's
    text, parts or time are used up."""
    walk = _Walk(settings, archive_limits, budget)
    message = mimeparts.parse(raw)
    subject = _subject(message)
    if subject:
        yield Text("subject", budget.take_text(subject))
    for path, part in _leaves(message, budget):
        if not budget.text_left():
            return
        budget.check_time()
        for item in walk.leaf(path, part):
            if not budget.text_left():
                return
            yield Text(item.part, budget.take_text(item.text))


__all__ = ["Text", "extract"]
