"""Alembic environment: async engine, the URL set by shared.db.upgrade."""

from __future__ import annotations

import asyncio
import importlib
import re
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.tables import metadata

# Each service declares its tables on the one metadata in a module of its own. They are
# gathered by name, for autogenerate's comparison: shared/ imports no service (an
# import-linter contract), and the migrations themselves name their tables explicitly.
TABLE_MODULES = ("services.scorer.tables", "services.labels.tables", "services.quality.tables")
for module in TABLE_MODULES:
    importlib.import_module(module)

config = context.config
target_metadata = metadata
# The hash partitions of the label store (migration 0008) are PostgreSQL's, not tables
# of the metadata: autogenerate must not propose dropping them.
PARTITION = re.compile(r"^(label_events|label_version_changes)_p\d\d(_.*)?$")


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
                   ) -> bool:
    table = getattr(obj, "table", obj) if type_ == "index" else obj
    table_name = getattr(table, "name", name) or ""
    return not (reflected and PARTITION.match(table_name))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "shared.db.upgrade sets sqlalchemy.url"
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Serialize concurrent upgrades (several services starting at once).
            await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
