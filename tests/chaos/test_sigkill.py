"""SIGKILL of the router and of the labels service, five times each, at random moments while
100,000 predictions stream in and reviewers submit over HTTP: every prediction ends as one
auto label or one task, every recorded submit is stored once, nothing is left pending.

Half the predictions are confident (auto labels, which the router writes to the labels
stream), half go to review; eight reviewers lease and submit all along, so both services
have work whenever one is killed. A kill happens when a random share of the predictions
has been posted; the service is started again at once (``loopwise serve``, as ``loopwise
up`` runs it) and the next kill waits for the next share. The seed is printed (set
``LOOPWISE_CHAOS_SEED`` to replay the same moments); ``LOOPWISE_CHAOS_PREDICTIONS`` sets
the size. On the test's own Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import pytest

from shared.auth import create_token
from shared.db import make_engine
from shared.redisconn import connect
from tests.chaos.conftest import chaos_settings, start_services
from tests.chaos.ledger import Producer, Reviewers, predictions, settle

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
PREDICTIONS = int(os.environ.get("LOOPWISE_CHAOS_PREDICTIONS", "100000"))
KILLS_EACH = 5
RATE = 2000.0  # predictions a second: the kills fall while they are posted
REVIEWERS = 8


async def test_sigkill_router_and_labels_five_times_each(private_redis, private_postgres):
    seed = int(os.environ.get("LOOPWISE_CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))
    rng = random.Random(seed)
    settings = chaos_settings(private_redis.url, private_postgres.url)
    project = f"kill-{uuid.uuid4().hex[:8]}"
    items = predictions(PREDICTIONS, auto_share=0.5, seed=seed)
    victims = ["router"] * KILLS_EACH + ["labels"] * KILLS_EACH
    rng.shuffle(victims)
    moments = sorted(rng.uniform(0.02, 0.95) for _ in victims)  # shares of what is posted
    print(f"\nseed {seed}: kills {list(zip(victims, [f'{m:.0%}' for m in moments], strict=True))}")

    engine = make_engine(settings.database_url)
    redis = connect(settings.redis_url)
    group = start_services(settings, "router", "labels")
    tokens = {f"rev{n}": await create_token(engine, f"rev{n}", "labeler", project)
              for n in range(REVIEWERS)}
    producer = Producer(settings.redis_url, project, items, rate=RATE)
    reviewers = Reviewers(settings.url_of("router"), project, tokens)
    kills: list[str] = []

    async def killer() -> None:
        for victim, share in zip(victims, moments, strict=True):
            await producer.wait_acked(share * PREDICTIONS)
            group.kill(victim)
            kills.append(f"{victim} at {producer.acked:,}")
            started = time.monotonic()
            await asyncio.to_thread(group.restart, victim, 90)
            kills[-1] += f" (ready again in {time.monotonic() - started:.1f} s)"

    try:
        posting = asyncio.create_task(producer.run())
        reviewing = asyncio.create_task(reviewers.run())
        await asyncio.gather(posting, killer())
        await asyncio.sleep(5)  # reviewers go on through the backlog a little longer
        reviewers.stop.set()
        await reviewing
        print("kills: " + "; ".join(kills))
        acct = await settle(redis, engine, project, items, timeout=240,
                            submitted=reviewers.recorded)
        print(acct.summary() + f"; {reviewers.retries} reviewer retries")
        assert len(kills) == 2 * KILLS_EACH
        assert not acct.problems(), acct.report()
        assert acct.auto + acct.tasks == PREDICTIONS
        assert acct.submits > 0  # the labels service had human labels to store too
    finally:
        reviewers.stop.set()
        group.stop()
        await redis.aclose()
        await engine.dispose()
