"""The audit log: who changed what, when, from which client. Append-only.

Every change to labels, versions, reverts, users, tokens, memberships and
project settings writes one entry in the same transaction as the change, so
the log never claims a change that rolled back nor misses one that committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth import Principal

from .tables import audit_log


@dataclass(frozen=True)
class Actor:
    """Who acts and through which client (``http:<ip> <user-agent>``, ``cli@host``, a stream)."""

    user_id: str
    role: str | None
    client: str

    @classmethod
    def of(cls, principal: Principal, request: Request) -> Actor:
        host = request.client.host if request.client else "unknown"
        agent = request.headers.get("user-agent", "")
        return cls(principal.user_id, principal.role, f"http:{host} {agent}".strip()[:512])


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: str,
    *,
    project: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        insert(audit_log).values(
            at=datetime.now(UTC),
            actor=actor.user_id,
            actor_role=actor.role,
            client=actor.client,
            action=action,
            project=project,
            target=target,
            detail=detail or {},
        )
    )


async def entries(
    conn: AsyncConnection,
    *,
    projects: list[str] | None = None,
    action: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Entries in order; ``projects`` restricts to those projects (None: every entry)."""
    query = select(audit_log).where(audit_log.c.id > after_id)
    if projects is not None:
        query = query.where(audit_log.c.project.in_(projects))
    if action is not None:
        query = query.where(audit_log.c.action == action)
    rows = await conn.execute(query.order_by(audit_log.c.id).limit(limit))
    return [dict(r._mapping) for r in rows.all()]
