"""Group commit of Redis script calls: many concurrent callers, one pipeline per round trip.

``call`` queues one script call and waits for its own reply. The first caller starts a flush on the
next turn of the event loop; the flush sends every queued call in one pipeline (``EVALSHA`` each,
not a transaction) and, while that round trip is out, new calls queue up for the next one. A busy
process thus makes one round trip (one write, one read) for many messages in flight, and an idle one
pays nothing extra: a lone call goes out on the next loop turn.

Each caller still gets its own reply or its own exception, after the write, so "written, then ack"
orders stay as they were. A connection failure fails every call of that pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailmoat_platform import redisclient
from mailmoat_platform.redisclient import NoScriptError, RedisError, script_sha


@dataclass
class _Call:
    script: str
    sha: str
    keys: list[Any]
    args: list[Any]
    done: asyncio.Future[Any]


class ScriptBatcher:
    """Queues Lua script calls and sends them in pipelines; ``client`` is read at each flush."""

    def __init__(self, client: Callable[[], redisclient.Redis]):
        self._client = client
        self._shas: dict[str, str] = {}
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.calls = 0

    async def call(self, script: str, keys: list[Any], args: list[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args`` in the next pipeline; its reply, or raises its error."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = script_sha(script)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        # A caller cancelled while waiting leaves its result unread: mark it retrieved either way.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append(_Call(script, sha, keys, args, done))
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            results = await self._write(batch)
            self.batches += 1
            self.calls += len(batch)
            for call, result in zip(batch, results, strict=True):
                if call.done.done():
                    continue
                if isinstance(result, BaseException):
                    call.done.set_exception(result)
                else:
                    call.done.set_result(result)

    async def _write(self, batch: list[_Call]) -> list[Any]:
        """One result per call: the script's reply, or the exception that failed it."""
        client = self._client()
        results = await self._pipeline(client, batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            # First use on this server (or after a restart or SCRIPT FLUSH): load, then send those again.
            try:
                for script in {batch[i].script for i in missing}:
                    await client.script_load(script)
            except (RedisError, OSError) as exc:
                return [exc if i in missing else r for i, r in enumerate(results)]
            again = await self._pipeline(client, [batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    @staticmethod
    async def _pipeline(client: redisclient.Redis, batch: list[_Call]) -> list[Any]:
        try:
            async with client.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
                return list(await pipe.execute(raise_on_error=False))
        except (RedisError, OSError) as exc:
            return [exc] * len(batch)
