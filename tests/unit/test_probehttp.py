"""The services' /metrics, /healthz and /readyz server: request heads, answers, and a live connection
(keep-alive, HEAD, errors) over TCP."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat_platform.probehttp import BadRequest, ProbeServer, Request, answer, parse_head, response

ROUTES = {"/healthz": lambda: (200, "text/plain", b"ok\n"), "/readyz": lambda: (503, "text/plain", b"not ready\n")}


def test_a_head_parses_into_method_path_and_keep_alive() -> None:
    assert parse_head(b"GET /metrics?name=x HTTP/1.1\r\nHost: a") == Request("GET", "/metrics", True, 0)
    assert parse_head(b"GET /readyz HTTP/1.1\r\nConnection: close") == Request("GET", "/readyz", False, 0)
    assert parse_head(b"GET /readyz HTTP/1.0") == Request("GET", "/readyz", False, 0)
    assert parse_head(b"HEAD /readyz HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
    assert parse_head(b"GET http://h:9110/healthz HTTP/1.1").path == "/healthz"
    assert parse_head(b"POST /x HTTP/1.1\r\nContent-Length: 5").body_length == 5


@pytest.mark.parametrize("head", [
    b"GET /metrics", b"GET  /metrics HTTP/1.1", b"GET /metrics HTTP/2", b"GET /x HTTP/1.1\r\nno colon",
    b"GET /x HTTP/1.1\r\n Host: folded", b"GET /x HTTP/1.1\r\nContent-Length: -1",
    b"GET /x HTTP/1.1\r\nContent-Length: many", b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked",
])
def test_a_head_that_does_not_parse_is_a_bad_request(head: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(head)
    assert refused.value.status == 400


def test_answers_by_path_and_method() -> None:
    assert answer(Request("GET", "/healthz", True, 0), ROUTES) == (200, "text/plain", b"ok\n")
    assert answer(Request("HEAD", "/readyz", True, 0), ROUTES)[0] == 503
    assert answer(Request("GET", "/nope", True, 0), ROUTES)[0] == 404
    assert answer(Request("POST", "/healthz", True, 0), ROUTES)[0] == 405


def test_a_response_says_its_length_also_without_a_body() -> None:
    full = response(200, "text/plain", b"ok\n")
    assert full == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
    head = response(200, "text/plain", b"ok\n", head_only=True, close=True)
    assert head.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\n")
    assert b"Allow: GET, HEAD" in response(405, "text/plain", b"")


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return out


async def test_a_connection_serves_requests_until_it_asks_to_close() -> None:
    failing = {**ROUTES, "/boom": lambda: 1 / 0}
    server = ProbeServer(failing)
    await server.start("127.0.0.1", 0)
    try:
        assert server.port
        out = await _exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                           b"HEAD /readyz HTTP/1.1\r\n\r\n"
                                           b"GET /boom HTTP/1.1\r\n\r\n"
                                           b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
                                           b"GET /healthz HTTP/1.1\r\n\r\n")
        assert out.count(b"HTTP/1.1 ") == 4  # the last request came after the close
        assert out.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nHTTP" in out
        assert b"HTTP/1.1 500 Internal Server Error" in out
        assert out.endswith(b"Connection: close\r\n\r\nok\n")
        bad = await _exchange(server.port, b"GET /healthz\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in bad
        big = await _exchange(server.port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431 ")
        body = await _exchange(server.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 4\r\nConnection: close"
                                            b"\r\n\r\nabcd")
        assert body.startswith(b"HTTP/1.1 405 ")
    finally:
        await server.cleanup()


async def test_cleanup_closes_idle_connections() -> None:
    server = ProbeServer(ROUTES)
    await server.start("127.0.0.1", 0)
    assert server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"ok\n")
    await server.cleanup()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda method, target, version, rest: f"{method} {target} {version}\r\n".encode("latin-1", "replace")
              + rest, st.text(max_size=8), st.text(max_size=30),
              st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", ""]), st.binary(max_size=200)),
))
def test_any_head_is_answered_or_refused_with_a_status(head: bytes) -> None:
    """Whatever reaches the port: a request that gets an answer, or BadRequest (400), never another error."""
    try:
        request = parse_head(head)
    except BadRequest as exc:
        assert exc.status == 400
        return
    status, content_type, body = answer(request, ROUTES)
    assert response(status, content_type, body, head_only=request.method == "HEAD").startswith(b"HTTP/1.1 ")
