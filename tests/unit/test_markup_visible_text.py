"""HTML as visible text (DLP reads it): what a reader sees, read in one pass whatever the markup holds."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat_mail.markup import visible_text as html_to_text

CARD = "4111 1111 1111 1111"
BLOCKS = ("p", "div", "br", "td", "li", "hr")


class _Reference(HTMLParser):
    """The library's parser, for well-formed markup: text outside script, style, title and template."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style", "title", "template"):
            self.hidden += 1
        elif tag in BLOCKS:
            self.out.append("\n")

    def handle_startendtag(self, tag: str, attrs: object) -> None:
        if tag in BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "title", "template"):
            self.hidden -= 1
        elif tag in BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def reference(markup: str) -> str:
    parser = _Reference()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.out).replace("\xa0", " ")
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


WORDS = st.sampled_from(["card", CARD, "a&amp;b", "&lt;x&gt;", "&#52;111", "caf&eacute;", "x > y", "  ", "\n"])
VALUES = st.sampled_from(['"a>b"', "'c>d'", "plain", '"<script>"', "'\"'", '"\'"'])


@st.composite
def documents(draw: st.DrawFn, depth: int = 0) -> str:
    pieces = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "element", "void", "comment", "raw"] if depth < 4 else ["text"]))
        if kind == "text":
            pieces.append(draw(WORDS))
        elif kind == "element":
            name = draw(st.sampled_from(["p", "div", "b", "a", "td", "li", "span", "template"]))
            attrs = "".join(f" t{i}={draw(VALUES)}" for i in range(draw(st.integers(0, 2))))
            pieces.append(f"<{name}{attrs}>{draw(documents(depth + 1))}</{name}>")
        elif kind == "void":
            pieces.append(draw(st.sampled_from(["<br>", "<br/>", "<img src='a>b'>", "<hr title=\"x\">"])))
        elif kind == "comment":
            pieces.append(f"<!-- {draw(WORDS)} <p> -->")
        else:
            name = draw(st.sampled_from(["script", "style", "title"]))
            tag = " <p>" if name != "title" else ""  # the library reads tags in a title (a browser does not)
            pieces.append(f"<{name}>if (a < b && c > d) {{ x = '{CARD}'; }}{tag}</{name}>")
    return "".join(pieces)


@settings(max_examples=300, deadline=None)
@given(documents())
def test_well_formed_markup_reads_as_the_library_reads_it(markup: str) -> None:
    assert html_to_text(markup) == reference(markup)


@pytest.mark.parametrize(("markup", "text"), [
    (f'<a title="x><script>">{CARD}</a>', CARD),  # '>' and a tag name inside a quoted value: no script starts
    (f"<a title='a>b' href=\"c>d\">{CARD}</a>", CARD),
    (f'<a b"c>{CARD}', CARD),  # a quote in an attribute name opens nothing
    (f"<!-- hidden --!>{CARD}", CARD),  # a comment ends at --!> as at -->
    (f"<!-->{CARD}", CARD),  # and <!--> and <!---> are whole comments
    (f"<!--->{CARD}", CARD),
    (f"<![CDATA[x]]>{CARD}", CARD),  # CDATA in HTML is a bogus comment, up to the first ">"
    (f"<? pi ?>{CARD}", CARD),
    (f"</ x>{CARD}</>", CARD),
    (f"<noscript>{CARD}</noscript>", CARD),  # mail is shown without scripts
    (f"<head><meta charset=utf-8>{CARD}</head>", CARD),  # stray text in head is shown
    (f"<textarea><b>{CARD}</b></textarea>", f"<b>{CARD}</b>"),
    (f"<script>{CARD}</script >shown", "shown"),
    (f"<SCRIPT>{CARD}</Script>shown", "shown"),
    (f"<template><p>{CARD}</p></template>shown", "shown"),
    (f"<p>a</p><p>{CARD}</p>", f"a\n{CARD}"),
    ("a < b and c<d", "a < b and c"),  # "<d" starts a tag, and the end of the markup ends it unread
])
def test_what_a_reader_sees(markup: str, text: str) -> None:
    assert html_to_text(markup) == text


@pytest.mark.parametrize(("markup", "text"), [
    (f"{CARD}<!-- never closed", CARD),
    (f"{CARD}<script>never closed", CARD),
    (f"{CARD}<a title='never closed>", CARD),
    (f"{CARD}<a never closed", CARD),
    (f"{CARD}<!DOCTYPE never closed", CARD),
])
def test_a_construct_never_closed_takes_the_rest(markup: str, text: str) -> None:
    assert html_to_text(markup) == text


@pytest.mark.parametrize("unit", ["<![CDATA[", "</", "<?", "<!--", "<a ", '<a b="', "<", "<!", "&#x", "<script>",
                                  "<template>", "</a", "<a b='c'"])
def test_unfinished_constructs_repeated(unit: str) -> None:
    """Each of these, 100,000 times, made the library's parser read the rest of the markup again for each."""
    markup = CARD + " " + unit * 100_000
    assert html_to_text(markup).startswith(CARD)
