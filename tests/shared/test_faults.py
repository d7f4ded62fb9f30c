"""Which failures are the infrastructure's (never held against an entry)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
import redis.exceptions as redis_errors
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from shared.faults import is_infrastructure


def _wrapped(cls, orig, invalidated=False):
    return cls("INSERT INTO label_events ...", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed"),  # asyncpg connecting to a stopped server
    TimeoutError(),
    redis_errors.ConnectionError("Error 111 connecting"),
    redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
    redis_errors.TimeoutError(),
    redis_errors.ReadOnlyError("You can't write against a read only replica."),
    _wrapped(OperationalError, Exception("the database system is shutting down")),
    _wrapped(InterfaceError, asyncpg.ConnectionDoesNotExistError("connection was closed")),
    _wrapped(DBAPIError, Exception("connection reset"), invalidated=True),
    _wrapped(DBAPIError, asyncpg.CannotConnectNowError("the database system is starting up")),
    _wrapped(DBAPIError, asyncpg.exceptions.AdminShutdownError("terminating connection")),
    httpx.ConnectError("peer down"),
], ids=lambda e: type(e).__name__)
def test_unavailable_stores_are_the_infrastructures_fault(exc):
    assert is_infrastructure(exc)


def test_a_cause_raised_from_counts():
    try:
        try:
            raise ConnectionResetError(104, "reset by peer")
        except ConnectionResetError as inner:
            raise RuntimeError("could not store the batch") from inner
    except RuntimeError as exc:
        assert is_infrastructure(exc)


@pytest.mark.parametrize("exc", [
    ValueError("bad label"),
    KeyError("project"),
    _wrapped(IntegrityError, Exception("violates check constraint")),
    _wrapped(DBAPIError, Exception("value too long for type character varying(64)")),
    redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
], ids=lambda e: type(e).__name__)
def test_content_failures_are_the_entries(exc):
    assert not is_infrastructure(exc)


def test_an_error_raised_while_handling_a_connection_error_is_not_one():
    try:
        try:
            raise ConnectionError("gone")
        except ConnectionError:
            raise ValueError("a bug in the handler's own error path")  # noqa: B904
    except ValueError as exc:
        assert not is_infrastructure(exc)
