"""A quarantine release that dies by SIGKILL in the middle: ``python -m tests.support.release_crash <qid> <when>``.

``when``: ``after-publish`` (the broker confirmed the publish; the recipients are not marked released
yet) or ``before-publish`` (the recipients are claimed; nothing was published). The release is the
real one (``mailmoat_records.quarantine.release`` against PostgreSQL and RabbitMQ, from
``MAILMOAT_DATABASE_URL`` and ``MAILMOAT_AMQP_URL``); only the bus is wrapped to kill the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from mailmoat_platform.bus import Bus, Publish
from mailmoat_platform.settings import Settings
from mailmoat_records.quarantine import open_quarantine, release


class DyingBus(Bus):
    def __init__(self, url: str, when: str):
        super().__init__(url)
        self.when = when

    async def publish(self, item: Publish, *, timeout: float | None = 30.0) -> None:
        if self.when == "before-publish":
            os.kill(os.getpid(), signal.SIGKILL)
        await super().publish(item, timeout=timeout)
        os.kill(os.getpid(), signal.SIGKILL)


class NoTrace:
    async def record(self, *args: object, **kwargs: object) -> bool:
        return True


async def main(qid: str, when: str) -> int:
    settings = Settings.from_env()
    store = open_quarantine(settings)
    bus = DyingBus(settings.amqp_url, when)
    await bus.connect()
    await release(store, bus, NoTrace(), qid, who="admin crash")  # type: ignore[arg-type]
    return 3  # not reached: the process dies in the publish


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
