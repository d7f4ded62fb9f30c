"""Bearer-token authentication and project-scoped roles for every ``/v1`` route.

Tokens are random secrets shown once; only their SHA-256 is stored. A token
belongs to one user, one role and one project (``*`` for every project).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.tables import api_tokens

ROLES = ("labeler", "reviewer", "admin", "service")
# What each role may do: a reviewer may also label, an admin and a service may do both.
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "labeler": frozenset({"labeler"}),
    "reviewer": frozenset({"labeler", "reviewer"}),
    "admin": frozenset({"labeler", "reviewer", "admin"}),
    "service": frozenset({"labeler", "reviewer", "admin", "service"}),
}
ALL_PROJECTS = "*"
CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    project: str

    def may(self, capability: str) -> bool:
        return capability in ROLE_GRANTS.get(self.role, frozenset())

    def covers(self, project: str) -> bool:
        return self.project in (ALL_PROJECTS, project)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    engine: AsyncEngine, user_id: str, role: str, project: str, ttl_days: float | None = None
) -> str:
    """Store a new token's hash and return the token itself (shown once)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    token = "lw_" + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(api_tokens).values(
                token_hash=hash_token(token),
                user_id=user_id,
                role=role,
                project=project,
                created_at=now,
                expires_at=now + timedelta(days=ttl_days) if ttl_days else None,
            )
        )
    return token


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"}
    )


class TokenAuth:
    """Resolves a bearer token to a principal, caching lookups briefly (revocation lag ≤ 30 s)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def lookup(self, token: str) -> Principal | None:
        digest = hash_token(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest))
            ).first()
        principal = None
        if row is not None and row.revoked_at is None:
            expires = row.expires_at
            if expires is not None and expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if expires is None or expires > datetime.now(UTC):
                principal = Principal(row.user_id, row.role, row.project)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, principal)
        return principal

    async def __call__(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        principal = await self.lookup(token.strip())
        if principal is None:
            raise _unauthorized("invalid, expired or revoked token")
        return principal


def authorize(principal: Principal, project: str, capability: str = "labeler") -> None:
    """403 unless the principal's token covers ``project`` with ``capability``."""
    if not principal.covers(project):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="token is not valid for this project")
    if not principal.may(capability):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"role '{principal.role}' may not do this; it needs '{capability}'",
        )


async def principal_dependency(request: Request) -> Principal:
    return await request.app.state.auth(request)


CurrentPrincipal = Annotated[Principal, Depends(principal_dependency)]


def project_access(capability: str = "labeler"):
    """Dependency for routes with a ``{project}`` path parameter."""

    async def check(project: str, principal: CurrentPrincipal) -> Principal:
        authorize(principal, project, capability)
        return principal

    return check
