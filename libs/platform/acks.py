"""Consumer acks gathered per event-loop turn, sent as one multiple-ack where that is exact.

A stage acks each message only after its outputs are confirmed; many messages finish in the same
turn of the event loop under load. Each ``basic.ack`` is a frame the broker handles on its own (a
settle command for a quorum queue); one ``basic.ack`` with ``multiple`` settles every delivery up
to its tag at once. That is only right when every delivery up to that tag has really finished, so
this keeps, per channel, the highest tag below which everything is settled (acked or nacked here)
and uses ``multiple`` only over a run of deliveries it knows are all done; anything else is acked
one by one, as before. A delivery settled some other way only makes it fall back to single acks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from aiormq.abc import AbstractChannel

log = logging.getLogger(__name__)


class Settleable(Protocol):
    """A delivered message as acks need it (the bus's ``Delivery``, or aio-pika's ``IncomingMessage``)."""

    @property
    def channel(self) -> AbstractChannel: ...

    @property
    def delivery_tag(self) -> int | None: ...

    async def nack(self, requeue: bool = True) -> None: ...


@dataclass
class _ChannelAcks:
    channel: AbstractChannel
    """The channel the tags belong to (held so that a new channel is never mistaken for it)."""
    settled_to: int = 0
    """Every delivery tag up to this one is settled."""
    settled: set[int] = field(default_factory=set)
    """Settled tags above ``settled_to``."""


def plan(settled_to: int, settled: set[int], acks: list[int]) -> tuple[int | None, list[int], int]:
    """How to send ``acks`` (delivery tags finished this turn) on a channel where every tag up to
    ``settled_to`` and the tags in ``settled`` are already settled.

    Returns (the tag of one multiple-ack, or None; tags to ack one by one; the new ``settled_to``).
    ``settled`` is updated in place.
    """
    settled.update(acks)
    new_to = settled_to
    while new_to + 1 in settled:
        new_to += 1
        settled.discard(new_to)
    covered = [tag for tag in acks if tag <= new_to]
    singles = sorted(tag for tag in acks if tag > new_to)
    if len(covered) > 1:
        return max(covered), singles, new_to
    return None, sorted(covered + singles), new_to


class AckBatcher:
    """Acks of one turn of the event loop, per channel: one multiple-ack where exact, else singles."""

    def __init__(self) -> None:
        self._channels: dict[int, _ChannelAcks] = {}
        self._pending: list[Settleable] = []
        self._scheduled = False
        self._sending: set[asyncio.Future[None]] = set()

    def ack(self, message: Settleable) -> None:
        """Ack ``message`` at the end of this turn (its outputs are confirmed already)."""
        self._pending.append(message)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def nack(self, message: Settleable, requeue: bool = True) -> None:
        """Nack ``message`` now, then count it as settled."""
        await message.nack(requeue=requeue)
        self._state(message).settled.add(message.delivery_tag or 0)

    async def drain(self) -> None:
        """Wait until every ack asked for so far is written."""
        if self._scheduled:
            self._flush()
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    def _state(self, message: Settleable) -> _ChannelAcks:
        channel = message.channel
        state = self._channels.get(id(channel))
        if state is None or state.channel is not channel:
            state = self._channels[id(channel)] = _ChannelAcks(channel)
        return state

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        by_channel: dict[int, tuple[_ChannelAcks, list[int]]] = {}
        for message in pending:
            state = self._state(message)
            by_channel.setdefault(id(state.channel), (state, []))[1].append(message.delivery_tag or 0)
        for state, tags in by_channel.values():
            multiple, singles, state.settled_to = plan(state.settled_to, state.settled, tags)
            if multiple is not None:
                self._send(state.channel.basic_ack(delivery_tag=multiple, multiple=True))
            for tag in singles:
                self._send(state.channel.basic_ack(delivery_tag=tag))
        for key in [k for k, s in self._channels.items() if s.channel.is_closed]:
            del self._channels[key]

    def _send(self, ack: Awaitable[None]) -> None:
        task = asyncio.ensure_future(ack)
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The channel is gone: the broker requeues what was not acked, and stages are idempotent.
            log.warning("ack not sent: %s: %s", type(exc).__name__, exc)
