"""Who reaches which project with which role; tokens expire, are revoked, die with their user."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import HTTPException

from shared import auth
from shared.auth import NOT_YOUR_PROJECT, Principal, authorize, authorize_global


def test_a_project_token_reaches_its_project_only() -> None:
    alice = Principal("alice", "labeler", "p1", frozenset({"p1"}))
    authorize(alice, "p1", "labeler")
    for project in ("p2", "no-such-project"):
        with pytest.raises(HTTPException) as denied:
            authorize(alice, project, "labeler")
        assert (denied.value.status_code, denied.value.detail) == (403, NOT_YOUR_PROJECT)
    with pytest.raises(HTTPException, match="needs 'reviewer'"):
        authorize(alice, "p1", "reviewer")


def test_a_star_token_of_a_plain_role_reaches_only_member_projects() -> None:
    bob = Principal("bob", "reviewer", "*", frozenset({"p1"}))
    authorize(bob, "p1", "reviewer")
    with pytest.raises(HTTPException, match=NOT_YOUR_PROJECT):
        authorize(bob, "p2", "labeler")
    with pytest.raises(HTTPException, match="for every project"):
        authorize_global(bob)


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
    monkeypatch.setattr(auth, "STALE_SECONDS", 0.0)  # and never answer from a stale entry
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
async def test_a_stale_entry_answers_once_while_a_refresh_sees_the_revocation(
        engine, project, monkeypatch):
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)  # every entry is stale at once
    tokens = auth.TokenAuth(engine)
    async with engine.begin() as conn:
        live, live_id = await auth.issue_token(conn, f"s-{project}", "labeler", project, 1)
    assert await tokens.lookup(live) is not None
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, live_id)
    # Answered from the cache without waiting for the database; the refresh runs behind it.
    assert await tokens.lookup(live) is not None
    await tokens.settle()
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
async def test_stale_entries_of_many_reviewers_refresh_in_one_batch(engine, project, monkeypatch):
    """Each stale token answers from the cache; one background task reloads them all with
    three queries, not three queries a token."""
    from sqlalchemy import event

    tokens = auth.TokenAuth(engine)
    issued = []
    async with engine.begin() as conn:
        for i in range(6):
            issued.append(await auth.issue_token(conn, f"b{i}-{project}", "labeler", project, 1))
    for token, _ in issued:
        assert await tokens.lookup(token) is not None
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, issued[0][1])
    monkeypatch.setattr(tokens.cache, "fresh_seconds", 0.0)  # every entry is stale at once
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        for token, _ in issued:
            assert await tokens.lookup(token) is not None  # stale answers, no waiting
        await tokens.settle()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 3
    assert await tokens.lookup(issued[0][0]) is None  # the revocation was seen
    assert all([await tokens.lookup(t) is not None for t, _ in issued[1:]])


@pytest.mark.integration
async def test_forget_wins_over_a_refresh_in_flight(engine, project, monkeypatch):
    """The process that revokes a token refuses it at once, even when a background refresh
    that read the token before the revocation finishes after it."""
    tokens = auth.TokenAuth(engine)
    async with engine.begin() as conn:
        live, live_id = await auth.issue_token(conn, f"f-{project}", "labeler", project, 1)
    assert await tokens.lookup(live) is not None
    monkeypatch.setattr(tokens.cache, "fresh_seconds", 0.0)
    gate = asyncio.Event()
    load = tokens._load

    async def slow_load(digests: set[str]) -> dict[str, Principal]:
        loaded = await load(digests)  # read while the token is live
        await gate.wait()
        return loaded

    monkeypatch.setattr(tokens, "_load", slow_load)
    assert await tokens.lookup(live) is not None  # stale answer; the refresh starts
    await asyncio.sleep(0.2)
    async with engine.begin() as conn:
        assert await auth.revoke_token(conn, live_id)
    tokens.forget()
    gate.set()
    await tokens.settle()
    monkeypatch.setattr(tokens.cache, "fresh_seconds", auth.CACHE_SECONDS)
    assert await tokens.lookup(live) is None
