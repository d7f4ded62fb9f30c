"""Bearer tokens, users, project membership and roles for every ``/v1`` route.

Tokens are random secrets shown once; only their SHA-256 is stored. A token
belongs to one user, one role and one project (``*`` for every project); it
may expire and may be revoked. A user may be disabled, which voids all of
their tokens.

Who may reach a project: a token made for that project (making one makes the
user a member, with at least the token's role), a ``*`` token of an ``admin`` or
``service`` (global), or a ``*`` token of a user who is a member of the project.
What they may do there (``ROLE_GRANTS``): a global token's role; otherwise the
lesser of the token's role and the membership's, so that changing a member's role
changes what all of their tokens may do in that project. ``*`` is not a project:
a route for the project ``*`` is refused. A project marked sensitive shows item
payloads only to its members and to services, not to global admins.

A denial never says whether another project exists: the message for a
project the token does not reach is the same for every project.

Lookups are cached per process and re-read together every ``REFRESH_SECONDS``
(1 s) by a background loop, and a lookup older than ``CACHE_SECONDS`` (2 s) is
never answered (it is read inline): a revocation, expiry, disabled user, removed
membership or changed role takes effect on every service within 2 s, whether the
token was busy or idle, and at once in the process that made the change
(``TokenAuth.forget``). Requests do not wait on the database while the loop keeps
up.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.cache import RefreshingCache
from shared.db import insert_ignoring_duplicates
from shared.limits import PROJECT_PATTERN, Project
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
CACHE_SECONDS = 2.0  # a lookup older than this is never answered
REFRESH_SECONDS = 1.0  # every held lookup is re-read this often (TokenAuth.keep_fresh)
IDLE_SECONDS = 60.0  # a token unused this long is forgotten (read again when it comes back)
_PROJECT = re.compile(PROJECT_PATTERN)
NOT_YOUR_PROJECT = "token is not valid for this project"
PRINCIPAL_KEY = "loopwise_principal"  # in the ASGI scope: whom shared.request_guard let in



@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    project: str
    memberships: Mapping[str, str] = field(default_factory=dict)  # project -> member role
    token_id: int | None = None

    def may(self, capability: str) -> bool:
        """Whether the token's role grants it (project routes ask :meth:`may_in`)."""
        return capability in ROLE_GRANTS.get(self.role, frozenset())

    def role_in(self, project: str) -> str | None:
        """The role this principal acts with in ``project`` (None: it does not reach it)."""
        if not self.covers(project):
            return None
        if self.is_global:
            return self.role
        member = self.memberships.get(project)
        if member is None:  # a project token whose membership went: no role left
            return None if self.project == ALL_PROJECTS else self.role
        return min(self.role, member, key=ROLES.index)

    def may_in(self, project: str, capability: str) -> bool:
        role = self.role_in(project)
        return role is not None and capability in ROLE_GRANTS.get(role, frozenset())

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


async def grant_at_least(conn: AsyncConnection, project: str, user_id: str, role: str) -> None:
    """Make ``user_id`` a member of ``project`` with at least ``role`` (a token of that role
    for the project is that grant)."""
    if not await add_member(conn, project, user_id, role):
        lower = [r for r in ROLES if ROLES.index(r) < ROLES.index(role)]
        await conn.execute(
            update(members_t)
            .where(members_t.c.project == project, members_t.c.user_id == user_id,
                   members_t.c.role.in_(lower))
            .values(role=role))


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
        await grant_at_least(conn, project, user_id, role)
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
    """Resolves a bearer token to a principal, from a per-process cache kept fresh.

    A background loop (:meth:`keep_fresh`, every ``REFRESH_SECONDS``) re-reads every
    held lookup in three queries, however many reviewers are active, so a busy
    reviewer's requests never queue behind a database round trip; a lookup older than
    ``CACHE_SECONDS`` is never answered but read inline (the loop fell behind, or the
    process was idle), so a revocation is in force within 2 s whether or not the token
    was in use. Unknown tokens are looked up inline.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.cache: RefreshingCache[str, Principal | None] = RefreshingCache.batched(
            self._lookup_many, CACHE_SECONDS, CACHE_SECONDS)
        self._used: dict[str, float] = {}  # token hash -> last asked for (monotonic)

    def forget(self) -> None:
        """Drop cached lookups (after a revocation or membership change in this process);
        a lookup in flight meanwhile is not kept either."""
        self.cache.clear()

    async def lookup(self, token: str) -> Principal | None:
        digest = hash_token(token)
        self._used[digest] = time.monotonic()
        return await self.cache.get(digest)

    async def keep_fresh(self) -> None:
        """Re-read every held lookup (forgetting those unused for ``IDLE_SECONDS``)."""
        idle_before = time.monotonic() - IDLE_SECONDS
        for digest in self.cache.keys():
            if self._used.get(digest, 0.0) < idle_before:
                self.cache.drop(digest)
                self._used.pop(digest, None)
        await self.cache.refresh(older_than=REFRESH_SECONDS / 2)

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
            projects: dict[str, dict[str, str]] = {}
            for user_id, project, role in await conn.execute(
                select(members_t.c.user_id, members_t.c.project, members_t.c.role).where(
                    members_t.c.user_id.in_(sorted(users)))
            ):
                projects.setdefault(user_id, {})[project] = role
        return {
            r.token_hash: Principal(r.user_id, r.role, r.project,
                                    projects.get(r.user_id, {}), r.id)
            for r in rows if r.user_id not in disabled
        }

    async def __call__(self, request: Request) -> Principal:
        known = request.scope.get(PRINCIPAL_KEY)
        if known is not None:  # authenticated at the door, before the body was read
            return known
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
    """403 unless the principal reaches ``project`` with ``capability`` (422 for a name
    that cannot be a project, such as ``*``)."""
    if not _PROJECT.fullmatch(project):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"{project[:64]!r} is not a project name")
    role = principal.role_in(project)
    if role is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=NOT_YOUR_PROJECT)
    if capability not in ROLE_GRANTS.get(role, frozenset()):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"role '{role}' may not do this here; it needs '{capability}'",
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


def unknown_project(project: str) -> str:
    return (f"unknown project {project!r}: nobody declared it (PUT /v1/projects/{project} at "
            "the labels service) or sent data for it")


async def require_known(request: Request, principal: Principal, project: str) -> None:
    """404 for a project this service does not know: neither declared (its settings, which
    the labels service owns and publishes on ``loopwise:projects``) nor holding data here.
    Asked after :func:`authorize`, so that only a caller who reaches the project learns
    whether it exists. A service token is answered as before (empty results): a peer may
    ask about a project before this service has seen its first event."""
    if principal.role == "service":
        return
    known: set[str] = request.app.state.known_projects  # a project never becomes unknown
    if project in known:
        return
    if await request.app.state.service.knows_project(project):
        known.add(project)
        return
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail=unknown_project(project))


def project_access(capability: str = "labeler", creates: bool = False):
    """Dependency for routes with a ``{project}`` path parameter: 403 unless the principal
    reaches the project with ``capability``, then 404 for an unknown project unless the
    route ``creates`` it (declares it, or brings it data)."""

    async def check(project: Project, request: Request, principal: CurrentPrincipal
                    ) -> Principal:
        authorize(principal, project, capability)
        if not creates:
            await require_known(request, principal, project)
        return principal

    return check
