"""The console's view of a held message on arbitrary bytes: it always renders, and the HTML it gives a
page runs and fetches nothing (no script, event handler, style, embedded content or image)."""

from __future__ import annotations

from html.parser import HTMLParser

from mailmoat_console.safemail import render

FORBIDDEN = ("<script", "<style", "<iframe", "<img", "<object", "<embed", "<form", "javascript:")
"""Never in the HTML, text included (the sanitiser escapes a '<' of text)."""


def test_one_input(data: bytes) -> None:
    safe = render(data)
    html = safe.html.lower()
    for bad in FORBIDDEN:
        assert bad not in html, (bad, html[:200])
    # Inside tags only: text may say 'style="..."' or 'onclick' (its '<' and '>' escaped).
    assert not any(attr.startswith("on") or attr == "style" for attr in _attributes(html)), html[:200]
    for text in (safe.subject, safe.text, safe.html, *(a.filename for a in safe.attachments)):
        text.encode("utf-8")  # no lone surrogates: the page is UTF-8


class _Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.names: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names += [name for name, _ in attrs]


def _attributes(html: str) -> list[str]:
    """Attribute names inside tags, as a browser's parser reads them (the sanitiser's output is well formed;
    a word of a quoted value, 'set alarms, style your clock', is no attribute)."""
    parser = _Attributes()
    parser.feed(html)
    parser.close()
    return parser.names


def seeds() -> list[bytes]:
    from tests.support.hostile import cases

    return [case.data for case in cases()] + [
        b"Content-Type: text/html\r\n\r\n<p onclick=x>a</p><script>b</script><img src=x>",
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-7\r\n\r\n"
        b"+ADw-script+AD4-\r\n--b--\r\n",
    ]
