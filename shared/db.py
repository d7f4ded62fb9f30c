"""Database engine, idempotent batch inserts and migrations (PostgreSQL or SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")


def make_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so four processes can share it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


STATEMENT_ROWS_MAX = 512  # the most rows one statement of a bounded-shape batch holds


def statement_sizes(n: int) -> list[int]:
    """How many rows each statement of an ``n``-row batch holds: powers of two, largest
    first (37 -> 32, 4, 1), none above :data:`STATEMENT_ROWS_MAX`.

    A multi-row INSERT or an IN list is one SQL text per row count, and SQLAlchemy's
    asyncpg dialect keeps the last 100 prepared statements of each pooled connection,
    each with its text and a codec per parameter: batches of every size from 6 to 400
    left 37 MiB in one connection's cache, so a consumer's memory grew with each batch
    size it had not had yet (the quality service, issue 13: +30% over a soak). Powers of
    two bound the texts to ten a statement, whatever the batch sizes.
    """
    sizes = [STATEMENT_ROWS_MAX] * (n // STATEMENT_ROWS_MAX)
    rest = n % STATEMENT_ROWS_MAX
    while rest:
        top = 1 << (rest.bit_length() - 1)
        sizes.append(top)
        rest -= top
    return sizes


def statement_chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """``values`` in consecutive chunks of :func:`statement_sizes`."""
    start = 0
    for size in statement_sizes(len(values)):
        yield values[start:start + size]
        start += size


def _insert_of(conn: AsyncConnection) -> Any:
    """The dialect's INSERT construct (both have ON CONFLICT)."""
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


async def insert_new(conn: AsyncConnection, table: Table,
                     rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Insert rows; a row whose key already exists changes nothing (redelivery is harmless).

    Returns the keys (the first primary key column) of the rows actually inserted.
    """
    if not rows:
        return []
    insert = _insert_of(conn)
    # Rows go as parameters of one cached statement (SQLAlchemy's "insertmanyvalues"
    # batches them into multi-row INSERTs), not as literal VALUES compiled afresh for
    # every batch: compiling 500 rows took about 1 s of CPU, and made the quality
    # consumer fall behind 1,000 labels/s. RETURNING tells which rows were new. The rows
    # go in chunks of a few fixed sizes (statement_sizes): a multi-row INSERT is one SQL
    # text, and one prepared statement, per row count.
    key = next(iter(table.primary_key.columns or table.columns))
    statement = insert(table).on_conflict_do_nothing().returning(key)
    inserted: list[Any] = []
    for chunk in statement_chunks(rows):
        inserted += (await conn.execute(statement, list(chunk))).scalars().all()
    return inserted


async def upsert(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, replacing the row of the same primary key where one exists.

    One ``INSERT ... ON CONFLICT (key) DO UPDATE`` a chunk: the key's index finds each
    row. A DELETE of the same rows by an IN list first, as before, left the plan to the
    planner, and on a table that had grown faster than its statistics (a large project's
    first consensus) it scanned all of the project's rows for every chunk: 1.6 s a chunk
    of 512 at 300,000 rows, minutes for one settle.
    """
    if not rows:
        return
    insert = _insert_of(conn)
    keys = [c.name for c in table.primary_key.columns]
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys})
    for chunk in statement_chunks(rows):
        await conn.execute(statement, list(chunk))


async def insert_ignoring_duplicates(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> int:
    """Insert rows; a row whose key already exists changes nothing (redelivery is harmless).

    Returns the number of rows actually inserted.
    """
    return len(await insert_new(conn, table, rows))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the schema to ``revision`` (all branch heads by default); safe to run again."""
    from alembic import command

    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str) -> None:
    """Alembic runs its own event loop; keep it off the caller's."""
    await asyncio.to_thread(upgrade, url)
