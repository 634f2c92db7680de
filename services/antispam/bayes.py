"""A naive Bayes classifier with Robinson's token probabilities and Fisher's chi-square combining
(as SpamBayes), its token counts in Redis.

``tokens`` and ``spam_probability`` are pure; ``BayesStore`` holds the counts: ``<prefix>:spam`` and
``<prefix>:ham`` hashes (token → messages that held it), ``<prefix>:count`` (messages learned of
each class), ``<prefix>:seen`` (digests of learned messages, so a message is learned once) and
``<prefix>:calibration`` and ``<prefix>:reinforced`` (the spam cutoff ``mailmoat train calibrate`` chose,
and the digests of the messages it counted a second time, ``calibrate.py``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailmoat_antispam.content import Content, html_to_text, url_host

MAX_TOKENS = 3000
"""Distinct tokens kept per message."""
MAX_DISCRIMINATORS = 150
STRENGTH = 0.45
"""Robinson's s: weight of the unknown-word probability x."""
UNKNOWN = 0.5
MIN_DISTANCE = 0.1
"""Tokens whose probability is closer than this to 0.5 are not counted."""

_WORD = re.compile(r"[^\W_][\w'$.-]*[^\W_]|\w", re.UNICODE)
_VALUE_WORDS = frozenset({"content-type", "x-mailer", "user-agent", "mime-version", "content-transfer-encoding",
                          "x-priority", "x-msmail-priority", "organization", "reply-to", "x-mimeole", "importance"})
"""Header fields whose value words are tokens: what the author's software and the author wrote. The fields a
mailing list or a receiving system adds (``List-*``, ``Precedence``, ``Sender``, ``Errors-To``, ``Received``,
``Delivered-To``, the envelope's ``Return-Path``) and the recipient's ``To`` are not: they tell which path a
message took to this mailbox, and spam sent through a list takes the path of the list's ham."""
_ADDRESS = re.compile(r"(?<=[\w.+-])@([\w-]+(?:\.[\w-]+)+)")
"""The domain of each address in a field (an ``@`` after a local-part character). The local part is not
matched: searched, a pattern of it before the ``@`` backtracks quadratically on a long run of word characters."""
_MARKUP = re.compile(r"(?i)<(?:html|body|font|table|div|p|br|a|img|center|span|td)\b")
_LIST_URL = re.compile(r"(?i)https?://\S*(?:listinfo|mailman|/lists?/)\S*")
_SEPARATOR = re.compile(r"(?m)^(?:-- ?|_{10,}|-{10,})[ \t]*\r?$")
FOOTER_TAIL = 1500
"""Characters at the end of the text searched for a mailing list's footer."""
FOOTER_SPAN = 500
"""How far before the list's URL a separator line may start the footer (a sponsor block and the list's lines)."""


def strip_list_footer(text: str) -> str:
    """The text without a mailing list's footer: from the first separator line (``-- ``, a row of ``_`` or
    ``-``) at most ``FOOTER_SPAN`` characters before the list's subscription URL near the end, or from the
    paragraph holding that URL. A list adds the same footer to its ham and to the spam it lets through."""
    tail = max(0, len(text) - FOOTER_TAIL)
    found = None
    for match in _LIST_URL.finditer(text, tail):
        found = match
    if found is None:
        return text
    at = found.start()
    separators = [m.start() for m in _SEPARATOR.finditer(text, max(0, at - FOOTER_SPAN), at)]
    if separators:
        return text[:separators[0]]
    paragraph = max(text.rfind("\n\n", 0, at), text.rfind("\n\r\n", 0, at))
    return text[:paragraph + 1] if paragraph >= 0 else text[:at]


def _words(text: str, prefix: str) -> Iterable[str]:
    for word in _WORD.findall(text):
        word = word.lower()
        if 3 <= len(word) <= 20:
            yield prefix + word
        elif len(word) > 20:
            yield f"{prefix}skip:{word[0]}{len(word) // 10 * 10}"


def _url_tokens(url: str) -> Iterable[str]:
    host = url_host(url)
    if not host:
        return
    parts = host.split(".")
    yield "url:" + ".".join(parts[-2:])
    yield "urlhost:" + host
    if host.replace(".", "").isdigit():
        yield "url:numeric-ip"


def tokens(content: Content) -> list[str]:
    """The distinct tokens of a message: subject, From, the author's header fields, URL hosts, body words (a
    mailing list's footer left out; single words, as SpamBayes: word pairs measured worse), content facts."""
    out: dict[str, None] = {}
    for token in _words(content.subject, "s:"):
        out.setdefault(token, None)
    for value in content.header("from"):
        for domain in _ADDRESS.findall(value):
            out.setdefault("from:" + domain.lower(), None)
        for token in _words(value, "f:"):
            out.setdefault(token, None)
    for name, value in content.headers:
        if name in _VALUE_WORDS:
            for token in _words(value, name[:4] + ":"):
                out.setdefault(token, None)
    for name in ("message-id", "reply-to"):
        value = content.first(name)
        if value:
            for domain in _ADDRESS.findall(value):
                out.setdefault(f"{name}-domain:{domain.lower()}", None)
    text = content.text[:200_000]
    if _MARKUP.search(text):
        text = html_to_text(text)  # HTML in a text/plain part, or a part without its type: words, not tags
    kept = strip_list_footer(text)
    footer = text[len(kept):]
    for url in content.urls:
        if footer and url in footer and url not in kept:
            continue
        for token in _url_tokens(url):
            out.setdefault(token, None)
    if content.html:
        out.setdefault("html:yes", None)
    _add_body_words(out, kept)
    return list(out)


def _add_body_words(out: dict[str, None], text: str) -> None:
    """``_words(text, "")`` added to ``out`` until it holds ``MAX_TOKENS``, the same tokens in the same order,
    found faster: a word never spans white space, so the text is read a white-space-separated piece at a time
    and a piece seen before is skipped (its words gave their tokens the first time), and so is a word seen
    before."""
    pieces: set[str] = set()
    seen: set[str] = set()
    full = len(out) >= MAX_TOKENS  # the header tokens filled it: one body word is still looked at, as before
    for piece in text.split():
        if piece in pieces:
            continue
        pieces.add(piece)
        for raw in _WORD.findall(piece):
            if raw in seen:
                continue
            seen.add(raw)
            word = raw.lower()
            size = len(word)
            if 3 <= size <= 20:
                token = word
            elif size > 20:
                token = f"skip:{word[0]}{size // 10 * 10}"
            else:
                continue
            if token not in out:
                out[token] = None
                if len(out) >= MAX_TOKENS:
                    return
            elif full:
                return


def chi2q(x2: float, dof: int) -> float:
    """Probability that chi-square with ``dof`` (even) degrees of freedom is at least ``x2``."""
    m = x2 / 2.0
    term = total = math.exp(-m)
    for i in range(1, dof // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def token_probability(spam_hits: int, ham_hits: int, nspam: int, nham: int) -> float:
    spam_ratio = spam_hits / max(nspam, 1)
    ham_ratio = ham_hits / max(nham, 1)
    if spam_ratio + ham_ratio == 0:
        return UNKNOWN
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam_hits + ham_hits
    return (STRENGTH * UNKNOWN + n * p) / (STRENGTH + n)


def spam_probability(counts: Iterable[tuple[int, int]], nspam: int, nham: int) -> float:
    """Fisher-combined spam probability (0..1) from each token's (spam, ham) counts."""
    probs = [token_probability(s, h, nspam, nham) for s, h in counts if s or h]
    probs = [p for p in probs if abs(p - 0.5) >= MIN_DISTANCE]
    probs.sort(key=lambda p: -abs(p - 0.5))
    probs = probs[:MAX_DISCRIMINATORS]
    if not probs:
        return 0.5
    n = len(probs)
    ln_spam = sum(math.log(max(1.0 - p, 1e-200)) for p in probs)
    ln_ham = sum(math.log(max(p, 1e-200)) for p in probs)
    s = 1.0 - chi2q(-2.0 * ln_spam, 2 * n)
    h = 1.0 - chi2q(-2.0 * ln_ham, 2 * n)
    return (s - h + 1.0) / 2.0


_CLASSIFY = """
local counts = redis.call('HMGET', KEYS[1], 'spam', 'ham')
local cutoff = redis.call('HGET', KEYS[4], 'cutoff')
local head = (counts[1] or '0') .. ':' .. (counts[2] or '0') .. ':' .. (cutoff or '')
if #ARGV == 0 then return head end
local spam = redis.call('HMGET', KEYS[2], unpack(ARGV))
local ham = redis.call('HMGET', KEYS[3], unpack(ARGV))
local out = {}
for i = 1, #ARGV do out[i] = (spam[i] or '0') .. ':' .. (ham[i] or '0') end
return head .. ' ' .. table.concat(out, ' ')
"""
"""Counts of the message classes and the calibrated cutoff (empty when none), then ``spam:ham`` per token,
space-separated."""


@dataclass(frozen=True)
class BayesResult:
    probability: float | None
    """None when not enough mail was learned yet."""
    nspam: int
    nham: int
    cutoff: float | None = None
    """The calibrated spam cutoff stored beside the counts (None when none was stored)."""


class BayesStore:
    """Token counts in Redis (``redisclient.Redis``, bytes or str responses)."""

    def __init__(self, redis, prefix: str = "mailmoat:bayes"):
        self.redis = redis
        self.prefix = prefix
        self._script = None

    async def counts(self) -> tuple[int, int]:
        values = await self.redis.hmget(f"{self.prefix}:count", "spam", "ham")
        return int(values[0] or 0), int(values[1] or 0)

    async def classify(self, toks: list[str], min_spam: int, min_ham: int) -> BayesResult:
        """One round trip (a Lua script): the message counts and every token's counts as one string,
        which is far cheaper for the client to read than 2 x N replies."""
        if self._script is None:
            self._script = self.redis.register_script(_CLASSIFY)
        keys = [f"{self.prefix}:count", f"{self.prefix}:spam", f"{self.prefix}:ham", f"{self.prefix}:calibration"]
        raw = await self._script(keys=keys, args=toks)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        head, _, rest = text.partition(" ")
        spam_count, ham_count, stored = head.split(":")
        nspam, nham, cutoff = int(spam_count), int(ham_count), float(stored) if stored else None
        if nspam < min_spam or nham < min_ham or not toks:
            return BayesResult(None, nspam, nham, cutoff)
        pairs = []
        for item in rest.split(" "):
            spam, _, ham = item.partition(":")
            pairs.append((int(spam), int(ham)))
        return BayesResult(spam_probability(pairs, nspam, nham), nspam, nham, cutoff)

    async def load_counts(self, spam: dict[str, int], ham: dict[str, int], nspam: int, nham: int,
                          chunk: int = 20_000) -> None:
        """Add counts learned elsewhere (token → messages that held it) in a few large writes: a
        corpus import or ``make accuracy``'s folds, without the per-message ``seen`` record."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for label, counts in (("spam", spam), ("ham", ham)):
                items = list(counts.items())
                for start in range(0, len(items), chunk):
                    for token, count in items[start:start + chunk]:
                        pipe.hincrby(f"{self.prefix}:{label}", token, count)
                    await pipe.execute()
            pipe.hincrby(f"{self.prefix}:count", "spam", nspam)
            pipe.hincrby(f"{self.prefix}:count", "ham", nham)
            await pipe.execute()

    async def learn(self, data: bytes, toks: list[str], label: str | None, record: str = "seen") -> bool:
        """Count a message's tokens as ``spam`` or ``ham``; False when it was learned before (as
        that class; learned as the other class it is moved). ``label`` None takes a learned message back.
        ``record``: the hash of digests that says what was learned (``seen``; ``reinforced`` for the second
        count ``mailmoat train calibrate`` gives a misjudged message)."""
        if label not in ("spam", "ham", None):
            raise ValueError(label)
        digest = hashlib.sha256(data).hexdigest()[:32]
        previous = await self.redis.hget(f"{self.prefix}:{record}", digest)
        if isinstance(previous, bytes):
            previous = previous.decode()
        if previous == label or (label is None and not previous):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            if previous:
                for token in toks:
                    pipe.hincrby(f"{self.prefix}:{previous}", token, -1)
                pipe.hincrby(f"{self.prefix}:count", previous, -1)
            if label is None:
                pipe.hdel(f"{self.prefix}:{record}", digest)
            else:
                for token in toks:
                    pipe.hincrby(f"{self.prefix}:{label}", token, 1)
                pipe.hincrby(f"{self.prefix}:count", label, 1)
                pipe.hset(f"{self.prefix}:{record}", digest, label)
            await pipe.execute()
        return True
