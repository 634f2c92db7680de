"""The connection filter at SMTP time (``connection_filter.at_smtp``, off by default).

Ingress runs the connection filter stage's own work (``mailmoat_connection_filter.service.judge``: the
same look-ups through the same cached resolver, the same verdict, report header and trace event) in its
process: the look-ups start in the background at MAIL FROM, so that by the end of DATA their answers are
usually in the cache, and the message is then published straight to the stage after the connection
filter (one broker hop and one process less on its path). A ``reject`` verdict (a listing in a zone whose
``action`` is ``reject``, or the IP block list after a policy change) is refused at the end of DATA
instead of being accepted and then rejected by routing with a non-delivery report. When the work is not
done within ``SCREEN_TIMEOUT`` (slow DNS) or fails, the message goes to the connection filter stage as
before: nothing is decided twice and nothing is lost. docs/decisions/013-connection-filter-at-smtp.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailmoat_ingress import replies
from mailmoat_platform.bus import Publish
from mailmoat_platform.models import Envelope, TraceEvent
from mailmoat_platform.runtime import stage_publish
from mailmoat_policy import Policy

if TYPE_CHECKING:
    from mailmoat_connection_filter.lookup import Resolver

log = logging.getLogger(__name__)

STAGE = "connection_filter"
SCREEN_TIMEOUT = 2.0
"""Longest wait at the end of DATA for the connection filter's work before the message goes to its stage."""
WARM_KEYS = 10_000
"""Clients remembered as warmed at most (the memory is emptied when it is full)."""


@dataclass
class Screened:
    """The connection filter's outcome at SMTP time: the publish past the stage, or a refusal."""

    event: TraceEvent
    publish: Publish | None = None
    reply: str | None = None


def applies(policy: Policy, itinerary: list[str]) -> bool:
    """Whether ingress runs the connection filter for a message with this itinerary."""
    return policy.connection_filter.at_smtp and STAGE in itinerary


def refusal(detail: dict[str, Any]) -> str:
    """The SMTP reply refusing a message whose connection filter verdict is ``reject``."""
    ip = str(detail.get("client_ip") or "")
    if detail.get("reason") == "ip_block":
        return replies.blocked_ip(ip)
    zones = [d["zone"] for d in detail.get("dnsbl") or ()
             if d.get("result") == "listed" and d.get("action") == "reject"]
    return replies.listed_ip(ip, zones)


class ConnectionScreen:
    """The connection filter of one ingress process (its resolver and answer cache)."""

    def __init__(self, timeout: float = SCREEN_TIMEOUT):
        self.timeout = timeout
        self._resolver: Resolver | None = None
        self._warming: set[asyncio.Task[Any]] = set()
        self._warmed_at: dict[tuple[str, str | None], float] = {}

    def resolver(self) -> Resolver:
        if self._resolver is None:
            from mailmoat_connection_filter.lookup import Resolver  # only where ingress runs the filter

            self._resolver = Resolver()
        return self._resolver

    def warm(self, policy: Policy, client_ip: str, helo: str | None) -> None:
        """Start the look-ups for a client at MAIL FROM (their answers land in the cache; none is awaited).
        A client warmed less than half the cache time ago is not warmed again: its answers are cached."""
        ttl = policy.connection_filter.cache_ttl
        if not ttl or not applies(policy, policy.pipeline.itinerary()):
            return
        now = time.monotonic()
        key = (client_ip, helo)
        if now - self._warmed_at.get(key, -ttl) < ttl / 2:
            return
        if len(self._warmed_at) >= WARM_KEYS:
            self._warmed_at.clear()
        self._warmed_at[key] = now
        from mailmoat_connection_filter.service import inspect

        direction = "outbound" if policy.is_internal(client_ip) else "inbound"
        probe = Envelope(client_ip=client_ip, helo=helo, direction=direction)
        task = asyncio.ensure_future(inspect(probe, policy, self.resolver()))
        self._warming.add(task)
        task.add_done_callback(self._warmed)

    def _warmed(self, task: asyncio.Task[Any]) -> None:
        self._warming.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.debug("connection filter look-ups at MAIL FROM failed: %s: %s", type(error).__name__, error)

    async def screen(self, policy: Policy, envelope: Envelope, data: bytes) -> Screened | None:
        """The connection filter's outcome for a message at the end of DATA; None: leave it to the stage
        (not asked of ingress, not done in time, or failed). Adds the verdict to ``envelope``."""
        if not applies(policy, envelope.itinerary):
            return None
        from mailmoat_connection_filter.service import judge

        try:
            verdict, header, event = await asyncio.wait_for(
                judge(envelope, policy, self.resolver(), service="ingress"), self.timeout)
        except Exception as exc:  # slow DNS or a fault: the stage does the work as before
            log.info("connection filter at SMTP time for %s not done (%s: %s); passing it to the stage",
                     envelope.id, type(exc).__name__, exc, extra={"message_id": envelope.id})
            return None
        envelope.add_verdict(verdict)
        if verdict.result == "reject":
            return Screened(event, reply=refusal(verdict.detail))
        envelope.size = len(header) + len(data)
        return Screened(event, publish=stage_publish(envelope, data, STAGE, header))

    async def close(self) -> None:
        for task in list(self._warming):
            task.cancel()
        if self._warming:
            await asyncio.wait(list(self._warming), timeout=1)


__all__ = ["SCREEN_TIMEOUT", "ConnectionScreen", "Screened", "applies", "refusal"]
