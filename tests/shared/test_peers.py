"""Calls between services: a service's own token is made at its first call, renewed when
refused (it expired or was revoked), and revoked when the service stops."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update

from shared.peers import PeerError, Peers
from shared.tables import api_tokens

pytestmark = pytest.mark.integration


async def test_a_service_token_is_renewed_when_refused_and_revoked_at_stop(services, engine):
    peers = Peers(services, engine, "peer-test")
    try:
        assert (await peers.get("router", "/v1/projects/p-peer/queue"))["depth"] == 0
        first = peers._token_id
        assert first is not None
        async with engine.begin() as conn:  # as if it had expired
            await conn.execute(update(api_tokens).where(api_tokens.c.id == first)
                               .values(revoked_at=api_tokens.c.created_at))
        # Services cache a token's lookup for 2 s (then serve it once more while they
        # re-read it): the calls after that are refused, and the client makes a new token.
        await asyncio.sleep(2.5)
        for _ in range(20):
            assert (await peers.get("router", "/v1/projects/p-peer/queue"))["depth"] == 0
            if peers._token_id != first:
                break
            await asyncio.sleep(0.2)
        assert peers._token_id not in (None, first)
        with pytest.raises(PeerError, match="404"):
            await peers.get("router", "/v1/no/such/route")
    finally:
        last = peers._token_id
        await peers.aclose()
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_tokens).where(api_tokens.c.id == last))).one()
    assert row.revoked_at is not None and row.user_id == "service:peer-test"
