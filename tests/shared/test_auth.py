"""Who reaches which project with which role; tokens expire, are revoked, die with their user."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import HTTPException

from shared import auth
from shared.auth import NOT_YOUR_PROJECT, Principal, authorize, authorize_global


def test_a_project_token_reaches_its_project_only() -> None:
    alice = Principal("alice", "labeler", "p1", {"p1": "labeler"})
    authorize(alice, "p1", "labeler")
    for project in ("p2", "no-such-project"):
        with pytest.raises(HTTPException) as denied:
            authorize(alice, project, "labeler")
        assert (denied.value.status_code, denied.value.detail) == (403, NOT_YOUR_PROJECT)
    with pytest.raises(HTTPException, match="needs 'reviewer'"):
        authorize(alice, "p1", "reviewer")


def test_a_star_token_of_a_plain_role_reaches_only_member_projects() -> None:
    bob = Principal("bob", "reviewer", "*", {"p1": "reviewer"})
    authorize(bob, "p1", "reviewer")
    with pytest.raises(HTTPException, match=NOT_YOUR_PROJECT):
        authorize(bob, "p2", "labeler")
    with pytest.raises(HTTPException, match="for every project"):
        authorize_global(bob)


def test_the_lesser_of_token_and_membership_role_decides_and_star_is_not_a_project() -> None:
    demoted = Principal("dan", "admin", "p1", {"p1": "labeler"})
    authorize(demoted, "p1", "labeler")
    with pytest.raises(HTTPException, match="role 'labeler' may not do this here"):
        authorize(demoted, "p1", "admin")
    modest = Principal("eve", "labeler", "*", {"p1": "admin"})  # a labeler token stays one
    assert modest.role_in("p1") == "labeler" and modest.role_in("p2") is None
    root = Principal("root", "admin", "*")
    for name in ("*", "", "a b", "x" * 65):
        with pytest.raises(HTTPException) as refused:
            authorize(root, name, "labeler")
        assert refused.value.status_code == 422 and "not a project name" in refused.value.detail


def test_global_admins_reach_everything_but_sensitive_payloads_need_membership() -> None:
    root = Principal("root", "admin", "*")
    robot = Principal("router", "service", "*")
    member = Principal("carol", "labeler", "secret")
    authorize(root, "secret", "admin")
    authorize_global(root)
    assert not root.sees_payloads("secret", sensitive=True)
    assert root.sees_payloads("open", sensitive=False)
    assert robot.sees_payloads("secret", sensitive=True)
    assert member.sees_payloads("secret", sensitive=True)
    assert not member.sees_payloads("other", sensitive=False)


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        auth._check_role("owner")


@pytest.mark.integration
async def test_expired_revoked_and_disabled_tokens_are_refused(engine, project, monkeypatch):
    from sqlalchemy import update

    from shared.tables import users

    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)  # read the database on every request
    tokens = auth.TokenAuth(engine)
    async with engine.begin() as conn:
        live, live_id = await auth.issue_token(conn, f"u-{project}", "labeler", project, 1)
        short, _ = await auth.issue_token(conn, f"v-{project}", "labeler", project, 1e-9)
    principal = await tokens.lookup(live)
    assert principal is not None and principal.covers(project) and principal.token_id == live_id
    assert project in principal.memberships
    assert await tokens.lookup(short) is None  # expired already
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, live_id)
        assert not await auth.revoke_token(conn, live_id)
    assert await tokens.lookup(live) is None
    async with engine.begin() as conn:
        other, _ = await auth.issue_token(conn, f"w-{project}", "admin", "*")
        await conn.execute(
            update(users)
            .where(users.c.user_id == f"w-{project}")
            .values(disabled_at=auth.datetime.now(auth.UTC))
        )
    assert await tokens.lookup(other) is None


@pytest.mark.integration
async def test_a_lookup_older_than_the_window_is_never_answered(engine, project, monkeypatch):
    """An idle token's lookup past the window is read again inline, not answered stale
    (the old behaviour let a revoked idle token through once, up to a minute later)."""
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)  # every entry is past the window at once
    tokens = auth.TokenAuth(engine)
    async with engine.begin() as conn:
        live, live_id = await auth.issue_token(conn, f"s-{project}", "labeler", project, 1)
    assert await tokens.lookup(live) is not None
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, live_id)
    assert await tokens.lookup(live) is None


@pytest.mark.integration
async def test_create_token_keeps_its_signature_and_makes_a_member(engine, project):
    token = await auth.create_token(engine, "eve", "reviewer", project)
    principal = await auth.TokenAuth(engine).lookup(token)
    assert principal == Principal(
        "eve", "reviewer", project, principal.memberships, principal.token_id
    )
    assert project in principal.memberships
    with pytest.raises(ValueError, match="unknown role"):
        await auth.create_token(engine, "eve", "owner", project)


@pytest.mark.integration
async def test_the_refresh_loop_rereads_every_token_in_use_in_one_batch(
        engine, project, monkeypatch):
    """keep_fresh (every second, in each service) reloads all held tokens with three
    queries, not three a token; requests then answer from fresh entries without waiting."""
    from sqlalchemy import event

    monkeypatch.setattr(auth, "REFRESH_SECONDS", 0.0)
    tokens = auth.TokenAuth(engine)
    issued = []
    async with engine.begin() as conn:
        for i in range(6):
            issued.append(await auth.issue_token(conn, f"b{i}-{project}", "labeler", project, 1))
    for token, _ in issued:
        assert await tokens.lookup(token) is not None
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, issued[0][1])
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await tokens.keep_fresh()
        answers = [await tokens.lookup(t) for t, _ in issued]  # fresh: no query
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 3
    assert answers[0] is None and all(a is not None for a in answers[1:])


@pytest.mark.integration
async def test_forget_wins_over_a_refresh_in_flight(engine, project, monkeypatch):
    """The process that revokes a token refuses it at once, even when a background refresh
    that read the token before the revocation finishes after it."""
    monkeypatch.setattr(auth, "REFRESH_SECONDS", 0.0)
    tokens = auth.TokenAuth(engine)
    async with engine.begin() as conn:
        live, live_id = await auth.issue_token(conn, f"f-{project}", "labeler", project, 1)
    assert await tokens.lookup(live) is not None
    gate = asyncio.Event()
    load = tokens._load

    async def slow_load(digests: set[str]) -> dict[str, Principal]:
        loaded = await load(digests)  # read while the token is live
        await gate.wait()
        return loaded

    monkeypatch.setattr(tokens, "_load", slow_load)
    refresh = asyncio.ensure_future(tokens.keep_fresh())
    await asyncio.sleep(0.2)
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, live_id)
    tokens.forget()
    gate.set()
    await refresh
    monkeypatch.setattr(tokens, "_load", load)
    assert await tokens.lookup(live) is None
