"""``mailmoat run pipeline``: every filter stage and routing in one process, handing messages over in memory
(``mailmoat_platform.colocated``, docs/decisions/012)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib

from mailmoat_platform import colocated, stages
from mailmoat_platform.runtime import stop_all
from mailmoat_platform.settings import Settings

STOP_GRACE = 40.0
"""Seconds the other stages have to finish what they hold when one of them fails."""


async def run(settings: Settings, worker: int = 0, names: list[str] | None = None) -> None:
    """Run ``names`` (default ``colocated.pipeline_stages()``), each with its own runtime, in this event loop, handing
    messages over in memory between them, until SIGTERM (every runtime stops) or one of them fails."""
    colocated.enable()
    mains = []
    for name in names or colocated.pipeline_stages():
        module = importlib.import_module(f"{stages.get(name).package}.service")
        mains.append(asyncio.ensure_future(module.main(settings, worker)))
    try:
        done, _ = await asyncio.wait(mains, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # one stage failed to start or run: raise its error
    finally:
        stop_all()  # the others finish what they hold, as on SIGTERM
        _, late = await asyncio.wait(mains, timeout=STOP_GRACE)
        for task in late:
            task.cancel()
        for task in mains:
            with contextlib.suppress(BaseException):
                await task
