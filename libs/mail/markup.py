"""HTML read as text (pure), in one pass whatever the markup holds.

``visible_text`` gives the text a reader sees: tags dropped, the content of ``script``, ``style``, ``title``,
``template`` and the like left out, entities decoded, block elements and ``<br>`` as line breaks. Each character is
read a bounded number of times: the library's ``HTMLParser`` reads the rest of the document again for every
unfinished construct (``<![CDATA[``, ``</``, ``<?``, ``<!--``), so 80,000 of them took minutes. Tags end where a
browser ends them, ``>`` inside a quoted attribute value included, so that no markup makes text the reader sees look
like the inside of a tag or a script here. A document a browser reads differently errs towards more text read, never
less: a quoted value left open ends at the next ``>`` here (a browser would hide the rest). ``noscript`` is read:
mail is shown without scripts, so its content is what the reader sees. ``nesting`` is how deep elements nest.
"""

from __future__ import annotations

import html
import re
from functools import cache

_RAW_HIDDEN = frozenset({"script", "style", "title", "iframe", "noembed", "noframes"})
"""Elements whose content is text, not markup, and not shown."""
_RAW_SHOWN = frozenset({"textarea", "xmp"})
"""Elements whose content is text, not markup, and shown."""
_RAW = _RAW_HIDDEN | _RAW_SHOWN
_NESTED_HIDDEN = frozenset({"template"})
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "form", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td",
    "th", "tr", "ul",
})

_ELEMENT_TAG = re.compile(
    r"<(/?)([A-Za-z][^\t\n\f\r />]*+)"
    # Attributes: anything but '>', and after '=' a quoted value, which may hold '>'. Possessive: read once.
    r"""(?:[^>=]++|=[\t\n\f\r ]*+"[^"]*+"|=[\t\n\f\r ]*+'[^']*+'|=)*+"""
    r"(>?)"
)
_TOKEN = re.compile(_ELEMENT_TAG.pattern + r"|<[!?/]")
"""An element's tag (as ``_ELEMENT_TAG``), else the start of anything else that is not text (``<!``, ``<?``,
``</`` and no letter), in one search."""
_SPECIAL = _RAW | _NESTED_HIDDEN | _BLOCKS
"""Elements whose tag does more than end the text before it."""
_COMMENT_END = re.compile(r"--!?>")


@cache
def _end_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}(?=[\t\n\f\r />])", re.IGNORECASE)


def visible_text(markup: str) -> str:
    """The visible text of an HTML document or fragment (never raises for what the markup holds); see
    the module's docstring."""
    out: list[str] = []
    hidden = 0
    pos = 0
    while (found := _TOKEN.search(markup, pos)) is not None:
        start = found.start()
        if not hidden:
            out.append(markup[pos:start])
        closing, name, ended = found.groups()
        if name is None:  # a comment, declaration, processing instruction or bogus comment
            pos = _other_end(markup, start)
            if pos is None:  # never ended: the rest belongs to it
                return _text(out)
            continue
        if not ended:  # a tag never closed takes the rest
            return _text(out)
        pos = found.end()
        name = name.lower()
        if name not in _SPECIAL:
            continue
        if name in _NESTED_HIDDEN:
            hidden = max(0, hidden - 1) if closing else hidden + 1
        elif name in _BLOCKS:
            out.append("\n")
        if not closing and name in _RAW:
            close = _end_tag(name).search(markup, pos)
            content_end = len(markup) if close is None else close.start()
            if name in _RAW_SHOWN and not hidden:
                out.append(markup[pos:content_end])
            pos = content_end
    if not hidden:
        out.append(markup[pos:])
    return _text(out)


def _other_end(markup: str, start: int) -> int | None:
    """Where a comment, declaration, processing instruction or bogus comment at ``start`` ends (None: it runs
    to the end of the markup), as a browser ends it."""
    if markup.startswith("<!--", start):
        if markup.startswith(">", start + 4):  # <!--> and <!---> are whole comments
            return start + 5
        if markup.startswith("->", start + 4):
            return start + 6
        close = _COMMENT_END.search(markup, start + 4)
        return None if close is None else close.end()
    if markup.startswith("</>", start):
        return start + 3
    close = markup.find(">", start)
    return None if close == -1 else close + 1


def _text(parts: list[str]) -> str:
    text = html.unescape("".join(parts)).replace("\xa0", " ")
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


_OPTIONAL_END = frozenset({
    "p", "li", "dt", "dd", "td", "th", "tr", "tbody", "thead", "tfoot", "colgroup", "option", "optgroup", "rb",
    "rt", "rp", "rtc", "caption",
})
"""Elements whose end tag may be left out (a parser closes them itself): not counted by ``nesting``."""
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
})


def nesting(markup: str) -> int:
    """About how deep elements nest at the deepest: start tags less end tags, elements with no end tag or an
    optional one left out (a guide to what a tree builder will face, read in one pass)."""
    depth = deepest = 0
    for tag in _ELEMENT_TAG.finditer(markup):
        name = tag.group(2).lower()
        if name in _VOID or name in _OPTIONAL_END or not tag.group(3):
            continue
        if tag.group(1):
            depth = max(0, depth - 1)
        elif not markup.endswith("/>", 0, tag.end()):
            depth += 1
            deepest = max(deepest, depth)
    return deepest
