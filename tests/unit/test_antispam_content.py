"""The antispam stage's content view of hostile MIME: read, never raised on."""

from __future__ import annotations

import pytest

from mailmoat_antispam.content import parse
from tests.unit.test_antivirus_mime import FROGS
from tests.unit.test_mimeparts import nested


def test_raw_8bit_disposition_counts_as_an_attachment() -> None:
    content = parse(FROGS)
    assert (content.parts, content.attachments, content.text.strip()) == (2, 1, "hi")


def test_unknown_charset_text_is_read_as_utf8_or_latin1() -> None:
    raw = (b"Subject: =?x-unknown?q?caf=E9?=\r\nContent-Type: text/plain; charset=x-klingon\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nVisit http://caf\xe9.example/ now\r\n")
    content = parse(raw)
    assert "caf\u00e9" in content.text and content.urls


def test_deep_nesting_and_nuls_are_read() -> None:
    assert parse(nested(3000)).parts >= 1
    assert parse(nested(150)).parts in (0, 1)
    content = parse(b"Subject: a\x00b\r\nContent-Type: text/plain; charset=\"\x00\"\r\n\r\nnul \x00 body\r\n")
    assert "nul" in content.text


URL_PIECES = ["http://", "https://", "ftp://", "HTTP://", "hTtP\u017f://", "www.", "WWW.", "://", "wwww.", "a", " ",
              "\n", "<", ">", '"', "'", "=", "x.com", "/p", "&amp;", "\u00e9", "_", "\u017f", "K", "href", "HREF",
              "hReF", "src", "\u017frc", "action", "background", "bac\u212aground", '="', " = ", "<a ", "srcsrc",
              ":\\\\", ":/\\", ":\\/", "\\", ":/", "http:", "ftp:\\"]


def test_urls_and_html_attributes_are_found_where_the_patterns_alone_find_them() -> None:
    """``url_matches`` and ``href_matches`` try their pattern only where a match can start; they find what a
    scan of every position finds, in ASCII and in other text (case folding of K and long s included)."""
    import random

    from mailmoat_antispam.content import _HREF, _URL, href_matches, url_matches

    rng = random.Random(5)
    for _ in range(20000):
        text = "".join(rng.choice(URL_PIECES) for _ in range(rng.randint(0, 25)))
        assert url_matches(text) == _URL.findall(text), text
        assert [m.span() + m.groups() for m in href_matches(text)] == \
            [m.span() + m.groups() for m in _HREF.finditer(text)], text


def test_urls_of_a_newsletter() -> None:
    raw = (b"Content-Type: text/html\r\n\r\n<p>See www.Example.org/a, <a HREF='https://news.example.org/x?a=1&amp;b=2'>"
           b"this</a> and <img src=http://img.example.org/p.gif> or ftp://files.example.org/f.</p>\r\n")
    assert parse(raw).urls == ["https://news.example.org/x?a=1&b=2", "http://img.example.org/p.gif",
                               "http://www.Example.org/a", "ftp://files.example.org/f"]


def test_uri_block_list_names_take_addresses_as_ipaddress_does() -> None:
    import ipaddress
    import random

    from mailmoat_antispam.uribl import _address, lookup_names

    rng = random.Random(8)
    hosts = ["1.2.3.4", "::1", "fe80::1%eth0", "example.com", "1.2.3", "::ffff:1.2.3.4", "face::b00c", "%", ""]
    hosts += ["".join(rng.choice("0123456789abcdefxyz.:%-") for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    for host in hosts:
        try:
            expected: object = ipaddress.ip_address(host)
        except ValueError:
            expected = ValueError
        try:
            found: object = _address(host)
        except ValueError:
            found = ValueError
        assert found == expected, host
    urls = ["http://192.0.2.7/x", "http://[2001:db8::1]/", "https://news.example.co.uk/a", "http://cafe.bad/"]
    assert lookup_names(urls, 10) == ["7.2.0.192", "example.co.uk", "cafe.bad"]


def _html(markup: bytes) -> bytes:
    return b"From: a@sender.test\r\nSubject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + markup + b"\r\n"


def test_html_is_read_as_a_reader_sees_it() -> None:
    """Scoring and the classifier read the text a mail reader shows: no words from comments, the title or
    scripts (hidden words stuffed in to look like ham), every word after a comment a browser ends, and a
    word split by markup as the one word shown."""
    content = parse(_html(b"<html><head><title>invoice payroll</title></head><body>"
                          b"<!-- meeting > agenda notes -->buy <!-- x --!>cheap <b>pi</b><!-- -->lls"
                          b" <script>var budget = 1;</script><noscript>now</noscript><p>today</p></body></html>"))
    assert content.text.split() == ["buy", "cheap", "pills", "now", "today"]
    assert "<title>" in content.html  # the markup itself stays for the advanced checks


def _link_hosts(markup: str) -> list[str]:
    from mailmoat_antispam.content import url_host

    return [url_host(url) for url in parse(_html(markup.encode())).urls]


@pytest.mark.parametrize("href", ["http:\\\\phish.example/x", "http:/phish.example/", "http:phish.example/",
                                  "http:/\\phish.example/", "HTTPS:\\\\PHISH.EXAMPLE./", "ftp:\\phish.example/"])
def test_a_link_without_its_two_slashes_is_found(href: str) -> None:
    """A browser reads any mix of ``/`` and ``\\`` (or none) after an http, https or ftp scheme as ``//``."""
    assert _link_hosts(f'<a href="{href}">invoice</a>') == ["phish.example"]


@pytest.mark.parametrize("href", ["h&#9;ttp://phish.example/", "ht&#10;tp://phish.example/",
                                  "http&#13;:\\\\phish.example/", "&#1; http:phish.example/",
                                  "http:\\\\phish.example/&#31;&#32;", "//phish.example/", "\\\\phish.example/"])
def test_a_link_with_tabs_newlines_controls_or_no_scheme_is_found(href: str) -> None:
    """A browser removes every tab and newline and the C0 controls and spaces at either end; a scheme-relative
    link takes the page's scheme."""
    assert _link_hosts(f'<a href="{href}">invoice</a>') == ["phish.example"]


@pytest.mark.parametrize("host", ["0x7f.1", "2130706433", "0177.0.0.1", "127.1", "0x7F.0.0.0x1"])
def test_a_numeric_host_in_any_form_is_the_address_the_browser_goes_to(host: str) -> None:
    from mailmoat_antispam.asf import _numeric
    from mailmoat_antispam.uribl import lookup_names

    content = parse(_html(f'<a href="http://{host}/login">invoice</a>'.encode()))
    assert _link_hosts(f'<a href="http://{host}/login">invoice</a>') == ["127.0.0.1"]
    assert lookup_names(content.urls, 10) == ["1.0.0.127"]
    assert _numeric("127.0.0.1")


def test_a_backslash_ends_the_host_before_an_at_sign() -> None:
    """``phish.example\\@innocent.com``: the browser goes to phish.example (a backslash is a slash), not to the
    host after the ``@``."""
    hosts = _link_hosts('<a href="http://phish.example\\@innocent.com/">invoice</a>')
    assert "innocent.com" not in hosts and set(hosts) == {"phish.example"}


@pytest.mark.parametrize(("href", "host"), [("http://ph%69sh.example/", "phish.example"),
                                            ("http://PH%49SH.Example/", "phish.example"),
                                            ("http://B\u00fccher.example/", "xn--bcher-kva.example"),
                                            ("http://\uff50hish.example/", "phish.example"),
                                            ("http://innocent.com:x@ph%69sh.example./", "phish.example")])
def test_a_host_is_read_as_the_browser_reads_it(href: str, host: str) -> None:
    """Percent-escapes decoded, internationalised names as A-labels (as DNS block lists list them), full-width
    letters mapped, the user information before ``@`` left out."""
    assert _link_hosts(f'<a href="{href}">invoice</a>') == [host]


def test_text_urls_take_backslashes_but_not_prose() -> None:
    from mailmoat_antispam.content import extract_urls, url_host

    urls = extract_urls("go to http:\\\\phish.example\\x or http://0x7f.1/ now. Ratio 3:1, http: see, a//b, ftp:/x")
    assert [url_host(url) for url in urls] == ["phish.example", "127.0.0.1"]
