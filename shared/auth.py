"""Bearer tokens, users, project membership and roles for every ``/v1`` route.

Tokens are random secrets shown once; only their SHA-256 is stored. A token
belongs to one user, one role and one project (``*`` for every project); it
may expire and may be revoked. A user may be disabled, which voids all of
their tokens.

Who may reach a project: a token made for that project (making one makes the
user a member), a ``*`` token of an ``admin`` or ``service`` (global), or a
``*`` token of a user who is a member of the project. What they may do there:
the token's role (``ROLE_GRANTS``). A project marked sensitive shows item
payloads only to its members and to services, not to global admins.

A denial never says whether another project exists: the message for a
project the token does not reach is the same for every project.

Lookups are cached for ``CACHE_SECONDS`` (2 s) per process, so a revocation,
expiry, disabled user or removed membership takes effect everywhere within
about 2 s (a request arriving after that is answered while a background
refresh reloads the token; the ones after the refresh see the change), and at
once in the process that made the change (``TokenAuth.forget``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.cache import RefreshingCache
from shared.db import insert_ignoring_duplicates
from shared.tables import api_tokens
from shared.tables import project_members as members_t
from shared.tables import users as users_t

ROLES = ("labeler", "reviewer", "admin", "service")
# What each role may do: a reviewer (adjudicator) may also label; admin and service may do both.
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "labeler": frozenset({"labeler"}),
    "reviewer": frozenset({"labeler", "reviewer"}),
    "admin": frozenset({"labeler", "reviewer", "admin"}),
    "service": frozenset({"labeler", "reviewer", "admin", "service"}),
}
GLOBAL_ROLES = frozenset({"admin", "service"})
ALL_PROJECTS = "*"
CACHE_SECONDS = 2.0
STALE_SECONDS = 60.0
NOT_YOUR_PROJECT = "token is not valid for this project"



@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    project: str
    memberships: frozenset[str] = frozenset()
    token_id: int | None = None

    def may(self, capability: str) -> bool:
        return capability in ROLE_GRANTS.get(self.role, frozenset())

    @property
    def is_global(self) -> bool:
        """A ``*`` admin or service token: reaches every project."""
        return self.project == ALL_PROJECTS and self.role in GLOBAL_ROLES

    def is_member(self, project: str) -> bool:
        return self.project == project or project in self.memberships

    def covers(self, project: str) -> bool:
        if self.project == project or self.is_global:
            return True
        return self.project == ALL_PROJECTS and project in self.memberships

    def sees_payloads(self, project: str, sensitive: bool) -> bool:
        """Item payloads of a sensitive project are for its members (and services) only."""
        if not self.covers(project):
            return False
        return not sensitive or self.role == "service" or self.is_member(project)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


async def ensure_user(conn: AsyncConnection, user_id: str) -> None:
    await insert_ignoring_duplicates(
        conn, users_t, [{"user_id": user_id, "created_at": datetime.now(UTC)}]
    )


async def add_member(conn: AsyncConnection, project: str, user_id: str, role: str) -> bool:
    """Make ``user_id`` a member of ``project`` (no change if already). True if added."""
    _check_role(role)
    await ensure_user(conn, user_id)
    added = await insert_ignoring_duplicates(
        conn,
        members_t,
        [{"project": project, "user_id": user_id, "role": role, "added_at": datetime.now(UTC)}],
    )
    return added > 0


async def issue_token(
    conn: AsyncConnection,
    user_id: str,
    role: str,
    project: str,
    ttl_days: float | None = None,
) -> tuple[str, int]:
    """Store a new token's hash inside the caller's transaction; return (token, token id).

    A token for one project makes the user a member of it.
    """
    _check_role(role)
    if ttl_days is not None and ttl_days <= 0:
        raise ValueError("ttl_days must be positive")
    if not user_id.strip():
        raise ValueError("user id must not be empty")
    token = "lw_" + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    await ensure_user(conn, user_id)
    if project != ALL_PROJECTS:
        await add_member(conn, project, user_id, role)
    result = await conn.execute(
        insert(api_tokens)
        .values(
            token_hash=hash_token(token),
            user_id=user_id,
            role=role,
            project=project,
            created_at=now,
            expires_at=now + timedelta(days=ttl_days) if ttl_days else None,
        )
        .returning(api_tokens.c.id)
    )
    return token, int(result.scalar_one())


async def create_token(
    engine: AsyncEngine, user_id: str, role: str, project: str, ttl_days: float | None = None
) -> str:
    """Store a new token's hash and return the token itself (shown once)."""
    async with engine.begin() as conn:
        token, _ = await issue_token(conn, user_id, role, project, ttl_days)
    return token


async def revoke_token(conn: AsyncConnection, token_id: int) -> bool:
    """Revoke a token by id; True if it was live. Revoking twice changes nothing."""
    result = await conn.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return (result.rowcount or 0) > 0


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"}
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class TokenAuth:
    """Resolves a bearer token to a principal, caching lookups for ``CACHE_SECONDS``.

    A known token whose entry is older than that is still answered from the
    cache while one background refresh reloads it (stale-while-revalidate),
    so a busy reviewer's requests never queue behind a database round trip;
    a revocation is seen by the first request after that refresh. Unknown
    tokens, and entries older than ``STALE_SECONDS``, are looked up inline.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # One background refresh reloads every stale entry in three queries, however many
        # reviewers are active (one lookup each would be 3 queries a token).
        self.cache: RefreshingCache[str, Principal | None] = RefreshingCache.batched(
            self._lookup_many, CACHE_SECONDS, STALE_SECONDS,
            serve_stale=lambda principal: principal is not None)

    def forget(self) -> None:
        """Drop cached lookups (after a revocation or membership change in this process);
        a lookup in flight meanwhile is not kept either."""
        self.cache.clear()

    async def lookup(self, token: str) -> Principal | None:
        return await self.cache.get(hash_token(token))

    async def settle(self) -> None:
        """Wait for the background refresh in flight, if any (tests, shutdown)."""
        await self.cache.settle()

    async def aclose(self) -> None:
        await self.cache.aclose()

    async def _lookup_many(self, digests: set[str]) -> dict[str, Principal | None]:
        loaded = await self._load(digests)
        return {digest: loaded.get(digest) for digest in digests}

    async def _load(self, digests: set[str]) -> dict[str, Principal]:
        """The principals of these token hashes that are valid now (absent: not valid)."""
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(api_tokens).where(api_tokens.c.token_hash.in_(sorted(digests)))
            )).all()
            rows = [r for r in rows if r.revoked_at is None
                    and ((expiry := _utc(r.expires_at)) is None or expiry > now)]
            users = {r.user_id for r in rows}
            if not users:
                return {}
            disabled = set((await conn.execute(
                select(users_t.c.user_id).where(users_t.c.user_id.in_(sorted(users)),
                                                users_t.c.disabled_at.is_not(None))
            )).scalars())
            projects: dict[str, set[str]] = {}
            for user_id, project in await conn.execute(
                select(members_t.c.user_id, members_t.c.project).where(
                    members_t.c.user_id.in_(sorted(users)))
            ):
                projects.setdefault(user_id, set()).add(project)
        return {
            r.token_hash: Principal(r.user_id, r.role, r.project,
                                    frozenset(projects.get(r.user_id, ())), r.id)
            for r in rows if r.user_id not in disabled
        }

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
    """403 unless the principal reaches ``project`` with ``capability``."""
    if not principal.covers(project):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=NOT_YOUR_PROJECT)
    if not principal.may(capability):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"role '{principal.role}' may not do this; it needs '{capability}'",
        )


def authorize_global(principal: Principal, capability: str = "admin") -> None:
    """403 unless the principal holds a ``*`` admin (or service) token."""
    if not principal.is_global or not principal.may(capability):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this needs a '{capability}' token for every project ('*')",
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
