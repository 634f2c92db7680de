"""Raw header operations: X-Mailmoat-* removal byte-exact, Message-ID extraction, Received header."""

from __future__ import annotations

from datetime import UTC, datetime

from mailmoat_ingress.headers import count_headers, header_block, message_id, strip_gateway_headers
from mailmoat_ingress.received import build_received, clean, protocol
from mailmoat_platform.models import TlsInfo


def test_header_block() -> None:
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == b"A: 1\r\nB: 2\r\n"
    assert header_block(b"\r\nbody\r\n") == b""
    assert header_block(b"A: 1\r\n") == b"A: 1\r\n"


def test_strip_gateway_headers_keeps_every_other_byte() -> None:
    data = (
        b"X-Mailmoat-Antispam-Report: SCL:-1;\r\n\tfolded part\r\n"
        b"Subject:  odd   spacing \r\n"
        b"x-mailmoat-verdict: clean\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n"
        b"X-MAILMOAT-ID: 1\r\n"
        b"\r\n"
        b"X-Mailmoat-In-Body: stays\r\n"
    )
    assert strip_gateway_headers(data) == (
        b"Subject:  odd   spacing \r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n"
        b"\r\n"
        b"X-Mailmoat-In-Body: stays\r\n"
    )


def test_strip_is_identity_without_gateway_headers() -> None:
    data = b"X-Mailmoatish: no\r\nSubject: x\r\n\r\nX-Mailmoat-Foo: body\r\n"
    assert strip_gateway_headers(data) is data or strip_gateway_headers(data) == data
    assert strip_gateway_headers(b"X-Mailmoatish: no\r\n\r\n") == b"X-Mailmoatish: no\r\n\r\n"


def test_strip_headers_only_message() -> None:
    assert strip_gateway_headers(b"X-Mailmoat-A: 1\r\nSubject: s\r\n") == b"Subject: s\r\n"


def test_message_id() -> None:
    assert message_id(b"Subject: a\r\nMessage-ID: <abc@x.org>\r\n\r\n") == "<abc@x.org>"
    assert message_id(b"message-id:\r\n <folded@x.org>\r\n\r\n") == "<folded@x.org>"
    assert message_id(b"Subject: a\r\n\r\nMessage-ID: <in-body@x>\r\n") is None
    assert message_id(b"X-Message-ID: <no@x>\r\n\r\n") is None
    assert message_id(b"Message-ID:\r\n\r\n") is None


def test_count_headers() -> None:
    block = b"Received: a\r\nX-Received: b\r\nreceived: c\r\n"
    assert count_headers(block, b"received") == 2


AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_received_header_clear_text() -> None:
    header = build_received(
        helo="mx.sender.org", client_hostname=None, client_ip="198.51.100.7", by_host="gw.example.com",
        queue_id="Q1", recipients=["bob@example.com"], at=AT,
    )
    assert header == (
        b"Received: from mx.sender.org (unknown [198.51.100.7])\r\n"
        b"\tby gw.example.com (mailmoat) with ESMTP id Q1\r\n"
        b"\tfor <bob@example.com>; Thu, 02 Jan 2025 03:04:05 +0000\r\n"
    )


def test_received_header_tls_and_several_recipients() -> None:
    header = build_received(
        helo="[198.51.100.7]", client_hostname="mx.sender.org", client_ip="198.51.100.7",
        by_host="gw.example.com", queue_id="Q2", recipients=["a@example.com", "b@example.com"], at=AT,
        tls=TlsInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384"),
    )
    assert header == (
        b"Received: from [198.51.100.7] (mx.sender.org [198.51.100.7])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\tby gw.example.com (mailmoat) with ESMTPS id Q2; Thu, 02 Jan 2025 03:04:05 +0000\r\n"
    )
    assert b"a@example.com" not in header


def test_received_helo_cannot_forge_syntax() -> None:
    header = build_received(
        helo="evil (by trusted.example.com)\r\nX-Injected: 1", client_hostname=None, client_ip="192.0.2.1",
        by_host="gw", queue_id="Q", recipients=[], at=AT, esmtp=False,
    )
    assert header.count(b"\r\n") == 2
    assert b"(by" not in header and b"X-Injected: 1\r\n" not in header
    assert b" with SMTP id Q" in header


def test_protocol_names() -> None:
    assert protocol(True, False, False) == "ESMTP"
    assert protocol(True, True, False) == "ESMTPS"
    assert protocol(False, False, False) == "SMTP"
    assert protocol(True, True, True) == "UTF8SMTPS"
    assert clean("") == "unknown"
