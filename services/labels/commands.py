"""What the ``loopwise labels|users|token revoke`` commands do: the labels service's use
cases (``actions.py``), run from the operator's shell.

The CLI is an operator's tool like ``loopwise token create``: it needs the database and
Redis (to publish what it stores), not a running service; it acts as the named operator
with global admin rights and records the same audit entries as the HTTP routes, with the
client ``cli@<host>``.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import IO, Any, TypeVar

from shared import auth
from shared.bus import publish
from shared.db import make_engine
from shared.peers import Peers
from shared.redisconn import client_for
from shared.settings import Settings

from . import actions, audit, store
from .labelstudio import ANNOTATOR_DOMAIN
from .revert import RevertSelector

T = TypeVar("T")


def cli_actor(user: str | None = None) -> audit.Actor:
    return audit.Actor(user or getpass.getuser(), "admin", f"cli@{socket.gethostname()}")


def operator(actor: audit.Actor) -> auth.Principal:
    """The operator at the shell holds the database: a global admin."""
    return auth.Principal(actor.user_id, "admin", auth.ALL_PROJECTS)


@asynccontextmanager
async def _context(settings: Settings) -> AsyncIterator[actions.Context]:
    engine = make_engine(settings.database_url)
    redis = client_for(settings)

    async def publish_events(stream: str, events: Any) -> list[str]:
        return await publish(redis, stream, events, settings.shards)

    peers = Peers(settings, engine, "cli")
    try:
        yield actions.Context(engine=engine, publish=publish_events,
                              lookup_items=actions.scorer_lookup(peers))
    finally:
        await peers.aclose()
        await redis.aclose()
        await engine.dispose()


async def run(settings: Settings, work: Callable[[actions.Context], Awaitable[T]]) -> T:
    async with _context(settings) as ctx:
        return await work(ctx)


async def export_version(
    settings: Settings,
    project: str,
    out: IO[bytes],
    *,
    version: str | None = None,
    fmt: str = "jsonl",
    item_key: str | None = None,
    annotator_domain: str = ANNOTATOR_DOMAIN,
    on_start: Callable[[int], None] = lambda total: None,
    on_rows: Callable[[int], None] = lambda n: None,
) -> int:
    """Stream a version's labels to ``out``; report the total, then rows as they go."""

    async def work(ctx: actions.Context) -> int:
        async with ctx.engine.connect() as conn:
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

        async for chunk in actions.export_chunks(ctx, project, view, fmt, rows=counted,
                                                 item_key=item_key,
                                                 annotator_domain=annotator_domain):
            out.write(chunk)
        on_rows(written % 1000)
        return written

    return await run(settings, work)


async def import_labelstudio_file(
    settings: Settings, project: str, data: bytes, actor: audit.Actor, **options: Any
) -> dict[str, Any]:
    return await run(settings, lambda ctx: actions.import_labelstudio(
        ctx, actor, project, data, **options))


async def list_versions(settings: Settings, project: str) -> list[dict[str, Any]]:
    async def work(ctx: actions.Context) -> list[dict[str, Any]]:
        async with ctx.engine.connect() as conn:
            return await store.list_versions(conn, project)

    return await run(settings, work)


async def revert(
    settings: Settings,
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
    if undo_version is not None:
        return await run(settings, lambda ctx: actions.unrevert(
            ctx, actor, project, undo_version, message=message, name=name, dry_run=dry_run))
    if selector is None:
        raise ValueError("say what to revert, or which revert to undo")
    return await run(settings, lambda ctx: actions.revert(
        ctx, actor, project, selector, message=message, name=name, dry_run=dry_run))


async def revoke_token(settings: Settings, token_id: int, actor: audit.Actor) -> bool:
    result = await run(settings, lambda ctx: actions.revoke_token(
        ctx, actor, operator(actor), token_id))
    return bool(result["was_live"])


async def create_token(settings: Settings, actor: audit.Actor, user_id: str, role: str,
                       project: str, ttl_days: float | None = None) -> dict[str, Any]:
    """The HTTP route's use case, with the operator as a global admin."""
    return await run(settings, lambda ctx: actions.create_token(
        ctx, actor, operator(actor), user_id, role, project, ttl_days))


async def list_tokens(settings: Settings, *, user: str | None = None,
                      project: str | None = None) -> list[dict[str, Any]]:
    who = operator(cli_actor())
    return await run(settings, lambda ctx: actions.list_tokens(ctx, who, user=user,
                                                               project=project))


async def project_exists(settings: Settings, project: str) -> bool:
    return await run(settings, lambda ctx: actions.project_exists(ctx, project))


async def user_command(settings: Settings, action: str, actor: audit.Actor,
                       user_id: str | None) -> Any:
    """``list``, ``create`` or ``disable`` users."""
    who = operator(actor)
    if action == "list":
        return await run(settings, lambda ctx: actions.list_users(ctx, who))
    if not user_id:
        raise ValueError(f"'{action}' needs a user id")
    if action == "create":
        await run(settings, lambda ctx: actions.create_user(ctx, actor, who, user_id))
    else:
        await run(settings, lambda ctx: actions.disable_user(ctx, actor, who, user_id))
    return user_id
