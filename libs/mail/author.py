"""The author of a message (RFC 5322 3.6.2 ``From:``), read once, the same way for every decision.

A strict parser for the RFC 5322 address grammar (3.4, with the obsolete syntax of 4.4: routes,
CFWS around dots, empty list elements, ``From :``), RFC 6854 groups in ``From:``, RFC 6532 UTF-8,
and RFC 2047 encoded words in display names (decoded inside quoted strings too, as mail clients do).
It returns the mailboxes as a mail client displays them — the comment after a bare address is its
name (``jane@bank.test (Jane Doe)``), as clients show it — or says why the field does not parse.

For a field that does not parse, ``recovered`` holds every address a lenient reader (a mail
client) could show from it: each ``local@domain`` found anywhere in the field, in comments and
decoded encoded words included. Whoever must judge every author domain uses ``Author.domains``,
which covers both.

Interface::

    author = read_author(data)           # the message's bytes; never raises
    author.problem                       # None, or why the message has no single parseable author
    author.ambiguous                     # why a From field is one that programs read differently, if one is
    author.single                        # the one Mailbox when there is exactly one
    author.domains                       # every author domain (A-labels, lower case), in order
    parse_mailboxes(value)               # one field's value -> [Mailbox]; AuthorError when it does not parse

Pure: no I/O, no globals beyond constants.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace

MAX_FIELD = 16384
"""Characters of one From field that are parsed; a longer field does not parse."""
MAX_MAILBOXES = 100
_ATEXT_SPECIAL = frozenset("!#$%&'*+-/=?^_`{|}~")
_SPECIALS = frozenset('()<>[]:;@\\,."')
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_SEPARATORS = re.compile(r"[\s<>()\[\]\",;:\\]+")
_DOMAIN_START = re.compile(r"[\w-]+(?:\.[\w-]+)*")


class AuthorError(ValueError):
    """A From field that does not follow the RFC 5322 grammar (the message says where and why)."""


@dataclass(frozen=True)
class Mailbox:
    name: str
    """The display name as a client shows it (encoded words decoded); empty when there is none."""
    local: str
    """The local part, unquoted."""
    domain: str
    """The domain in lower case as written (a U-label when not ASCII), or ``[literal]``."""

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def dns_domain(self) -> str:
        """The domain as DNS knows it (A-labels); empty for an address literal."""
        return dns_name(self.domain)

    def display(self) -> str:
        """``Name <address>``, or the address alone."""
        return f"{self.name} <{self.address}>" if self.name else self.address


@dataclass(frozen=True)
class Author:
    """The From fields of one message."""

    fields: int = 0
    """How many From fields the header has."""
    mailboxes: tuple[Mailbox, ...] = ()
    """The mailboxes of every From field that parsed, in order."""
    errors: tuple[str, ...] = ()
    """Why each From field that did not parse did not."""
    recovered: tuple[str, ...] = ()
    """Addresses (lower case) a lenient reader finds in the fields that did not parse."""
    ambiguous: tuple[str, ...] = ()
    """Why a From field counted here is one that programs read differently (``from_fields``): some see it as
    a From field, some as none. Its mailboxes are among the author's all the same."""

    @property
    def problem(self) -> str | None:
        """None when there is exactly one From field with exactly one mailbox, read alike by every program;
        else why not (RFC 5322 3.6)."""
        if self.ambiguous:
            return f"ambiguous From field: {self.ambiguous[0]}"
        if self.fields == 0:
            return "no From field"
        if self.fields > 1:
            return f"{self.fields} From fields"
        if self.errors:
            return f"From does not parse: {self.errors[0]}"
        if not self.mailboxes:
            return "From names no mailbox"
        if len(self.mailboxes) > 1:
            return f"From names {len(self.mailboxes)} mailboxes"
        return None

    @property
    def single(self) -> Mailbox | None:
        return self.mailboxes[0] if self.problem is None else None

    @property
    def addresses(self) -> list[str]:
        """Every author address (parsed, then recovered), lower case, each once."""
        out: list[str] = []
        for address in [m.address.lower() for m in self.mailboxes] + list(self.recovered):
            if address not in out:
                out.append(address)
        return out

    @property
    def domains(self) -> list[str]:
        """Every author domain as DNS knows it (parsed mailboxes, then recovered addresses), each once;
        address literals and names that are not valid host names are left out."""
        out: list[str] = []
        for address in self.addresses:
            domain = dns_name(address.rpartition("@")[2])
            if domain and domain not in out:
                out.append(domain)
        return out

    def display(self) -> str:
        """What a client shows as the sender: the mailboxes, else the recovered addresses."""
        if self.mailboxes:
            return ", ".join(m.display() for m in self.mailboxes)
        return ", ".join(self.recovered)


def dns_name(domain: str) -> str:
    """A domain as lower-case A-labels; empty for an address literal or a name DNS cannot carry."""
    domain = domain.strip().lower()
    if not domain or domain.startswith("["):
        return ""
    try:
        ascii_name = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return ""
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        return ""
    return ascii_name


# --- RFC 2047 ------------------------------------------------------------------------------------


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, text = match.group(1), match.group(2).lower(), match.group(3)
    try:
        if encoding == "b":
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
        else:
            raw = re.sub(r"=([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)),
                         text.replace("_", " ")).encode("latin-1", "replace")
    except (binascii.Error, ValueError):
        return match.group(0)
    try:
        return raw.decode(charset, "replace")
    except (LookupError, ValueError, UnicodeError, TypeError):  # unknown or binary-only codecs: read as UTF-8
        return raw.decode("utf-8", "replace")


def decode_words(text: str) -> str:
    """Encoded words decoded; white space between two adjacent encoded words dropped (RFC 2047 6.2);
    control characters shown as spaces."""
    text = re.sub(r"(\?=)\s+(?==\?)", r"\1", text)
    decoded = _ENCODED_WORD.sub(_decode_word, text)
    return re.sub(r"[\x00-\x1f\x7f]", " ", decoded)


# --- the grammar ---------------------------------------------------------------------------------


def _atext(char: str) -> bool:
    return (char.isalnum() and char.isascii()) or char in _ATEXT_SPECIAL or (ord(char) > 0x7F and char.isprintable())


@dataclass
class _Word:
    kind: str
    """``atom``, ``quoted`` or ``dot``."""
    text: str
    space_before: bool = False


@dataclass
class _Parser:
    text: str
    pos: int = 0
    comments: list[str] = field(default_factory=list)

    def error(self, why: str) -> AuthorError:
        return AuthorError(f"{why} at character {self.pos + 1}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def cfws(self) -> bool:
        """Skip folding white space and comments; True when anything was skipped."""
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r\n":
                self.pos += 1
            elif char == "(":
                self.comment()
            else:
                break
        return self.pos > start

    def comment(self) -> None:
        depth = 0
        begin = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    self.comments.append(self.text[begin + 1:self.pos - 1])
                    return
            self.pos += 1
        self.pos = begin
        raise self.error("unterminated comment")

    def quoted(self) -> str:
        begin = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char in "\r\n":
                self.pos += 1
                continue
            out.append(char)
            self.pos += 1
        self.pos = begin
        raise self.error("unterminated quoted string")

    def atom(self) -> str:
        begin = self.pos
        while self.pos < len(self.text) and _atext(self.text[self.pos]):
            self.pos += 1
        return self.text[begin:self.pos]

    def words(self) -> list[_Word]:
        """Atoms, quoted strings and dots up to a special that ends them (``<``, ``:``, ``@``, ``,``, ``;``, ``>``)."""
        out: list[_Word] = []
        while True:
            space = self.cfws()
            char = self.peek()
            if char == '"':
                out.append(_Word("quoted", self.quoted(), space))
            elif char == ".":
                self.pos += 1
                out.append(_Word("dot", ".", space))
            elif char and _atext(char):
                out.append(_Word("atom", self.atom(), space))
            else:
                return out

    def domain(self) -> str:
        self.cfws()
        if self.peek() == "[":
            begin = self.pos
            end = self.text.find("]", self.pos)
            if end < 0:
                raise self.error("unterminated domain literal")
            inner = self.text[begin + 1:end]
            if any(c in "[\\" for c in inner):
                raise self.error("bad domain literal")
            self.pos = end + 1
            self.cfws()
            return "[" + re.sub(r"\s+", "", inner) + "]"
        labels = [self.atom()]
        while True:
            self.cfws()
            if self.peek() != ".":
                break
            self.pos += 1
            self.cfws()
            labels.append(self.atom())
        if not all(labels):
            raise self.error("empty domain label")
        domain = ".".join(labels).lower()
        if not dns_name(domain):
            raise self.error(f"{domain!r} is not a host name")
        return domain

    def addr_spec(self, local_words: list[_Word]) -> tuple[str, str]:
        """``local-part "@" domain``; ``local_words`` already read, the ``@`` next."""
        if not local_words:
            raise self.error("empty local part")
        expect_word = True
        parts: list[str] = []
        for word in local_words:
            if (word.kind == "dot") == expect_word:
                raise self.error("bad local part")
            parts.append(word.text)
            expect_word = not expect_word
        if expect_word:
            raise self.error("local part ends with a dot")
        self.pos += 1  # "@"
        return "".join(parts), self.domain()

    def angle_addr(self) -> tuple[str, str]:
        self.pos += 1  # "<"
        self.cfws()
        if self.peek() == "@":  # obs-route: "@a,@b:" before the addr-spec
            while self.peek() in ("@", ","):
                if self.peek() == "@":
                    self.pos += 1
                    self.domain()
                else:
                    self.pos += 1
                self.cfws()
            if self.peek() != ":":
                raise self.error("bad route")
            self.pos += 1
        words = self.words()
        if self.peek() != "@":
            raise self.error("angle brackets hold no address")
        local, domain = self.addr_spec(words)
        self.cfws()
        if self.peek() != ">":
            raise self.error("expected '>'")
        self.pos += 1
        return local, domain

    def mailbox_or_group(self, out: list[Mailbox], in_group: bool) -> None:
        words = self.words()
        char = self.peek()
        if char == "<":
            name = _phrase(words, self) if words else ""
            local, domain = self.angle_addr()
            out.append(Mailbox(name, local, domain))
        elif char == "@":
            mark = len(self.comments)
            local, domain = self.addr_spec(words)
            self.cfws()
            # ``user@domain (Full Name)``: clients show the comment as the name (RFC 822's habit)
            name = " ".join(decode_words(c) for c in self.comments[mark:])
            out.append(Mailbox(re.sub(r"\s+", " ", re.sub(r"\\(.)", r"\1", name)).strip(), local, domain))
        elif char == ":" and not in_group:
            if not words:
                raise self.error("group without a name")
            _phrase(words, self)
            self.pos += 1
            self.mailbox_list(out, in_group=True)
            if self.peek() != ";":
                raise self.error("group not closed by ';'")
            self.pos += 1
        elif words:
            raise self.error("a name without an address")
        else:
            raise self.error(f"unexpected {char!r}" if char else "nothing where an address belongs")
        self.cfws()

    def mailbox_list(self, out: list[Mailbox], *, in_group: bool = False) -> None:
        """``mailbox-list`` / ``address-list`` (obs: empty elements allowed); stops at ``;`` in a group."""
        while True:
            self.cfws()
            char = self.peek()
            if not char or (in_group and char == ";"):
                return
            if char == ",":
                self.pos += 1
                continue
            self.mailbox_or_group(out, in_group)
            if len(out) > MAX_MAILBOXES:
                raise self.error(f"more than {MAX_MAILBOXES} mailboxes")
            char = self.peek()
            if char == ",":
                self.pos += 1
            elif not char or (in_group and char == ";"):
                return
            else:
                raise self.error(f"unexpected {char!r} after an address")


def _phrase(words: list[_Word], parser: _Parser) -> str:
    """A display name (phrase / obs-phrase: it may not begin with a dot) as a client shows it: the words
    joined as written, then encoded words decoded, so that one holding a dot (``=?utf-8?q?ceo=40bank.test?=``,
    three words to the grammar) decodes as clients decode it."""
    if words[0].kind == "dot":
        raise parser.error("display name begins with a dot")
    pieces: list[str] = []
    for index, word in enumerate(words):
        if index and word.space_before:
            pieces.append(" ")
        pieces.append(word.text)
    return re.sub(r"\s+", " ", decode_words("".join(pieces))).strip()


def unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def parse_mailboxes(value: str | bytes) -> list[Mailbox]:
    """The mailboxes of one From field's value (groups flattened); AuthorError when it does not parse
    (an empty list when it names none, as an empty group does)."""
    text = _text(value)
    if len(text) > MAX_FIELD:
        raise AuthorError(f"longer than {MAX_FIELD} characters")
    if any(c in text for c in "\x00\r\n"):
        raise AuthorError("control characters in the field")
    parser = _Parser(text)
    out: list[Mailbox] = []
    parser.mailbox_list(out)
    return out


def recover(value: str | bytes) -> list[str]:
    """Every ``local@domain`` a lenient reader could show from a field (encoded words decoded, comments
    and quotes read as text), lower case, each once. Linear in the field's length."""
    text = decode_words(unfold(_text(value))[:MAX_FIELD])
    out: list[str] = []
    for token in _SEPARATORS.split(text):
        parts = token.split("@")
        for index in range(1, len(parts)):
            domain = _DOMAIN_START.match(parts[index])
            # quotes around an address are not part of it; a local part of quotes alone still shows its domain
            local = parts[index - 1].strip(".'") or parts[index - 1].strip()
            if not local or domain is None:
                continue
            address = f"{local}@{domain.group(0).strip('.-')}".lower()
            if not address.endswith("@") and address not in out:
                out.append(address)
    return out


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return unfold(value).strip(" \t\r\n")


FOLDED_NAME = "the name From is folded before its colon"
LEADING_WHITE_SPACE = "the header's first line, a From field, begins with white space"


def from_fields(data: bytes) -> list[tuple[bytes, str]]:
    """The raw value of every From field in the header (``From :`` too, RFC 5322 4.5.1), in order, continuation
    lines included, each with why programs read it differently ("" when they do not).

    Two shapes are From fields to some readers and to others not fields at all, and both count here: a name
    folded before its colon (``From`` CRLF `` : <a@b>``: a From field once unfolded, RFC 5322 2.2.3) and a
    first header line that begins with white space (``From: <a@b>`` behind a space: the continuation of no
    field). A reader that ignores one may show the other From, or the Sender."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    if head.startswith(b"\r\n"):
        return []
    groups: list[list[bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and groups:
            groups[-1].append(line)
        else:
            groups.append([line])
    found: list[tuple[bytes, str]] = []
    for lines in groups:
        first, tail, why = lines[0], lines[1:], ""
        if first[:1] in (b" ", b"\t"):  # only the first group can begin with white space
            first, why = first.lstrip(b" \t"), LEADING_WHITE_SPACE
        elif b":" not in first and tail:
            first, tail, why = re.sub(rb"\r?\n(?=[ \t])", b"", b"\n".join(lines)), [], FOLDED_NAME
        name, colon, rest = first.partition(b":")
        if colon and name.rstrip(b" \t").lower() == b"from":
            found.append((b"\n".join([rest, *tail]).rstrip(b"\r"), why))
    return found


def from_values(data: bytes) -> list[bytes]:
    """The raw values of every From field in the header (``from_fields``), in order, continuation lines
    included."""
    return [value for value, _ in from_fields(data)]


def read_author(data: bytes) -> Author:
    """The author of a message: its From fields parsed. Never raises."""
    try:
        found = from_fields(data)
    except Exception as exc:  # a defect must not decide who the message is from; the header reads as unparseable
        return Author(fields=1, errors=(f"internal error: {type(exc).__name__}",))
    author = author_of([value for value, _ in found])
    ambiguous = tuple(why for _, why in found if why)
    return replace(author, ambiguous=ambiguous) if ambiguous else author


def author_of(values: list[bytes] | list[str]) -> Author:
    """The author from the values of the From fields (as ``read_author``, for callers holding the fields)."""
    mailboxes: list[Mailbox] = []
    errors: list[str] = []
    recovered: list[str] = []
    for value in values:
        try:
            mailboxes += parse_mailboxes(value)
        except AuthorError as exc:
            errors.append(str(exc))
            recovered += [a for a in recover(value) if a not in recovered]
        except Exception as exc:  # never raise: a parser defect reads as a field that does not parse
            errors.append(f"internal error: {type(exc).__name__}")
            try:
                recovered += [a for a in recover(value) if a not in recovered]
            except Exception:  # the lenient reading failed too: nothing recovered
                pass
    return Author(len(values), tuple(mailboxes), tuple(errors), tuple(recovered))


__all__ = ["FOLDED_NAME", "LEADING_WHITE_SPACE", "Author", "AuthorError", "Mailbox", "author_of", "decode_words",
           "dns_name", "from_fields", "from_values",
           "parse_mailboxes", "read_author", "recover"]
