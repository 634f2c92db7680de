"""A small asyncio Redis client: the commands the services use, over one pipelined connection.

redis-py imports its sync and async clients, cluster, sentinel and every command module whatever one uses
(about 4 MB in each process, bench/README.md); the services use some thirty commands. This client speaks
RESP2 with hiredis's parser and keeps redis-py's method names, arguments and reply types for the
commands it has, so the stores take either client.

One connection carries every command of the process: a command is written at once and its reply is the
next one read that no earlier command is waiting for (Redis answers in order), so concurrent callers share
round trips instead of a pool of sockets. A pipeline is one write; a transaction is MULTI ... EXEC in it.
A reply that does not come within ``socket_timeout``, or a connection that breaks, fails every command
waiting on that connection (their replies could no longer be told apart) and closes it; the next command
connects again. A caller that gives up (cancels) leaves the connection as it is, and its reply is read and
dropped; but a connection whose oldest unanswered command is older than ``socket_timeout`` is given up at
the next command (it hangs, and no caller is left to time out on it). A command is never sent twice: one
that was written when its connection broke raises ``ConnectionError``, as it may or may not have run.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import hashlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class RedisError(Exception):
    """Any failure of a Redis command."""


class ConnectionError(RedisError):
    """No connection, or it broke while a command waited for its reply."""


class TimeoutError(RedisError):
    """No reply within the socket timeout (or no connection within the connect timeout)."""


class ResponseError(RedisError):
    """Redis answered the command with an error."""


class NoScriptError(ResponseError):
    """EVALSHA of a script the server does not have (``NOSCRIPT``)."""


def script_sha(script: str) -> str:
    """The SHA1 by which Redis knows a Lua script (EVALSHA)."""
    return hashlib.sha1(script.encode()).hexdigest()


def _error(reply: Exception) -> ResponseError:
    text = str(reply)
    return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)


Arg = bytes | str | int | float


def _encode(args: Iterable[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts: list[bytes] = []
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, bool):
            raise RedisError("a bool is not a Redis argument: give 0/1 or text")
        elif isinstance(arg, int | float):
            value = repr(arg).encode()
        elif isinstance(arg, memoryview | bytearray):
            value = bytes(arg)
        else:
            raise RedisError(f"invalid Redis argument of type {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"*%d\r\n" % len(parts) + b"".join(parts)


# --- replies as redis-py gives them ---------------------------------------------------------------------

def _ok(reply: Any) -> bool | None:
    return True if reply == b"OK" else None if reply is None else reply


def _bool(reply: Any) -> bool:
    return bool(reply)


def _pairs(reply: Any) -> dict[bytes, bytes]:
    return dict(zip(reply[::2], reply[1::2], strict=True)) if reply else {}


def _scored(reply: Any) -> list[tuple[bytes, float]]:
    return [(member, float(score)) for member, score in zip(reply[::2], reply[1::2], strict=True)]


def _scan(reply: Any) -> tuple[int, list[bytes]]:
    return int(reply[0]), list(reply[1])


class Commands:
    """The commands, each made by ``_call(args, convert)``: awaited on the client, queued on a pipeline."""

    def _call(self, args: list[Arg], convert: Callable[[Any], Any] | None = None) -> Any:
        raise NotImplementedError

    def execute_command(self, *args: Arg) -> Any:
        return self._call(list(args))

    def ping(self) -> Any:
        return self._call(["PING"], lambda reply: reply in (b"PONG", "PONG"))

    def get(self, name: Arg) -> Any:
        return self._call(["GET", name])

    def set(self, name: Arg, value: Arg, ex: int | None = None, px: int | None = None, nx: bool = False,
            xx: bool = False, keepttl: bool = False) -> Any:
        args: list[Arg] = ["SET", name, value]
        if ex is not None:
            args += ["EX", int(ex)]
        if px is not None:
            args += ["PX", int(px)]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        if keepttl:
            args.append("KEEPTTL")
        return self._call(args, _ok)

    def delete(self, *names: Arg) -> Any:
        return self._call(["DEL", *names])

    def exists(self, *names: Arg) -> Any:
        return self._call(["EXISTS", *names])

    def expire(self, name: Arg, time: int, nx: bool = False) -> Any:
        return self._call(["EXPIRE", name, int(time), *(["NX"] if nx else [])], _bool)

    def pexpire(self, name: Arg, time: int) -> Any:
        return self._call(["PEXPIRE", name, int(time)], _bool)

    def ttl(self, name: Arg) -> Any:
        return self._call(["TTL", name])

    def pttl(self, name: Arg) -> Any:
        return self._call(["PTTL", name])

    def keys(self, pattern: Arg = "*") -> Any:
        return self._call(["KEYS", pattern])

    def flushdb(self) -> Any:
        return self._call(["FLUSHDB"], _ok)

    def type(self, name: Arg) -> Any:
        return self._call(["TYPE", name])

    def incr(self, name: Arg, amount: int = 1) -> Any:
        return self._call(["INCRBY", name, amount])

    def incrby(self, name: Arg, amount: int = 1) -> Any:
        return self._call(["INCRBY", name, amount])

    def hget(self, name: Arg, key: Arg) -> Any:
        return self._call(["HGET", name, key])

    def hset(self, name: Arg, key: Arg | None = None, value: Arg | None = None,
             mapping: Mapping[Arg, Arg] | None = None) -> Any:
        args: list[Arg] = ["HSET", name]
        if key is not None:
            args += [key, value]  # type: ignore[list-item]
        for field, item in (mapping or {}).items():
            args += [field, item]
        if len(args) == 2:
            raise RedisError("HSET with no field")
        return self._call(args)

    def hsetnx(self, name: Arg, key: Arg, value: Arg) -> Any:
        return self._call(["HSETNX", name, key, value], _bool)

    def hgetall(self, name: Arg) -> Any:
        return self._call(["HGETALL", name], _pairs)

    def hmget(self, name: Arg, keys: Arg | Iterable[Arg], *more: Arg) -> Any:
        listed = [keys] if isinstance(keys, bytes | str | int | float) else list(keys)
        return self._call(["HMGET", name, *listed, *more])

    def hdel(self, name: Arg, *keys: Arg) -> Any:
        return self._call(["HDEL", name, *keys])

    def hincrby(self, name: Arg, key: Arg, amount: int = 1) -> Any:
        return self._call(["HINCRBY", name, key, amount])

    def hlen(self, name: Arg) -> Any:
        return self._call(["HLEN", name])

    def sadd(self, name: Arg, *values: Arg) -> Any:
        return self._call(["SADD", name, *values])

    def srem(self, name: Arg, *values: Arg) -> Any:
        return self._call(["SREM", name, *values])

    def smembers(self, name: Arg) -> Any:
        return self._call(["SMEMBERS", name], set)

    def lrange(self, name: Arg, start: int, end: int) -> Any:
        return self._call(["LRANGE", name, start, end])

    def zadd(self, name: Arg, mapping: Mapping[Arg, float], nx: bool = False, xx: bool = False) -> Any:
        args: list[Arg] = ["ZADD", name, *(["NX"] if nx else []), *(["XX"] if xx else [])]
        for member, score in mapping.items():
            args += [score, member]
        return self._call(args)

    def zrem(self, name: Arg, *values: Arg) -> Any:
        return self._call(["ZREM", name, *values])

    def zcard(self, name: Arg) -> Any:
        return self._call(["ZCARD", name])

    def zrange(self, name: Arg, start: int, end: int, desc: bool = False, withscores: bool = False) -> Any:
        args: list[Arg] = ["ZRANGE", name, start, end, *(["REV"] if desc else [])]
        if withscores:
            return self._call([*args, "WITHSCORES"], _scored)
        return self._call(args)

    def zrangebyscore(self, name: Arg, min: Arg, max: Arg, start: int | None = None,
                      num: int | None = None, withscores: bool = False) -> Any:
        args: list[Arg] = ["ZRANGEBYSCORE", name, min, max]
        if start is not None and num is not None:
            args += ["LIMIT", start, num]
        if withscores:
            return self._call([*args, "WITHSCORES"], _scored)
        return self._call(args)

    def zremrangebyscore(self, name: Arg, min: Arg, max: Arg) -> Any:
        return self._call(["ZREMRANGEBYSCORE", name, min, max])

    def eval(self, script: Arg, numkeys: int, *keys_and_args: Arg) -> Any:
        return self._call(["EVAL", script, numkeys, *keys_and_args])

    def evalsha(self, sha: Arg, numkeys: int, *keys_and_args: Arg) -> Any:
        return self._call(["EVALSHA", sha, numkeys, *keys_and_args])

    def script_load(self, script: Arg) -> Any:
        return self._call(["SCRIPT", "LOAD", script], lambda reply: reply.decode() if isinstance(reply, bytes)
                          else reply)

    def scan(self, cursor: int = 0, match: Arg | None = None, count: int | None = None) -> Any:
        args: list[Arg] = ["SCAN", cursor]
        if match is not None:
            args += ["MATCH", match]
        if count is not None:
            args += ["COUNT", count]
        return self._call(args, _scan)


class _Connection:
    """One socket to Redis and the futures of the commands written to it, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.writer = writer
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        """The future of each command written and not answered yet, with the time it was written."""
        self.broken: BaseException | None = None
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if not self.waiting:
                        raise ConnectionError("a reply no command waited for")
                    future, _ = self.waiting.popleft()
                    if not future.done():  # a caller that gave up (cancelled) leaves its reply unread
                        future.set_result(reply)
        except asyncio.CancelledError:
            self.close(ConnectionError("connection closed"))
            raise
        except Exception as exc:  # the socket, or a reply the parser refuses
            self.close(exc if isinstance(exc, RedisError) else ConnectionError(f"{type(exc).__name__}: {exc}"))

    def send(self, payload: bytes, replies: int) -> list[asyncio.Future[Any]]:
        """Write ``payload`` and return a future for each of its ``replies``."""
        if self.broken is not None:
            raise ConnectionError(str(self.broken))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(replies)]
        self.writer.write(payload)
        now = loop.time()
        self.waiting.extend((future, now) for future in futures)
        return futures

    def overdue(self, limit: float) -> bool:
        """Whether the oldest command waiting was written more than ``limit`` seconds ago (the connection
        hangs: its caller may have given up and gone, no timeout of its own closed it)."""
        return bool(self.waiting) and asyncio.get_running_loop().time() - self.waiting[0][1] > limit

    def close(self, why: BaseException) -> None:
        """Fail every command waiting on this connection and close it."""
        if self.broken is None:
            self.broken = why
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(str(why)) if not isinstance(why, RedisError) else why)
        self.writer.close()
        if asyncio.current_task() is not self.task:
            self.task.cancel()


class Redis(Commands):
    """The client: redis-py's ``redis.asyncio.Redis`` for the commands of ``Commands`` (bytes replies)."""

    def __init__(self, host: str = "localhost", port: int = 6379, db: int = 0, *, username: str | None = None,
                 password: str | None = None, unix_socket_path: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, socket_timeout: float | None = None,
                 socket_connect_timeout: float | None = None):
        self.host, self.port, self.db = host, port, db
        self.username, self.password, self.unix_socket_path = username, password, unix_socket_path
        self.ssl_context = ssl_context
        self.socket_timeout = socket_timeout
        self.socket_connect_timeout = socket_connect_timeout if socket_connect_timeout is not None else socket_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Redis:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, the system's CAs) or
        ``unix:///path?db=N``; ``options`` as the constructor takes them."""
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        settings: dict[str, Any] = {
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
        }
        if parts.scheme == "unix":
            settings["unix_socket_path"] = unquote(parts.path)
            settings["db"] = int(query.get("db", 0))
        elif parts.scheme in ("redis", "rediss"):
            settings["host"] = parts.hostname or "localhost"
            settings["port"] = parts.port or 6379
            path = parts.path.strip("/")
            settings["db"] = int(path or query.get("db", 0))
            if parts.scheme == "rediss":
                settings["ssl_context"] = ssl.create_default_context()
        else:
            raise ValueError(f"not a Redis URL: {parts.scheme}://")
        return cls(**{**settings, **options})

    def __repr__(self) -> str:
        where = self.unix_socket_path or f"{self.host}:{self.port}"
        return f"<Redis {where}/{self.db}>"

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.broken is None and self.socket_timeout is not None \
                and connection.overdue(self.socket_timeout):
            connection.close(TimeoutError("Timeout reading from Redis"))
        if connection is not None and connection.broken is None:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            connection = self._connection
            if connection is not None and connection.broken is None:
                return connection
            try:
                async with asyncio.timeout(self.socket_connect_timeout):
                    if self.unix_socket_path:
                        reader, writer = await asyncio.open_unix_connection(self.unix_socket_path)
                    else:
                        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl_context)
            except builtins.TimeoutError:
                raise TimeoutError("Timeout connecting to Redis") from None
            except OSError as exc:
                raise ConnectionError(f"Error connecting to Redis {self!r}: {exc}") from exc
            connection = _Connection(reader, writer)
            hello: list[list[Arg]] = []
            if self.password is not None:
                hello.append(["AUTH", *([self.username] if self.username else []), self.password])
            if self.db:
                hello.append(["SELECT", self.db])
            if hello:
                futures = connection.send(b"".join(_encode(c) for c in hello), len(hello))
                for reply in await self._replies(connection, futures):
                    if isinstance(reply, Exception):
                        connection.close(ConnectionError(str(reply)))
                        raise ConnectionError(f"Redis refused the connection: {reply}")
            self._connection = connection
            return connection

    async def _replies(self, connection: _Connection, futures: list[asyncio.Future[Any]]) -> list[Any]:
        """The replies of ``futures``, once what was written is flushed; on timeout the connection is closed
        (later replies would be taken for these) and ``TimeoutError`` raised."""
        try:
            async with asyncio.timeout(self.socket_timeout):
                await connection.writer.drain()
                return [await future for future in futures]
        except builtins.TimeoutError:
            connection.close(TimeoutError("Timeout reading from Redis"))
            raise TimeoutError("Timeout reading from Redis") from None
        except OSError as exc:  # the socket broke under the write
            connection.close(ConnectionError(f"{type(exc).__name__}: {exc}"))
            raise ConnectionError(f"Error writing to Redis: {exc}") from exc

    async def _send(self, payload: bytes, replies: int) -> list[Any]:
        connection = await self._connect()
        return await self._replies(connection, connection.send(payload, replies))

    async def _call(self, args: list[Arg], convert: Callable[[Any], Any] | None = None) -> Any:
        (reply,) = await self._send(_encode(args), 1)
        if isinstance(reply, hiredis.ReplyError):
            raise _error(reply)
        return convert(reply) if convert is not None else reply

    async def scan_iter(self, match: Arg | None = None, count: int | None = None) -> AsyncIterator[bytes]:
        cursor = None
        while cursor != 0:
            cursor, keys = await self.scan(cursor or 0, match=match, count=count)
            for key in keys:
                yield key

    def pipeline(self, transaction: bool = True) -> Pipeline:
        return Pipeline(self, transaction)

    def register_script(self, script: str) -> Script:
        return Script(self, script)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(ConnectionError("client closed"))
            await asyncio.gather(connection.task, return_exceptions=True)


class Pipeline(Commands):
    """Commands queued and sent in one write by ``execute`` (inside MULTI ... EXEC when ``transaction``)."""

    def __init__(self, client: Redis, transaction: bool):
        self.client = client
        self.transaction = transaction
        self.commands: list[tuple[list[Arg], Callable[[Any], Any] | None]] = []

    def _call(self, args: list[Arg], convert: Callable[[Any], Any] | None = None) -> Pipeline:
        self.commands.append((args, convert))
        return self

    def __len__(self) -> int:
        return len(self.commands)

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.commands = []

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self.commands = self.commands, []
        if not commands:
            return []
        payload = [_encode(args) for args, _ in commands]
        if self.transaction:
            payload = [_encode(["MULTI"]), *payload, _encode(["EXEC"])]
        replies = await self.client._send(b"".join(payload), len(payload))
        if self.transaction:
            queued = [reply for reply in replies[1:-1] if isinstance(reply, hiredis.ReplyError)]
            if queued:  # a command Redis refused to queue: EXEC was aborted
                raise _error(queued[0])
            if isinstance(replies[-1], hiredis.ReplyError):
                raise _error(replies[-1])
            replies = replies[-1]
            if replies is None:
                raise ResponseError("transaction aborted")
        out: list[Any] = []
        for reply, (_, convert) in zip(replies, commands, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                if raise_on_error:
                    raise _error(reply)
                out.append(_error(reply))
            else:
                out.append(convert(reply) if convert is not None else reply)
        return out


class Script:
    """A Lua script called by its SHA1, loaded on the server when it does not have it (redis-py's ``Script``)."""

    def __init__(self, client: Redis, script: str):
        self.client = client
        self.script = script
        self.sha = script_sha(script)

    async def __call__(self, keys: Iterable[Arg] = (), args: Iterable[Arg] = (), client: Redis | None = None) -> Any:
        target = client or self.client
        keys, args = list(keys), list(args)
        try:
            return await target.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await target.script_load(self.script)
            return await target.evalsha(self.sha, len(keys), *keys, *args)


def from_url(url: str, **options: Any) -> Redis:
    """A client for ``url`` (``Redis.from_url``)."""
    return Redis.from_url(url, **options)
