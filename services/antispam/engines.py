"""Optional external engines: Rspamd (HTTP ``/checkv2``) and SpamAssassin's spamd (SPAMC ``CHECK``).

Each returns a score or None; an engine that is not configured, down, slow or answering garbage
gives None, so its absence never holds up mail.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from mailmoat_platform.models import Envelope

if TYPE_CHECKING:  # aiohttp's client is imported with the first Rspamd check (policy antispam.engines)
    import aiohttp

log = logging.getLogger(__name__)
MAX_ANSWER = 1_048_576


@dataclass(frozen=True)
class EngineScore:
    engine: str
    score: float
    required: float | None = None


def rspamd_headers(envelope: Envelope) -> CIMultiDict[str]:
    """Rspamd's request headers: one ``Rcpt`` per recipient (Rspamd takes the header repeated), and no
    ``IP`` or ``Helo`` when they are unknown."""
    headers: CIMultiDict[str] = CIMultiDict({"From": envelope.mail_from or "<>", "Queue-Id": envelope.id})
    if envelope.client_ip:
        headers["IP"] = envelope.client_ip
    if envelope.helo:
        headers["Helo"] = envelope.helo
    for rcpt in envelope.rcpt_to:
        headers.add("Rcpt", rcpt)
    return headers


async def rspamd_check(url: str, envelope: Envelope, data: bytes, timeout: float,
                       session: aiohttp.ClientSession | None = None) -> EngineScore | None:
    """POST the message to ``<url>/checkv2`` with the envelope facts as Rspamd's request headers."""
    import aiohttp

    headers = rspamd_headers(envelope)
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout):
            async with session.post(url.rstrip("/") + "/checkv2", data=data, headers=headers) as response:
                if response.status != 200:
                    return None
                answer = await response.json(content_type=None)
        score = float(answer["score"])
        required = answer.get("required_score")
        return EngineScore("rspamd", score, float(required) if required is not None else None)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
        log.info("rspamd not used: %s", exc or type(exc).__name__)
        return None
    finally:
        if own:
            await session.close()


_SPAM_LINE = re.compile(rb"(?im)^Spam:\s*(\w+)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)")


def spamc_request(data: bytes, user: str = "mailmoat") -> bytes:
    return (b"CHECK SPAMC/1.5\r\nContent-length: " + str(len(data)).encode() + b"\r\nUser: " + user.encode()
            + b"\r\n\r\n" + data)


def parse_spamd(answer: bytes) -> EngineScore | None:
    """The score of a ``SPAMD/1.x 0 EX_OK`` answer carrying ``Spam: True ; 15.0 / 5.0``."""
    if not re.match(rb"SPAMD/\d\.\d+ 0 ", answer):
        return None
    match = _SPAM_LINE.search(answer)
    if not match:
        return None
    return EngineScore("spamd", float(match.group(2)), float(match.group(3)))


async def read_answer(reader: asyncio.StreamReader, limit: int = MAX_ANSWER) -> bytes:
    """Everything spamd sends until it closes the connection: it writes its status line and its headers
    separately, so one ``read`` may return the status line alone."""
    answer = b""
    while len(answer) < limit:
        chunk = await reader.read(limit - len(answer))
        if not chunk:
            break
        answer += chunk
    return answer


async def spamd_check(address: str, data: bytes, timeout: float) -> EngineScore | None:
    host, _, port = address.rpartition(":")
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))
            writer.write(spamc_request(data))
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            answer = await read_answer(reader)
        return parse_spamd(answer)
    except (TimeoutError, OSError, ValueError) as exc:
        log.info("spamd not used: %s", exc or type(exc).__name__)
        return None
    finally:
        if writer is not None:
            writer.close()
