"""How many MIME entities a message holds, on arbitrary bytes: the count ingress reads off the bytes
(``entity_bound``) is never below what the parser builds, and the parser's limit flags exactly the
messages over it, with the tree cut after the limit."""

from __future__ import annotations

from email.message import Message

from mailmoat_mail import mimeparts

UNLIMITED = 10**9


def entities(node: Message) -> int:
    payload = node.get_payload() if node.is_multipart() else None
    children = payload if isinstance(payload, list) else []
    return 1 + sum(entities(child) for child in children if isinstance(child, Message))


def shape(node: Message) -> tuple:
    """The tree: each entity's fields, and its children or its payload as parsed."""
    payload = node.get_payload() if node.is_multipart() else node._payload
    inner = tuple(shape(c) for c in payload if isinstance(c, Message)) if isinstance(payload, list) else payload
    return tuple(node.items()), inner


def test_one_input(data: bytes) -> None:
    whole = mimeparts.parse(data, UNLIMITED)
    if mimeparts.too_deep(whole):
        return  # the parser gave up on the nesting: nothing was built to count
    count = entities(whole)
    assert not mimeparts.too_many(whole)
    bound = mimeparts.entity_bound(data)
    assert bound is None or bound >= count, (bound, count)
    limit = 1 + data[0] % 8 if data else 1
    cut = mimeparts.parse(data, limit)
    assert mimeparts.too_many(cut) == (count > limit), (count, limit)
    if count <= limit:
        assert shape(cut) == shape(whole)


def seeds() -> list[bytes]:
    from tests.support.hostile import cases

    return [case.data for case in cases() if len(case.data) < 200_000] + [
        b"Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nSubject: a\r\n\r\nx\r\n--b\r\n\r\n--b--\r\n",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r--b\n--b\r\n--b--",
        b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n\r\nC: d\r\n\r\n",
    ]
