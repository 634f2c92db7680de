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

# --- envelope syntax (RFC 5321 4.1.2, RFC 6531; mailmoat_mail.addresses) ---
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address> [SP <mail-parameters>]"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address> [SP <rcpt-parameters>]"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
NO_POSTMASTER = "550 5.1.1 Recipient address rejected: no postmaster address is configured"


def too_many_parts(limit: int) -> str:
    """A message of more MIME entities than ``limits.max_mime_parts``."""
    return f"554 5.6.0 Message has more than {limit} MIME parts"


def bad_hello(command: str, problem: str) -> str:
    """A HELO/EHLO argument that is not UTF-8 or holds control characters."""
    return f"501 5.5.2 Syntax error: the {command} argument is {problem}"


def bad_sender(reason: str) -> str:
    return f"501 5.1.7 Bad sender address syntax: {reason[:120]}"


def bad_recipient(reason: str) -> str:
    return f"501 5.1.3 Bad recipient address syntax: {reason[:120]}"


def needs_smtputf8(what: str) -> str:
    """A non-ASCII address without the SMTPUTF8 parameter (RFC 6531 3.5)."""
    return f"553 5.6.7 Non-ASCII {what} address requires SMTPUTF8"


def bad_parameters(command: str, reason: str) -> str:
    """A malformed, unknown or repeated MAIL/RCPT parameter (RFC 5321 4.1.1.11, RFC 1869)."""
    return f"555 5.5.4 {command} parameters not recognized or not implemented: {reason[:120]}"


_ENHANCED_DEFAULT = {
    "220": "2.0.0", "221": "2.0.0", "250": "2.0.0", "252": "2.0.0",
    "421": "4.3.0", "451": "4.3.0", "454": "4.7.0",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4", "530": "5.7.0",
    "552": "5.3.4", "553": "5.1.3", "554": "5.7.0", "555": "5.5.4",
}


def has_enhanced(status: str) -> bool:
    """Whether a reply line carries an RFC 3463 enhanced status code of its own class."""
    parts = status[4:].partition(" ")[0].split(".")
    return len(parts) == 3 and parts[0] == status[:1] and all(p.isdigit() and len(p) <= 3 for p in parts)


def enhanced(status: str) -> str:
    """``status`` with an enhanced status code (RFC 2034): unchanged when it has one or is a 3xx reply,
    else the code's usual one (aiosmtpd's built-in replies carry none)."""
    if len(status) < 4 or status[:1] not in "245" or has_enhanced(status):
        return status
    code = _ENHANCED_DEFAULT.get(status[:3], f"{status[0]}.0.0")
    return f"{status[:4]}{code} {status[4:]}"


def routing_denied(trick: str) -> str:
    """Sender-specified routing from an untrusted client (Postfix: allow_untrusted_routing = no)."""
    return f"550 5.7.1 Relaying denied: sender-specified routing ({trick})"


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


def listed_ip(ip: str, zones: list[str]) -> str:
    """The end-of-DATA refusal for a client listed in DNS block lists whose action is ``reject``."""
    return f"554 5.7.1 Service unavailable, client host [{ip}] blocked using {', '.join(zones) or 'a DNS block list'}"


PROXY_REFUSED = "421 4.7.0 PROXY header not accepted from this address"
GREYLISTED = "451 4.7.1 Greylisted, please try again later"


def too_many_connections(ip: str) -> str:
    """Over the concurrent connection limit: the client is told and the connection closed."""
    return f"421 4.7.0 Too many connections from [{ip}], try again later"


def too_many(kind: str, ip: str) -> str:
    """Over the per-minute message or recipient limit (temporary, the client retries)."""
    return f"450 4.7.1 Too many {kind} from [{ip}], try again later"
