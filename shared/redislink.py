"""One pipelining Redis connection for hot script calls (EVALSHA and the like); on a
Redis Cluster, one a master (:class:`ClusterLink`).

redis-py gives each concurrent call a connection of its own from its pool, and
version 8 wraps every write in ``asyncio.wait_for`` (a new task) and every read
in a timeout context, because its default socket timeout is 5 s. Under the
reviewer API's load that per-call machinery cost as much as the call did. A
:class:`RedisLink` instead sends every command issued in one event-loop turn in
one write on one connection and hands the replies back in order as they arrive
(Redis answers a connection's commands in the order it sent them), which is what
clients with "auto-pipelining" do (ioredis, redis-rs). Replies are parsed by
hiredis, the C parser redis-py itself uses.

Guarantees:
- A caller that is cancelled leaves its reply behind on the connection, where it
  is read and dropped: the next caller never receives another's reply.
- A reply that does not come within ``timeout`` seconds, or a lost connection,
  fails every call still waiting on that connection with ``ConnectionError``; the
  next call opens a new connection. Nothing is retried: a script may have run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, ResponseError


class Unsupported(Exception):
    """The client connects in a way the link does not (TLS, credential providers)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._watchdog = self._loop.call_later(self.timeout / 2, self._watch)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while (reply := self.reader.gets()) is not False:
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._abort(ConnectionError("Redis sent a reply that no call waits for"))
                return
            future, _ = waiting.popleft()
            if not future.done():  # a cancelled caller's reply is read and dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.lost or exc or ConnectionError("the Redis connection was closed")
        if self._watchdog is not None:
            self._watchdog.cancel()
        error = ConnectionError(f"lost the Redis connection: {self.lost}")
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    # --- sending --------------------------------------------------------------------
    def call(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise ConnectionError(f"lost the Redis connection: {self.lost}")
        future = self._loop.create_future()
        self.waiting.append((future, time.monotonic()))
        self.outgoing.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self.outgoing = self.outgoing, []
        if self.transport is not None and self.lost is None and out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _watch(self) -> None:
        """Give up on a connection whose oldest call has waited longer than the timeout."""
        if self.waiting and time.monotonic() - self.waiting[0][1] > self.timeout:
            self._abort(ConnectionError(f"no reply from Redis within {self.timeout:g} s"))
            return
        self._watchdog = self._loop.call_later(self.timeout / 2, self._watch)

    def _abort(self, reason: BaseException) -> None:
        self.lost = reason
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails the waiting calls

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RedisLink:
    """Commands over one pipelining connection, opened on first use and after a loss."""

    def __init__(self, client: Redis, timeout: float | None = None) -> None:
        pool = client.connection_pool
        self._setup(dict(pool.connection_kwargs), pool.connection_class, timeout)

    @classmethod
    def to_node(cls, kwargs: dict[str, Any], connection_class: type,
                timeout: float | None = None) -> RedisLink:
        """A link to one node of a cluster (its ``ClusterNode.connection_kwargs``)."""
        link = cls.__new__(cls)
        link._setup(dict(kwargs), connection_class, timeout)
        return link

    def _setup(self, kwargs: dict[str, Any], connection_class: type,
               timeout: float | None) -> None:
        self._kwargs = kwargs
        self._class = connection_class
        if self._class not in (Connection, UnixDomainSocketConnection) or self._kwargs.get(
            "credential_provider"
        ) or self._kwargs.get("ssl") or self._kwargs.get("protocol") not in (None, 2, "2"):
            raise Unsupported(f"{self._class.__name__} connections")
        self.timeout = timeout or self._kwargs.get("socket_timeout") or 5.0
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Future[_Protocol] | None = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        kw = self._kwargs
        connect_timeout = kw.get("socket_connect_timeout") or self.timeout
        if self._class is UnixDomainSocketConnection:
            opening = loop.create_unix_connection(lambda: _Protocol(self.timeout), kw["path"])
        else:
            opening = loop.create_connection(lambda: _Protocol(self.timeout),
                                             kw.get("host", "localhost"), kw.get("port", 6379))
        try:
            _, protocol = await asyncio.wait_for(opening, connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc}") from exc
        setup: list[tuple[Any, ...]] = []
        if kw.get("password"):
            user = kw.get("username")
            setup.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if kw.get("db"):
            setup.append(("SELECT", kw["db"]))
        for command in setup:
            reply = await protocol.call(hiredis.pack_command(command))
            if isinstance(reply, ResponseError):
                protocol.close()
                raise ConnectionError(f"Redis refused {command[0]}: {reply}")
        return protocol

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._opening is None:  # one opening at a time; concurrent callers share it
            self._opening = asyncio.ensure_future(self._open())
        try:
            protocol = self._protocol = await asyncio.shield(self._opening)
        finally:
            if self._opening is not None and self._opening.done():
                self._opening = None
        return protocol

    async def execute(self, *command: Any) -> Any:
        """Send one command; its reply (an error reply comes back as ResponseError)."""
        protocol = await self._connected()
        return await protocol.call(hiredis.pack_command(command))

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


# Replies that say the command did not run on this node: the slot is elsewhere (MOVED,
# ASK), being moved (TRYAGAIN), or has no master yet (CLUSTERDOWN) during a failover.
_NOT_RUN = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


class ClusterLink:
    """Auto-pipelining on a Redis Cluster: one :class:`RedisLink` a master, each command
    sent to the master of its key's slot as redis-py's cluster client last saw the slot
    map (every key of a loopwise script shares one slot, :mod:`shared.sharding`).

    A reply that says the command did not run there (a redirect, TRYAGAIN, CLUSTERDOWN)
    refreshes the slot map and sends the command once more through redis-py's cluster
    client, which follows redirects itself. A lost connection is not retried (a script
    may have run): the call fails with ``ConnectionError`` and the slot map is read
    again before the next call, so a replica that took over is found.
    """

    def __init__(self, client: RedisCluster, timeout: float | None = None) -> None:
        kwargs = client.get_connection_kwargs()
        if kwargs.get("connection_class", Connection) is not Connection or kwargs.get(
            "ssl") or kwargs.get("credential_provider"):
            raise Unsupported("TLS or credential-provider cluster connections")
        self.client = client
        self.timeout = timeout
        self._links: dict[str, RedisLink] = {}
        self._stale = False

    async def _link_for(self, key: str) -> RedisLink:
        await self.client.initialize()  # once: reads the slot map
        if self._stale:
            self._stale = False
            await self._drop_all()
            try:
                await self.client.nodes_manager.initialize()
            except BaseException:
                self._stale = True
                raise
        node = self.client.nodes_manager.get_node_from_slot(self.client.keyslot(key))
        link = self._links.get(node.name)
        if link is None:
            link = self._links[node.name] = RedisLink.to_node(
                node.connection_kwargs, node.connection_class, self.timeout)
        return link

    async def execute(self, key: str, *command: Any) -> Any:
        """Send ``command`` (whose keys all share ``key``'s slot) to that slot's master;
        its reply (an error reply comes back as ResponseError)."""
        link = await self._link_for(key)
        try:
            reply = await link.execute(*command)
        except ConnectionError:
            self._stale = True
            raise
        if isinstance(reply, ResponseError) and str(reply).startswith(_NOT_RUN):
            self._stale = True
            try:
                return await self.client.execute_command(*command)
            except ResponseError as exc:
                return exc
        return reply

    async def _drop_all(self) -> None:
        links, self._links = self._links, {}
        for link in links.values():
            await link.aclose()

    async def aclose(self) -> None:
        await self._drop_all()
