"""DLP service wiring: consume mailmoat.dlp, read the text of the message and its attachments, find
sensitive information types, prepend the report header ``X-Mailmoat-DLP`` (types, counts and
confidence; never a value), add the verdict, trace it with redacted evidence, publish to the next stage.

The stage only annotates: mail-flow rules act on its verdict (``sensitive_information``). Extraction and
detection run in worker threads (``Scanner``) within ``dlp.limits`` (time, parts, text, part size) and
archives within ``antimalware.archives``; an unexpected error of the stage on a message, or a scan that
outlives its time by far, passes the message on with the verdict ``error`` (``mailmoat_platform.stagefault``), on
which no ``sensitive_information`` condition matches.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from mailmoat_dlp.policy import Dlp
from mailmoat_dlp.scan import result_of, scan
from mailmoat_dlp.verdict import DlpVerdict
from mailmoat_platform.bus import Publish
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.runtime import Runtime, Transient, serve_stage
from mailmoat_platform.settings import Settings
from mailmoat_platform.stagefault import error_event, error_token, fault
from mailmoat_policy import Policy

SERVICE = "dlp"
HEADER = b"X-Mailmoat-DLP"
SCAN_THREADS = 4
"""Scans one process runs at a time (threads: the work holds the GIL, so more would only slow each one)."""
GRACE = 5.0
"""Seconds a scan may run past its wall-clock bound before it counts as failed (see ``Scanner``)."""
START_WAIT = 60.0
"""Seconds a message waits for a free scan thread before it counts as failed (every thread stuck)."""


class ScanTimeout(Exception):
    """The scan did not stop within its time (a library stuck on an attachment)."""


def section(policy: Policy) -> Dlp:
    """The policy's ``dlp`` section (the registry's ``policy_section``; its defaults when absent)."""
    return policy.dlp  # type: ignore[attr-defined]  # a registry stage's section, not a field of Policy


def report_header(result: str, detail: DlpVerdict) -> bytes:
    """``X-Mailmoat-DLP: found; credit_card:2/high iban:1/medium; parts=3``, folded; no value, no digits of one."""
    fields = [result, detail.summary(), f"parts={detail.scanned}"]
    if detail.notes:
        fields.append(f"notes={len(detail.notes)}")
    if detail.error_type:
        fields.append(f"err={error_token(detail.model_dump())}")
    lines, line = [], HEADER.decode() + ":"
    for word in "; ".join(fields).split():
        if len(line) + 1 + len(word) > 76:
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


def describe(result: str, detail: DlpVerdict) -> str:
    text = f"{result}: {detail.summary()} in {detail.scanned} parts"
    return text + (f"; {len(detail.notes)} notes" if detail.notes else "")


class Scanner:
    """Runs ``scan`` in a small pool of threads, each scan bounded twice: by its own budget
    (``dlp.limits.max_seconds`` of the scanning thread's CPU time, checked between parts, pages, members
    and rows, so a busy machine does not cut scans short) and, should a library get stuck where the
    budget is not checked, by a wall-clock bound from the moment the scan starts (``max_seconds`` per
    thread of the pool, plus ``GRACE``) after which the message goes on as ``error``. The stuck thread
    cannot be stopped and keeps its place in the pool until the library returns; with every thread
    stuck, a message waits ``START_WAIT`` at most for one."""

    def __init__(self, threads: int = SCAN_THREADS):
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dlp-scan")

    async def inspect(self, data: bytes, policy: Policy) -> DlpVerdict:
        """The DLP verdict detail of a message, computed off the event loop."""
        settings = section(policy)
        loop = asyncio.get_running_loop()
        begun: asyncio.Future[None] = loop.create_future()

        def job() -> DlpVerdict:
            loop.call_soon_threadsafe(lambda: begun.done() or begun.set_result(None))
            return scan(data, settings, policy.antimalware.archives, clock=time.thread_time)

        result = loop.run_in_executor(self.pool, job)
        done, _ = await asyncio.wait({begun, result}, timeout=START_WAIT, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            result.cancel()
            raise ScanTimeout(f"no scan thread free after {START_WAIT:g} s")
        bound = settings.limits.max_seconds * self.threads + GRACE
        try:
            return await asyncio.wait_for(result, timeout=bound)
        except TimeoutError:
            raise ScanTimeout(f"no result {bound:g} s after the scan began") from None


def make_handler(runtime: Runtime, scanner: Scanner | None = None):
    scanner = scanner or Scanner()

    async def handle(envelope: Envelope, data: bytes) -> list[Publish]:
        policy = runtime.policy.current
        try:
            detail = await scanner.inspect(data, policy)
            result = result_of(detail)
        except Transient:
            raise
        except Exception as exc:  # a fault of this stage on this message: passed on, never a dead letter
            detail = DlpVerdict.model_validate(fault(SERVICE, envelope, exc))
            result = "error"
            event = error_event(SERVICE, envelope, result, detail.as_detail(), "no sensitive_information rule matches")
        else:
            event = TraceEvent(event="AGENTINFO", message_id=envelope.id, service=SERVICE,
                               recipients=envelope.rcpt_to, detail=describe(result, detail),
                               data={"result": result, **detail.as_detail()})
        verdict = Verdict(stage=SERVICE, result=result, detail=detail.as_detail())
        return [await runtime.finish(envelope, data, verdict, event, report_header(result, detail))]

    return handle


async def main(settings: Settings, worker: int = 0) -> None:
    await serve_stage(SERVICE, settings, worker, make_handler, prefetch=16)
