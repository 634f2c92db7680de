"""SMTP-time decisions from the cached policy: recipients, MAIL FROM parameters, DATA content."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailmoat_ingress import replies
from mailmoat_ingress.headers import count_headers, header_block
from mailmoat_mail import mimeparts
from mailmoat_mail.addresses import AddressError, Path, mailbox, recipient_key, routing_trick
from mailmoat_policy import Limits, Policy


def check_client(policy: Policy, client_ip: str) -> str | None:
    """The greeting refusal for a client on the IP block list (not also on the allow list), or None."""
    if client_ip and policy.connection_filter.blocked(client_ip):
        return replies.blocked_ip(client_ip)
    return None


def check_recipient(policy: Policy, client_ip: str, address: str, accepted_so_far: int) -> str | None:
    """The refusal reply for one RCPT TO, or None to accept it.

    Accepted domains take mail from anyone (unless directory-based edge blocking refuses an
    unknown address); other domains only from the organisation's own servers (no open relay).
    """
    if accepted_so_far >= policy.limits.max_recipients:
        return replies.TOO_MANY_RECIPIENTS
    local, _, domain = address.rpartition("@")
    entry = policy.accepted_domain(domain) if domain else None
    if entry is not None:
        if local.lower() == "postmaster":  # RFC 5321 4.5.1: always accepted
            return None
        if entry.dbeb and entry.type == "authoritative" and not policy.in_directory(address):
            return replies.ACCESS_DENIED
        return None
    if policy.is_internal(client_ip):
        return None
    return replies.RELAY_DENIED


@dataclass(frozen=True)
class MailParams:
    """The MAIL FROM parameters ingress cares about."""

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False


def parse_mail_options(options: list[str]) -> MailParams | None:
    """Parse ``SIZE=``, ``BODY=`` and ``SMTPUTF8`` from MAIL FROM options; None when SIZE is malformed."""
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    for option in options:
        key, _, value = option.partition("=")
        key = key.upper()
        if key == "SIZE":
            if not value.isdigit():
                return None
            size = int(value)
        elif key == "BODY":
            body = value.upper()
        elif key == "SMTPUTF8":
            smtputf8 = True
    return MailParams(size=size, body=body, smtputf8=smtputf8)


def mail_parameters(params: dict[str, str | None]) -> MailParams | str:
    """The MAIL FROM parameters this server offers (SIZE, BODY, SMTPUTF8), or the refusal for one it
    does not: a malformed known parameter ``501 5.5.4``, an unknown one ``555 5.5.4``."""
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isascii() or not value.isdigit():
                return replies.BAD_SIZE_PARAM
            size = int(value)
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return "501 5.5.4 Syntax error in BODY parameter (7BIT or 8BITMIME)"
            body = value.upper()
        elif key == "SMTPUTF8":
            if value is not None:
                return "501 5.5.4 Syntax error: SMTPUTF8 takes no value"
            smtputf8 = True
        else:
            return replies.bad_parameters("MAIL FROM", f"{key} is not offered")
    return MailParams(size=size, body=body, smtputf8=smtputf8)


def rcpt_parameters(params: dict[str, str | None]) -> str | None:
    """RCPT TO parameters: none is offered (no DSN extension), so any is refused ``555 5.5.4``."""
    if params:
        return replies.bad_parameters("RCPT TO", f"{next(iter(params))} is not offered")
    return None


def postmaster_address(policy: Policy) -> str | None:
    """Where ``RCPT TO:<Postmaster>`` goes (RFC 5321 4.5.1): postmaster at the first accepted domain."""
    if not policy.accepted_domains:
        return None
    return f"postmaster@{policy.accepted_domains[0].domain}"


def resolve_recipient(policy: Policy, client_ip: str, found: Path) -> tuple[str | None, str]:
    """(the refusal or None, the address to deliver to) for a parsed forward path.

    ``<Postmaster>`` becomes ``postmaster_address``. Sender-specified routing (a source route, ``%``,
    ``!``, ``@`` in a quoted local part) from a client outside the organisation's networks is a relay
    attempt whatever the domain; from the organisation's own servers a source route is ignored as
    RFC 5321 says, the rest delivered as written.
    """
    if found.postmaster:
        address = postmaster_address(policy)
        return (replies.NO_POSTMASTER, "Postmaster") if address is None else (None, address)
    assert found.mailbox is not None
    address = found.mailbox.address
    if not policy.is_internal(client_ip):
        trick = routing_trick(found)
        if trick is not None:
            return replies.routing_denied(trick), address
    return None, address


def same_recipient_key(policy: Policy, address: str) -> str:
    """Two recipients with one key are one mailbox: local part without case for accepted domains."""
    try:
        found = mailbox(address)
    except AddressError:  # not from a client (a postmaster address made of a policy domain, say)
        return address.lower()
    return recipient_key(found, fold_local=policy.accepted_domain(found.domain) is not None)


def check_mail_size(size: int | None, limits: Limits) -> str | None:
    """Refuse at MAIL FROM a message declared larger than the limit (RFC 1870)."""
    if size is not None and size > limits.max_message_size:
        return replies.SIZE_EXCEEDED
    return None


def has_bare_newline(data: bytes) -> bool:
    """True when a CR or LF is not part of a CRLF pair."""
    pairs = data.count(b"\r\n")
    return data.count(b"\n") != pairs or data.count(b"\r") != pairs


def longest_line(data: bytes) -> int:
    """Length in octets of the longest CRLF-terminated line, without the CRLF."""
    return max(map(len, data.split(b"\r\n")), default=0)


def check_content(data: bytes, limits: Limits) -> str | None:
    """The refusal reply for the DATA of a message, or None when it may be accepted."""
    if len(data) > limits.max_message_size:
        return replies.SIZE_EXCEEDED
    if has_bare_newline(data):
        return replies.BARE_NEWLINE
    block = header_block(data)
    if len(block) > limits.max_header_size:
        return replies.HEADER_TOO_BIG
    if longest_line(data) > limits.max_line_length:
        return replies.LINE_TOO_LONG
    if count_headers(block, b"received") > limits.max_received_headers:
        return replies.HOP_COUNT
    return None


async def check_parts(data: bytes, limits: Limits) -> str | None:
    """Refuse a message of more MIME entities than ``limits.max_mime_parts``. Counting its delimiter lines
    settles it for nearly all mail; else the parser counts, in a worker thread (it reads no further than the
    limit), so that a message of thousands of tiny parts is refused here, not parsed whole by every stage."""
    limit = limits.max_mime_parts
    bound = mimeparts.entity_bound(data)
    if bound is not None and bound <= limit:
        return None
    parsed = await asyncio.to_thread(mimeparts.parse, data, limit)
    return replies.too_many_parts(limit) if mimeparts.too_many(parsed) else None
