"""Antivirus service wiring: consume mailmoat.antivirus, scan with clamd and the built-in checks,
prepend the report header, add the verdict, publish to the next stage of the itinerary
(``Runtime.finish``). clamd's pinger and the signature watcher run as the runtime's background tasks.

clamd unreachable or too slow: the message is retried later (``Transient``), never passed on
unscanned, and the stage reports not ready until clamd answers again, unless the policy says
``antimalware.fail_open``. Any other error of the stage on a message passes it on as ``unscannable``
(quarantined by default; ``mailmoat_platform.stagefault``), never into ``mailmoat.dead``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from mailmoat_antivirus.clamd import ClamdClient, ClamdUnavailable, ScanResult, parse_address
from mailmoat_antivirus.decide import (
    Findings,
    Item,
    add_engine_results,
    analyse,
    decide,
    failed,
    report_header,
    unscanned,
)
from mailmoat_antivirus.signatures import SignatureAge, export_health, watch_signatures
from mailmoat_platform.bus import Publish
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime, Transient, serve_stage
from mailmoat_platform.settings import Settings
from mailmoat_platform.stagefault import error_event, fault
from mailmoat_policy import Antimalware

SERVICE = "antivirus"
ADDRESS_ENV = "MAILMOAT_CLAMD_ADDRESS"

log = logging.getLogger(__name__)


class Engine:
    """The clamd client for the policy in force (rebuilt when its settings change)."""

    def __init__(self, address_override: str | None = None):
        self.address_override = address_override
        self._client: ClamdClient | None = None
        self._key: tuple[object, ...] | None = None

    def client(self, policy: Antimalware) -> ClamdClient:
        address = self.address_override or policy.clamd
        key = (address, policy.connect_timeout, policy.scan_timeout, policy.max_connections,
               policy.stream_max_length)
        if self._client is None or key != self._key:
            previous = self._client
            self._client = ClamdClient(
                parse_address(address), connect_timeout=policy.connect_timeout, scan_timeout=policy.scan_timeout,
                max_connections=policy.max_connections, stream_max_length=policy.stream_max_length,
            )
            if previous is not None:
                self._client.available = previous.available
                previous.close()
            self._key = key
        return self._client

    @property
    def available(self) -> bool:
        return self._client is not None and self._client.available is True


async def scan_items(client: ClamdClient, items: list[Item]) -> list[tuple[Item, ScanResult]]:
    """Scan every item (concurrently, within the client's connection limit)."""
    results = await asyncio.gather(*(client.scan(item.data) for item in items))
    return list(zip(items, results, strict=True))


def make_handler(runtime: Runtime, engine: Engine):
    async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
        policy = runtime.policy.current.antimalware
        client = engine.client(policy)
        try:
            verdict, event = await scan_message(envelope, data, policy, client)
        except Transient:
            raise
        except Exception as exc:  # a fault of this stage on this message: passed on, never a dead letter
            verdict = failed(fault(SERVICE, envelope, exc), policy)
            event = error_event(SERVICE, envelope, verdict.result, verdict.detail,
                                "quarantine" if verdict.result == "unscannable" else "antimalware.unscannable: allow")
        return [await runtime.finish(envelope, data, verdict, event, report_header(verdict))]

    return handle


INLINE_BYTES = 20 * 1024
"""Messages up to this size get the built-in checks on the event loop: for them a worker thread costs more
(the hand-over, the GIL passed back and forth) than the checks, whose worst case at this size (a small
archive expanding within the archive limits) is some milliseconds. Larger ones go to a thread."""


async def built_in_checks(data: bytes, policy: Antimalware) -> tuple[Findings, list[Item]]:
    """``analyse`` on the loop for a small message, in a worker thread otherwise."""
    if len(data) <= INLINE_BYTES:
        return analyse(data, policy)
    return await asyncio.to_thread(analyse, data, policy)


async def scan_message(envelope: Envelope, data: bytes, policy: Antimalware, client: ClamdClient
                ) -> tuple[Verdict, TraceEvent]:
    """The verdict and its trace event; ``Transient`` when clamd is away and the policy does not fail open."""
    findings, items = await built_in_checks(data, policy)
    try:
        results = await scan_items(client, items)
    except ClamdUnavailable as exc:
        if not policy.fail_open:
            raise Transient(str(exc)) from exc
        verdict = unscanned(str(exc))
        return verdict, TraceEvent(
            event="SCAN", message_id=envelope.id, service=SERVICE, recipients=envelope.rcpt_to,
            detail=f"passed on unscanned (antimalware.fail_open): {exc}", data={"result": verdict.result},
        )
    add_engine_results(findings, results)
    verdict = decide(findings, policy, scans=len(items))
    return verdict, TraceEvent(
        event="SCAN" if verdict.result == "clean" else "MALWARE", message_id=envelope.id,
        service=SERVICE, recipients=envelope.rcpt_to, detail=_summary(verdict.result, verdict.detail),
        data={"result": verdict.result, **verdict.detail},
    )


def _summary(result: str, detail: dict[str, object]) -> str:
    if result == "clean":
        return f"clean ({detail.get('scans', 0)} scans, {detail.get('parts', 0)} parts)"
    findings = detail.get("findings") or {}
    first = next(iter(findings.values()), []) if isinstance(findings, dict) else []
    return f"{result}: {'; '.join(str(f) for f in list(first)[:5])}"


PING_TIMEOUT = 5.0
"""Seconds clamd has to answer a ping (or a scan slot to free up) before the stage reports not ready:
a clamd that accepts and never answers is noticed in seconds, not after ``scan_timeout``."""


async def watch_engine(runtime: Runtime, engine: Engine, interval: float = 2.0) -> None:
    """Ping clamd now and then, so readiness follows it even when no mail flows."""
    while True:
        policy = runtime.policy.current.antimalware
        client = engine.client(policy)
        try:
            await asyncio.wait_for(client.ping(), min(PING_TIMEOUT, policy.scan_timeout))
        except TimeoutError:
            client.available = False
        except Exception:  # ping records what it learnt; nothing else to do here
            pass
        await asyncio.sleep(interval)


def ready(runtime: Runtime, engine: Engine) -> bool:
    """Readiness follows clamd, unless the policy fails open."""
    return engine.available or runtime.policy.current.antimalware.fail_open


def background(engine: Engine, ping_interval: float = 2.0) -> list[Callable[[Runtime], Awaitable[None]]]:
    """The stage's background tasks: the clamd pinger (readiness) and the signature age watcher."""
    return [
        lambda runtime: watch_engine(runtime, engine, ping_interval),
        lambda runtime: watch_signatures(lambda: engine.client(runtime.policy.current.antimalware),
                                         SignatureAge(SERVICE)),
    ]


async def main(settings: Settings, worker: int = 0) -> None:
    engine = Engine(os.environ.get(ADDRESS_ENV) or None)
    export_health(SERVICE, lambda: engine.available)
    await serve_stage(SERVICE, settings, worker, lambda runtime: make_handler(runtime, engine), prefetch=16,
                      ready_checks=[lambda runtime: ready(runtime, engine)], background=background(engine))
