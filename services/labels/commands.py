"""What the ``loopwise labels|users|token revoke`` commands do, against the database.

The CLI is an operator's tool like ``loopwise token create``: it talks to the
database directly (no running service needed), acts as the named operator
with admin rights, and writes the same audit entries as the HTTP routes,
with the client recorded as ``cli@<host>``.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import auth
from shared.db import make_engine

from . import audit, export, store
from .api import import_labelstudio_export
from .revert import RevertSelector
from .tables import users


def cli_actor(user: str | None = None) -> audit.Actor:
    return audit.Actor(user or getpass.getuser(), "admin", f"cli@{socket.gethostname()}")


async def _with_engine(url: str, work: Callable[[AsyncEngine], Any]) -> Any:
    engine = make_engine(url)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


async def export_version(
    url: str,
    project: str,
    out: IO[bytes],
    *,
    version: str | None = None,
    fmt: str = "jsonl",
    on_start: Callable[[int], None] = lambda total: None,
    on_rows: Callable[[int], None] = lambda n: None,
) -> int:
    """Stream a version's labels to ``out``; report the total, then rows as they go."""

    async def work(engine: AsyncEngine) -> int:
        async with engine.connect() as conn:
            view = await store.resolve_view(conn, project, version)
            total = await store.count_current(conn, project, view)
        on_start(total)
        written = 0

        async def counted(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
            nonlocal written
            async for row in rows:
                written += 1
                if written % 1000 == 0:
                    on_rows(1000)
                yield row

        async with engine.connect() as conn, engine.connect() as side:
            if fmt == "labelstudio":
                chunks = export.labelstudio(
                    counted(store.stream_counting_events(conn, project, view)),
                    lambda ids: store.payloads_of(side, project, ids),
                    lambda ids: store.import_refs_of(side, ids),
                )
            else:
                writer = export.jsonl if fmt == "jsonl" else export.csv_rows
                chunks = writer(counted(store.stream_current(conn, project, view)))
            async for chunk in chunks:
                out.write(chunk)
        on_rows(written % 1000)
        return written

    return await _with_engine(url, work)


async def import_labelstudio_file(
    url: str, project: str, data: bytes, actor: audit.Actor, **options: Any
) -> dict[str, Any]:
    async def work(engine: AsyncEngine) -> dict[str, Any]:
        async with engine.begin() as conn:
            return await import_labelstudio_export(conn, project, data, actor, **options)

    return await _with_engine(url, work)


async def list_versions(url: str, project: str) -> list[dict[str, Any]]:
    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await store.list_versions(conn, project)

    return await _with_engine(url, work)


async def revert(
    url: str,
    project: str,
    actor: audit.Actor,
    *,
    selector: RevertSelector | None = None,
    undo_version: str | None = None,
    message: str = "",
    name: str | None = None,
    dry_run: bool = True,
) -> dict[str, Any]:
    """A revert by selector, or (``undo_version``) the revert of a revert."""

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        async with engine.begin() as conn:
            if undo_version is not None:
                result = await store.unrevert(
                    conn, project, undo_version, author=actor.user_id, message=message,
                    name=name, dry_run=dry_run,
                )  # fmt: skip
                action = "version.unrevert"
            else:
                assert selector is not None
                result = await store.revert(
                    conn, project, selector, author=actor.user_id, message=message, name=name,
                    dry_run=dry_run,
                )  # fmt: skip
                action = "version.revert"
            if not dry_run:
                await audit.record(
                    conn, actor, action, project=project,
                    target=str(result["version"]["number"]),
                    detail={"selector": result["version"]["selector"], "events": result["events"],
                            "message": message},
                )  # fmt: skip
            return result

    return await _with_engine(url, work)


async def revoke_token(url: str, token_id: int, actor: audit.Actor) -> bool:
    async def work(engine: AsyncEngine) -> bool:
        async with engine.begin() as conn:
            was_live = await auth.revoke_token(conn, token_id)
            await audit.record(
                conn, actor, "token.revoke", target=str(token_id), detail={"was_live": was_live}
            )
            return was_live

    return await _with_engine(url, work)


async def user_command(url: str, action: str, actor: audit.Actor, user_id: str | None) -> Any:
    """``list``, ``create`` or ``disable`` users."""

    async def work(engine: AsyncEngine) -> Any:
        async with engine.begin() as conn:
            if action == "list":
                rows = await conn.execute(select(users).order_by(users.c.user_id))
                return [dict(r._mapping) for r in rows.all()]
            assert user_id
            if action == "create":
                await auth.ensure_user(conn, user_id)
            else:
                result = await conn.execute(
                    update(users)
                    .where(users.c.user_id == user_id, users.c.disabled_at.is_(None))
                    .values(disabled_at=auth.datetime.now(auth.UTC))
                )
                if not result.rowcount:
                    raise ValueError(f"no active user {user_id!r}")
            await audit.record(conn, actor, f"user.{action}", target=user_id)
            return user_id

    return await _with_engine(url, work)
