"""What readiness knows besides the bus: deliveries held without an outcome, and dependencies.

A stage is ready only while it can make progress: no delivery held longer than its stall bound
(``Held``), and every dependency it cannot work without answering (``Dependency``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Held:
    """Deliveries a stage holds (delivered, not yet acked or nacked), with the time each arrived."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._since: dict[int, float] = {}
        self._next = 0

    def begin(self) -> int:
        """Note a delivery that just arrived; returns its key for ``end``."""
        self._next += 1
        self._since[self._next] = self._clock()
        return self._next

    def end(self, key: int) -> None:
        """The delivery reached an outcome (or its channel is gone)."""
        self._since.pop(key, None)

    def __len__(self) -> int:
        return len(self._since)

    def oldest_age(self) -> float:
        """Seconds the oldest delivery held has waited for an outcome; 0 when none is held."""
        if not self._since:
            return 0.0
        return max(0.0, self._clock() - min(self._since.values()))

    def stalled(self, bound: float) -> bool:
        """Whether a delivery has been held longer than ``bound`` seconds."""
        return self.oldest_age() > bound


class Dependency:
    """A service a stage cannot work without, probed every ``interval`` seconds; ``up`` while the last
    probe answered within ``timeout``. Down until the first answer."""

    def __init__(self, name: str, probe: Callable[[], Awaitable[object]], *, interval: float = 1.0,
                 timeout: float = 1.0, on_change: Callable[[bool], None] | None = None):
        self.name = name
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self.up = False
        self._on_change = on_change

    async def check(self) -> bool:
        """Probe once and record the answer."""
        try:
            await asyncio.wait_for(self.probe(), self.timeout)
            up = True
        except Exception as exc:  # any failure of the probe: refused, timed out, an error reply
            up = False
            if self.up:
                log.warning("%s does not answer: %s: %s", self.name, type(exc).__name__, exc)
        if up and not self.up:
            log.info("%s answers", self.name)
        if up != self.up and self._on_change is not None:
            self._on_change(up)
        self.up = up
        return up

    async def watch(self) -> None:
        """Probe until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval)


def transaction_bound(connect_timeout: float, command_timeout: float, commands: int = 6) -> float:
    """The longest one SMTP delivery may take without being stuck: connecting, then ``commands``
    replies each within its timeout (greeting, EHLO, STARTTLS, EHLO, the pipelined envelope, the end
    of data). A delivery held longer than this has stalled."""
    return connect_timeout + commands * command_timeout
