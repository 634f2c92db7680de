"""The services' Redis client against a real Redis: redis-py's replies for each command, pipelines and
transactions, scripts, concurrent callers on one connection, and outages through a proxy."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redispy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat_platform import redisclient
from tests.support.tcpproxy import TcpProxy


@pytest.fixture
async def both(redis_url: str):
    """This client and redis-py on the same database."""
    ours, theirs = redisclient.from_url(redis_url, socket_timeout=5), redispy.from_url(redis_url)
    yield ours, theirs
    await ours.aclose()
    await theirs.aclose()


async def _same(both, make) -> None:
    """``make(client)`` gives the same reply from both clients (run one after the other on a fresh key set)."""
    ours, theirs = both
    await theirs.flushdb()
    expected = await make(theirs)
    await theirs.flushdb()
    assert await make(ours) == expected


COMMANDS = {
    "set/get": lambda r: _seq(r.set("k", "v", ex=60), r.set("k", "w", nx=True), r.set("k", b"x", xx=True), r.get("k"),
                              r.get("nothing"), r.ttl("k"), r.type("k"), r.set("p", 1, px=5000),
                              _sorted_list(r.keys("*")), r.flushdb(), r.pttl("p")),
    "counters": lambda r: _seq(r.incr("n"), r.incr("n", 5), r.incrby("n", 2), r.expire("n", 30), r.expire("none", 30),
                               r.exists("n", "none", "n"), r.delete("n", "none")),
    "hashes": lambda r: _seq(r.hset("h", mapping={"a": 1, "b": "x", b"c": 2.5}), r.hset("h", "d", "y"),
                             r.hget("h", "a"), r.hgetall("h"), r.hgetall("none"), r.hmget("h", ["a", "zz", "d"]),
                             r.hmget("h", "a", "d"), r.hincrby("h", "a", 4), r.hdel("h", "b", "zz"),
                             r.hsetnx("h", "a", 0), r.hlen("h")),
    "sets and lists": lambda r: _seq(r.sadd("s", "a", "b", "a"), r.smembers("s"), r.srem("s", "a"),
                                     r.execute_command("RPUSH", "l", "1", "2", "3"), r.lrange("l", 0, -1)),
    "sorted sets": lambda r: _seq(r.zadd("z", {"m1": 1.5, "m2": 2, "m3": -1}), r.zadd("z", {"m1": 9}, nx=True),
                                  r.zrange("z", 0, -1), r.zrange("z", 0, 1, withscores=True),
                                  r.zrange("z", 0, -1, desc=True), r.zrangebyscore("z", "-inf", 1.5),
                                  r.zrangebyscore("z", 0, "+inf", start=0, num=1, withscores=True), r.zcard("z"),
                                  r.zrem("z", "m2", "nope"), r.zremrangebyscore("z", 0, 1)),
    "scripts": lambda r: _seq(r.eval("return {KEYS[1], ARGV[1], 7, {1, 'x'}}", 1, "k", "a"),
                              r.script_load("return 1"), r.evalsha("e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 0)),
    "scan": lambda r: _seq(r.set("a1", 1), r.set("a2", 1), r.set("b1", 1), _sorted(r.scan_iter(match="a*", count=1))),
}


async def _seq(*calls):
    return [await call for call in calls]


async def _sorted_list(keys):
    return sorted(await keys)


async def _sorted(keys):
    return sorted([key async for key in keys])


@pytest.mark.parametrize("name", sorted(COMMANDS))
async def test_each_command_replies_as_redis_py_does(both, name: str) -> None:
    await _same(both, COMMANDS[name])


async def test_pipelines_and_transactions_reply_as_redis_py_does(both) -> None:
    async def run(r):
        async with r.pipeline(transaction=True) as pipe:
            pipe.incr("c")
            pipe.expire("c", 100)
            pipe.hset("h", mapping={"f": 1})
            pipe.get("c")
            first = await pipe.execute()
        pipe = r.pipeline(transaction=False)
        pipe.incr("c").hgetall("h").zadd("z", {"a": 1}).zrange("z", 0, -1, withscores=True)
        second = await pipe.execute()
        third = await r.pipeline(transaction=False).execute()
        return first, second, third

    await _same(both, run)


async def test_a_failing_command_in_a_pipeline_raises_or_is_returned(both) -> None:
    ours, _ = both
    await ours.set("text", "abc")
    pipe = ours.pipeline(transaction=False)
    pipe.incr("text").set("after", 1)
    with pytest.raises(redisclient.ResponseError, match="not an integer"):
        await pipe.execute()
    assert await ours.get("after") == b"1"  # the pipeline ran on; the error is raised afterwards
    pipe.incr("text").get("after")
    error, after = await pipe.execute(raise_on_error=False)
    assert isinstance(error, redisclient.ResponseError) and after == b"1"
    async with ours.pipeline(transaction=True) as tx:
        tx.execute_command("NOSUCHCOMMAND").set("never", 1)
        with pytest.raises(redisclient.ResponseError, match="unknown command"):
            await tx.execute()
    assert await ours.exists("never") == 0  # EXEC was aborted


async def test_a_script_is_loaded_when_the_server_does_not_have_it(both) -> None:
    ours, theirs = both
    script = ours.register_script("return {KEYS[1], tonumber(ARGV[1]) + 1}")
    await theirs.script_flush()
    assert await script(keys=["k"], args=[41]) == [b"k", 42]
    assert await theirs.script_exists(script.sha) == [True]
    with pytest.raises(redisclient.NoScriptError):
        await ours.evalsha("0" * 40, 0)


async def test_concurrent_callers_share_the_connection_and_get_their_own_replies(both) -> None:
    ours, _ = both
    replies = await asyncio.gather(*(ours.incr(f"n{i % 7}", i) for i in range(500)),
                                   *(ours.hset("h", f"f{i}", i) for i in range(200)))
    assert sum(replies[:500]) >= sum(range(500))
    assert await ours.hlen("h") == 200
    assert await ours.execute_command("CLIENT", "INFO")  # one connection served them all
    clients = [line for line in (await ours.execute_command("CLIENT", "LIST")).decode().splitlines()
               if "cmd=client" in line]
    assert len(clients) == 1


async def test_a_database_and_a_password_are_sent_before_the_first_command(redis_url: str) -> None:
    plain = redisclient.from_url(redis_url)
    await plain.set("where", "db")
    other = redisclient.from_url(redis_url.rsplit("/", 1)[0] + "/14")
    try:
        assert await other.get("where") is None
        assert await plain.get("where") == b"db"
        wrong = redisclient.from_url(redis_url.replace("redis://", "redis://user:secret@"))
        with pytest.raises(redisclient.ConnectionError, match="refused"):
            await wrong.ping()
    finally:
        await plain.delete("where")
        await plain.aclose()
        await other.aclose()


async def test_an_outage_fails_the_waiting_commands_and_the_next_command_connects_again(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        client = redisclient.from_url(redis_url.replace(f":{port}/", f":{proxy.port}/"), socket_timeout=1,
                                      socket_connect_timeout=1)
        try:
            assert await client.ping() is True
            proxy.cut()
            with pytest.raises(redisclient.RedisError):
                await client.set("k", 1)
            with pytest.raises(redisclient.ConnectionError):  # refused while cut
                await client.get("k")
            proxy.restore()
            assert await client.set("k", 2) is True
            assert await client.get("k") == b"2"

            proxy.delay(3)  # replies later than the socket timeout: the commands waiting fail
            waiting = await asyncio.gather(client.get("k"), client.incr("k"), return_exceptions=True)
            assert [type(reply) for reply in waiting] == [redisclient.TimeoutError, redisclient.TimeoutError]
            proxy.delay(0)
            await asyncio.sleep(3.5)  # what the proxy still held has arrived at Redis
            assert await client.get("k") == b"3"  # the INCR ran: its reply was lost, not the reply of another
        finally:
            await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_their_replies_and_a_hung_connection_is_left(
        redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        client = redisclient.from_url(redis_url.replace(f":{port}/", f":{proxy.port}/"), socket_timeout=2)
        try:
            await client.set("k", "v")
            proxy.delay(0.2)
            slow = asyncio.ensure_future(client.get("k"))
            await asyncio.sleep(0)  # written first
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.incr("n"), 0.1)  # given up before its reply came
            assert await slow == b"v"  # the reply of the command written before it is still its own
            proxy.delay(0)
            assert await client.get("n") == b"1"  # and the given-up INCR's reply was read and dropped

            proxy.delay(3600)  # what is in the proxy now is held for good: this connection hangs
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.ping(), 0.5)  # the caller gives up before the socket timeout
            proxy.restore()
            await asyncio.sleep(2.1)
            assert await client.ping() is True  # on a new connection: the old one's command was overdue
        finally:
            await client.aclose()


_VALUES = st.one_of(st.binary(max_size=200), st.text(max_size=40), st.integers(), st.floats(allow_nan=False))


@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=st.dictionaries(st.binary(max_size=40), st.binary(max_size=200), min_size=1, max_size=6),
       args=st.lists(_VALUES, max_size=6))
async def test_generated_keys_fields_and_arguments_go_and_come_back_as_with_redis_py(both, fields, args) -> None:
    """Any bytes as keys, fields and values, any arguments a script gets (bytes, text, integers, floats):
    both clients send them alike and read back the same replies."""
    key = b"\x00k\r\n" + next(iter(fields))

    async def run(r):
        await r.hset(key, mapping=fields)
        pipe = r.pipeline(transaction=True)
        pipe.hgetall(key).hmget(key, list(fields)).set(key + b":s", next(iter(fields.values()))).get(key + b":s")
        return (await pipe.execute(), await r.eval("return ARGV", 0, *args),
                await r.eval("return KEYS", len(fields), *fields))

    await _same(both, run)
