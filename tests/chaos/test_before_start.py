"""Predictions a producer posted before loopwise ever started: the router's group starts at
the stream's first entry, so each becomes one auto label or one task (none skipped with a
lag of 0). On the test's own Redis (the groups must not exist yet); the suite's database."""

from __future__ import annotations

import uuid

import pytest

from shared.redisconn import connect
from tests.chaos.conftest import chaos_settings, start_services
from tests.chaos.ledger import Producer, predictions, settle

pytestmark = pytest.mark.integration
EARLY = 3000


async def test_predictions_posted_before_the_services_start_are_all_routed(
        private_redis, settings, engine):
    chaos = chaos_settings(private_redis.url, settings.database_url)
    project = f"early-{uuid.uuid4().hex[:8]}"
    items = predictions(EARLY, auto_share=0.5, seed=13)
    await Producer(chaos.redis_url, project, items, rate=1e9, chunk=500).run()
    redis = connect(chaos.redis_url)
    assert await redis.xinfo_groups("loopwise:predictions") == []  # nobody consumes yet
    group = start_services(chaos, "router", "labels")
    try:
        acct = await settle(redis, engine, project, items, timeout=120)
        print("\n" + acct.summary())
        assert not acct.problems(), acct.report()
        assert acct.auto + acct.tasks == EARLY
    finally:
        group.stop()
        await redis.aclose()
