"""The pipelining Redis link against real Redis: order, cancellation, loss, timeout, auth."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError

from shared.redislink import RedisLink


def _nothing() -> str:
    """A list key nobody pushes to: BLPOP on it blocks this connection alone."""
    return f"link-empty-{uuid.uuid4().hex}"


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(redis):
    link = RedisLink(redis)
    try:
        replies = await asyncio.gather(*(link.execute("ECHO", f"call-{i}") for i in range(500)))
        assert replies == [f"call-{i}".encode() for i in range(500)]
        ids = await asyncio.gather(*(link.execute("CLIENT", "ID") for _ in range(50)))
        assert len(set(ids)) == 1  # one connection served them all
    finally:
        await link.aclose()


async def test_it_uses_the_clients_database_and_returns_error_replies(redis, settings):
    key = f"link-{uuid.uuid4().hex}"
    link = RedisLink(redis)
    try:
        assert await link.execute("SET", key, "here") == b"OK"
        assert await redis.get(key) == b"here"  # the same database as the client
        error = await link.execute("INCR", key)
        assert isinstance(error, ResponseError) and "not an integer" in str(error)
        assert await link.execute("GET", key) == b"here"  # the link still works
    finally:
        await redis.delete(key)
        await link.aclose()


async def test_a_cancelled_call_leaves_no_reply_behind(redis):
    link = RedisLink(redis)
    try:
        slow = asyncio.ensure_future(link.execute("BLPOP", _nothing(), 0.3))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await asyncio.gather(*(link.execute("ECHO", f"mine-{i}") for i in range(3))) \
            == [b"mine-0", b"mine-1", b"mine-2"]
    finally:
        await link.aclose()


async def test_a_lost_connection_fails_the_waiting_calls_and_the_next_call_reconnects(redis):
    link = RedisLink(redis)
    try:
        client_id = await link.execute("CLIENT", "ID")
        waiting = asyncio.ensure_future(link.execute("BLPOP", _nothing(), 5))
        await asyncio.sleep(0.05)
        assert await redis.execute_command("CLIENT", "KILL", "ID", client_id) == 1
        with pytest.raises(ConnectionError, match="lost"):
            await waiting
        assert await link.execute("ECHO", "again") == b"again"
        assert await link.execute("CLIENT", "ID") != client_id  # a new connection
    finally:
        await link.aclose()


async def test_a_reply_that_does_not_come_in_time_fails_the_call(redis):
    link = RedisLink(redis, timeout=0.2)
    try:
        with pytest.raises(ConnectionError, match="no reply"):
            await link.execute("BLPOP", _nothing(), 2)
        assert await link.execute("ECHO", "after") == b"after"
    finally:
        await link.aclose()


async def test_it_authenticates_as_the_urls_user(redis, settings):
    user, password = f"link-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    host_part = settings.redis_url.split("://", 1)[1]
    client = aioredis.from_url(f"redis://{user}:{password}@{host_part}")
    wrong = aioredis.from_url(f"redis://{user}:wrong@{host_part}")
    try:
        link = RedisLink(client)
        assert await link.execute("ACL", "WHOAMI") == user.encode()
        await link.aclose()
        with pytest.raises(ConnectionError, match="refused AUTH"):
            await RedisLink(wrong).execute("PING")
    finally:
        await redis.execute_command("ACL", "DELUSER", user)
        await client.aclose()
        await wrong.aclose()


def test_it_works_under_uvloop(settings):
    """The services run on uvloop, whose transports are not asyncio.Transport subclasses."""
    import uvloop

    async def run() -> list[bytes]:
        client = aioredis.from_url(settings.redis_url)
        link = RedisLink(client)
        try:
            return await asyncio.gather(*(link.execute("ECHO", str(i)) for i in range(20)))
        finally:
            await link.aclose()
            await client.aclose()

    assert uvloop.run(run()) == [str(i).encode() for i in range(20)]
