"""Database engine, idempotent batch inserts and migrations (PostgreSQL or SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")


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


async def insert_ignoring_duplicates(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> int:
    """Insert rows; a row whose key already exists changes nothing (redelivery is harmless).

    Returns the number of rows actually inserted.
    """
    if not rows:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    # Rows go as parameters of one cached statement (SQLAlchemy's "insertmanyvalues"
    # batches them into multi-row INSERTs), not as literal VALUES compiled afresh for
    # every batch: compiling 500 rows took about 1 s of CPU, and made the quality
    # consumer fall behind 1,000 labels/s. RETURNING tells which rows were new.
    key = next(iter(table.primary_key.columns or table.columns))
    statement = insert(table).on_conflict_do_nothing().returning(key)
    result = await conn.execute(statement, list(rows))
    return len(result.all())


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
