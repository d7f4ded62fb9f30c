"""Whose fault a failure is: the infrastructure's, or the entries'.

A consumer treats the two differently. A database or Redis that is down, restarting or
slow fails every batch alike; retrying entry by entry or counting the failure towards an
entry's delivery limit would dead-letter valid events for an outage (what a 60 s
PostgreSQL outage did to every label it overlapped). Anything else a handler raises is
taken to be about the entries it was given.
"""

from __future__ import annotations

import asyncpg
import httpx
import redis.exceptions as redis_errors
import sqlalchemy.exc as sa_errors

# Raised directly or found as the cause of another error (SQLAlchemy wraps the driver's).
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    OSError,  # connection refused or reset, no route; ConnectionError is one
    TimeoutError,  # asyncio's too, since Python 3.11
    redis_errors.ConnectionError,  # BusyLoadingError (a restart loading its data) is one
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a failover in progress: writes reach the old primary
    redis_errors.TryAgainError,
    # A Redis Cluster failing over: a slot without a master for a few seconds, a client
    # whose retries ran out before the replica took over, a slot map being refreshed.
    redis_errors.ClusterError,  # ClusterDownError, MasterDownError are ones
    redis_errors.SlotNotCoveredError,
    redis_errors.MovedError,  # a redirect outlived the client's refresh of the slot map
    sa_errors.OperationalError,  # the server's side: shutting down, out of connections
    sa_errors.InterfaceError,  # the client's side: the connection is closed
    sa_errors.TimeoutError,  # no pooled connection free in time
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError and the 08xxx states
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin or crash shutdown, starting up
    httpx.TransportError,  # a peer service unreachable
)


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says a store or peer is unavailable.

    Follows the explicit causes (``raise ... from``, SQLAlchemy's ``orig``), not the
    implicit context: an error raised while handling a connection error is not one.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, INFRASTRUCTURE):
            return True
        if isinstance(err, sa_errors.DBAPIError) and err.connection_invalidated:
            return True
        for cause in (getattr(err, "orig", None), err.__cause__):
            if isinstance(cause, BaseException):
                todo.append(cause)
    return False


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was explicitly raised from, nearest first."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop(0)
        if any(err is seen for seen in out):
            continue
        out.append(err)
        for cause in (getattr(err, "orig", None), err.__cause__):
            if isinstance(cause, BaseException):
                todo.append(cause)
    return out


def unavailable_store(exc: BaseException) -> str | None:
    """Which store an infrastructure error says is unavailable, in words for a person
    (``Redis``, ``the database``, ``a peer service``); None if it is not one."""
    if not is_infrastructure(exc):
        return None
    for err in _causes(exc):
        if isinstance(err, redis_errors.RedisError):
            return "Redis"
        if isinstance(err, sa_errors.SQLAlchemyError | asyncpg.PostgresError
                      | asyncpg.InterfaceError):
            return "the database"
        if isinstance(err, httpx.TransportError):
            return "a peer service"
    return "a store this service needs"
