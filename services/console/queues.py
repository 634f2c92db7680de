"""Deferred mail as the console shows it and acts on it: egress's deferral records (Redis,
``mailmoat_records.deferred``) grouped by destination, and the actions (retry now, bounce with a DSN, delete)
sent to egress as control messages on ``mailmoat.egress.control`` (egress carries them out)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from mailmoat_records.deferred import ACTIONS, CONTROL_ARGUMENTS, CONTROL_QUEUE, Control, Deferral, DeferredStore
from mailmoat_records.quarantine import QuarantineUnavailable


class DeferredCopy(Deferral):
    """A deferred copy with its times as date-times (the API's item)."""

    @property
    def next_at(self) -> datetime:
        return datetime.fromtimestamp(self.next_attempt, UTC)

    @property
    def first_at(self) -> datetime:
        return datetime.fromtimestamp(self.first_attempt, UTC)


class Destination(BaseModel):
    destination: str
    count: int = Field(description="Deferred copies")
    recipients: int = Field(description="Recipients still to deliver")
    oldest_first_attempt: float
    copies: list[DeferredCopy]

    @property
    def oldest_at(self) -> datetime:
        return datetime.fromtimestamp(self.oldest_first_attempt, UTC)


def by_destination(deferrals: list[Deferral]) -> list[Destination]:
    """Copies grouped by destination (the most copies first), each group by next attempt."""
    groups: dict[str, list[DeferredCopy]] = {}
    for d in deferrals:
        groups.setdefault(d.destination, []).append(DeferredCopy.model_validate(d.model_dump()))
    out = [Destination(destination=name, count=len(copies), recipients=sum(len(c.recipients) for c in copies),
                       oldest_first_attempt=min(c.first_attempt for c in copies),
                       copies=sorted(copies, key=lambda c: (c.next_attempt, c.id)))
           for name, copies in groups.items()]
    return sorted(out, key=lambda g: (-g.count, g.destination))


class ActionError(ValueError):
    """An action that is not one of retry, bounce, delete."""


@dataclass
class ConsoleQueues:
    """The deferral records (``redis_of``: the console's Redis client) and a bus connection of the console's own,
    opened at the first action (``bus_factory``: an unconnected ``Bus``)."""

    redis_of: Callable[[], object]
    bus_factory: Callable[[], object] | None = None
    _bus: object | None = None
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def store(self) -> DeferredStore:
        return DeferredStore(self.redis_of())

    async def destinations(self) -> list[Destination]:
        return by_destination(await self.store.all())

    async def copy(self, message_id: str, route: str) -> Deferral | None:
        return await self.store.get(message_id, route)

    async def _publisher(self):
        async with self._connecting:
            if self._bus is None:
                if self.bus_factory is None:
                    raise QuarantineUnavailable("this console has no message bus configured")
                bus = self.bus_factory()
                try:
                    await bus.connect()  # type: ignore[attr-defined]
                    await bus.declare_queue(CONTROL_QUEUE, CONTROL_ARGUMENTS)  # type: ignore[attr-defined]
                except Exception as exc:
                    raise QuarantineUnavailable(f"message bus: {type(exc).__name__}: {exc}") from exc
                self._bus = bus
        return self._bus

    async def ask(self, action: str, message_id: str, route: str, by: str) -> Deferral | None:
        """Send ``action`` on a deferred copy to egress; the copy's record (None: not deferred, nothing sent)."""
        if action not in ACTIONS:
            raise ActionError(f"not an action: {action!r} (retry, bounce or delete)")
        found = await self.copy(message_id, route)
        if found is None:
            return None
        bus = await self._publisher()
        try:
            await bus.publish_body(CONTROL_QUEUE, Control(action, message_id, route, by).encode(),  # type: ignore
                                   content_type="application/json")
        except Exception as exc:
            await self.close()
            raise QuarantineUnavailable(f"the {action} was not published: {type(exc).__name__}: {exc}") from exc
        return found

    async def close(self) -> None:
        if self._bus is not None:
            bus, self._bus = self._bus, None
            try:
                await bus.close()  # type: ignore[attr-defined]
            except Exception:  # closing a broken connection
                pass
