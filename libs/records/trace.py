"""Message trace: what a stage hands it (``TraceRecord``) and, with ``records = redis``, its Redis store.

With ``records = postgresql`` the runtime hands records to ``tracebus.TracePublisher`` instead (batched
onto the ``mailmoat.trace`` queue, written to PostgreSQL by the recorder); ``encode_batch`` and
``decode_batch`` are the queue's message body. The Redis store:

Keys (all expire after the retention period):
- ``mailmoat:trace:<id>``: list of JSON events, oldest first;
- ``mailmoat:trace:by:<kind>:<value>``: sorted set of message ids by time, for the kinds
  ``sender``, ``from`` (the author addresses, as the antispam stage read them), ``rcpt``, ``msgid``
  (Message-ID header) and ``ip``.

Writes are group-committed (``redisbatch``): ``record`` queues its events and waits until they are
written; one pipeline per round trip carries every record queued meanwhile (all the messages a
process has in flight), so a busy process makes one Redis round trip for many messages. A
record that returned True is in Redis, so a stage that awaits it before acking its input keeps the
order "trace written, then ack" (a crash loses no event of an acked message); the cost of waiting is
at most one round trip more than writing alone. Trace stays best effort: a Redis failure makes
``record`` return False and never blocks mail.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, TypeAdapter

from mailmoat_platform.models import TraceEvent

if TYPE_CHECKING:
    from mailmoat_platform import redisclient
    from mailmoat_platform.redisbatch import ScriptBatcher

log = logging.getLogger(__name__)

KEY = "mailmoat:trace:"
INDEX = "mailmoat:trace:by:"


_RECORD = """
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ttl)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #ARGV - 3
"""


TRACE_QUEUE = "mailmoat.trace"
"""The durable queue of trace records on their way to PostgreSQL (the recorder consumes it)."""
TRACE_QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
"""Its declaration (every declarer must agree): a quorum queue without a delivery limit, so a batch the
recorder could not write yet is never dead-lettered for having been delivered often."""
TRACE_CONTENT_TYPE = "application/x-mailmoat-trace+json"


class TraceRecord(BaseModel):
    """A message's events and, for its first record, the values it is looked up by
    (``TraceSink.record``'s arguments as a model: what a stage publishes, what the recorder writes)."""

    events: list[TraceEvent]
    sender: str | None = None
    recipients: list[str] = Field(default_factory=list)
    message_id_header: str | None = None
    client_ip: str | None = None
    authors: list[str] = Field(default_factory=list)


_BATCH = TypeAdapter(list[TraceRecord])


def make_record(events: TraceEvent | Iterable[TraceEvent], *, sender: str | None = None,
                recipients: Iterable[str] = (), message_id_header: str | None = None, client_ip: str | None = None,
                authors: Iterable[str] = ()) -> TraceRecord:
    """``TraceSink.record``'s arguments as a ``TraceRecord`` (empty author values left out)."""
    return TraceRecord(events=[events] if isinstance(events, TraceEvent) else list(events), sender=sender,
                       recipients=list(recipients), message_id_header=message_id_header, client_ip=client_ip,
                       authors=[a for a in authors if a])


def encode_batch(records: Iterable[TraceRecord]) -> bytes:
    """A batch of records as one message body (a JSON array)."""
    return _BATCH.dump_json(list(records), exclude_defaults=True)


def decode_batch(body: bytes) -> list[TraceRecord]:
    """The records of a message body; raises ``ValueError`` when it is not one."""
    return _BATCH.validate_json(body)


def _norm(value: str) -> str:
    return value.strip().strip("<>").lower()


class TraceSink(ABC):
    """Where a process hands its trace: Redis (``TraceStore``) or the bus on its way to PostgreSQL
    (``tracebus.TracePublisher``). ``record`` is the one call stages make; each store implements ``add``."""

    async def record(
        self,
        events: TraceEvent | Iterable[TraceEvent],
        *,
        sender: str | None = None,
        recipients: Iterable[str] = (),
        message_id_header: str | None = None,
        client_ip: str | None = None,
        authors: Iterable[str] = (),
    ) -> bool:
        """Hand over events (with, for the first record of a message, the values it is looked up by) and
        wait until they are stored; False when that failed (trace is best effort: mail goes on).

        ``authors``: the From addresses as a mail client shows them (``mailmoat_mail.author``), so a
        message can be found by who it claims to be from as well as by its envelope sender."""
        item = make_record(events, sender=sender, recipients=recipients, message_id_header=message_id_header,
                           client_ip=client_ip, authors=authors)
        if not item.events:
            return True
        return await self.add(item)

    @abstractmethod
    async def add(self, record: TraceRecord) -> bool:
        """Store one record with at least one event; False when that failed."""


class TraceStore(TraceSink):
    """Writes and reads trace events; a Redis outage is logged, never fatal to mail flow."""

    def __init__(self, client: redisclient.Redis, retention_days: int = 90, *, batch: ScriptBatcher | None = None):
        """``batch``: the process's script batcher, so that trace writes share its round trips with
        the other Redis scripts of the same moment (egress's dedupe records); by default one of its own."""
        self.client = client
        self.retention = retention_days * 86400
        self.failures = 0
        if batch is None:
            from mailmoat_platform.redisbatch import ScriptBatcher

            batch = ScriptBatcher(lambda: self.client)
        self._batch = batch

    @property
    def batches(self) -> int:
        """Pipelines written (records per batch = records / batches)."""
        return self._batch.batches

    async def add(self, record: TraceRecord) -> bool:
        """Append the events (and index keys for the first record of a message). False when Redis failed."""
        batch = record.events
        message_id = batch[0].message_id
        index: list[str] = []
        if record.sender is not None:
            index.append(f"{INDEX}sender:{_norm(record.sender) or '<>'}")
        index.extend(f"{INDEX}rcpt:{_norm(r)}" for r in record.recipients)
        if record.message_id_header:
            index.append(f"{INDEX}msgid:{_norm(record.message_id_header)}")
        if record.client_ip:
            index.append(f"{INDEX}ip:{record.client_ip}")
        index.extend(f"{INDEX}from:{_norm(a)}" for a in record.authors)
        keys = [KEY + message_id, *index]
        args = [self.retention, message_id, time.time(), *(e.model_dump_json() for e in batch)]
        from mailmoat_platform.redisclient import RedisError

        try:
            # One script call however many events and index keys, sent with the other calls queued
            # meanwhile (redisbatch).
            await self._batch.call(_RECORD, keys, args)
        except (RedisError, OSError) as exc:
            self.failures += 1
            log.warning("trace write failed for %s: %s", message_id, exc)
            return False
        return True

    async def events(self, message_id: str) -> list[TraceEvent]:
        raw = await self.client.lrange(KEY + message_id, 0, -1)
        events = [TraceEvent.model_validate_json(r) for r in raw]
        # Stages write concurrently (ingress traces RECEIVE while it publishes): order by time;
        # the sort is stable, so equal times keep their write order.
        return sorted(events, key=lambda e: e.at)

    async def find(self, needle: str) -> list[str]:
        """Message ids for a queue id, sender, From address, recipient, Message-ID header or client IP."""
        if await self.client.exists(KEY + needle):
            return [needle]
        value = _norm(needle)
        ids: list[str] = []
        for kind in ("msgid", "sender", "from", "rcpt", "ip"):
            for raw in await self.client.zrange(f"{INDEX}{kind}:{value}", 0, -1):
                text = raw.decode() if isinstance(raw, bytes) else raw
                if text not in ids:
                    ids.append(text)
        return ids
