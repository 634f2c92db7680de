"""SMTP replies of the ingress, with RFC 3463 enhanced status codes."""

from __future__ import annotations

ACCESS_DENIED = "550 5.4.1 Recipient address rejected: Access denied"
RELAY_DENIED = "550 5.7.1 Relaying denied"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SIZE_EXCEEDED = "552 5.3.4 Message size exceeds fixed maximum message size"
BARE_NEWLINE = "550 5.5.2 Message contains bare CR or LF (RFC 5321 2.3.8)"
HEADER_TOO_BIG = "552 5.3.4 Message header size exceeds limit"
LINE_TOO_LONG = "554 5.6.0 Message line too long"
HOP_COUNT = "554 5.4.14 Hop count exceeded - possible mail loop"
TOO_MANY_SESSIONS = "421 4.3.2 Too many connections, try again later"
TOO_MANY_COMMANDS = "421 4.7.0 Too many commands"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
TEMPORARY = "451 4.3.0 Temporary internal error, try again later"
BAD_SIZE_PARAM = "501 5.5.4 Syntax error in SIZE parameter"
MAIL_OK = "250 2.1.0 Sender ok"
RCPT_OK = "250 2.1.5 Recipient ok"
OK = "250 2.0.0 Ok"
BYE = "221 2.0.0 Bye"


STARTTLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"


def no_certificate(connector: str) -> str:
    """A partner connector that requires a client certificate got none."""
    return f"550 5.7.51 Connector {connector} requires a trusted client certificate; none was presented"


def wrong_certificate(connector: str, expected: str) -> str:
    """A partner connector's client certificate does not carry the name it requires."""
    return (f"550 5.7.51 Connector {connector} requires a client certificate for {expected}; "
            "the one presented does not match")


def queued(queue_id: str) -> str:
    return f"250 2.6.0 {queue_id} Queued mail for delivery"


def blocked_ip(ip: str) -> str:
    """The greeting refusal for a client on the IP block list."""
    return f"550 5.7.513 Service unavailable, client host [{ip}] blocked using the IP block list"


PROXY_REFUSED = "421 4.7.0 PROXY header not accepted from this address"
GREYLISTED = "451 4.7.1 Greylisted, please try again later"


def too_many_connections(ip: str) -> str:
    """Over the concurrent connection limit: the client is told and the connection closed."""
    return f"421 4.7.0 Too many connections from [{ip}], try again later"


def too_many(kind: str, ip: str) -> str:
    """Over the per-minute message or recipient limit (temporary, the client retries)."""
    return f"450 4.7.1 Too many {kind} from [{ip}], try again later"
