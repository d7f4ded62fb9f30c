"""Redis coming back empty (no persistence, a failover to an empty replica, a flush) while
the services run: their consumers recreate their groups, say so, and go on consuming.
The Redis is the test's own (it is flushed); the database is the suite's."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from services.labels.tables import label_events
from shared import streams
from shared.events import LabelEvent
from shared.redisconn import connect
from shared.wire import encode_event
from tests.chaos.conftest import chaos_settings, metric, readiness, start_services
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
RECREATED = "loopwise_consumer_group_recreated_total"


async def test_consumers_recover_when_redis_comes_back_empty(private_redis, settings, engine):
    chaos = chaos_settings(private_redis.url, settings.database_url)
    project = f"flush-{uuid.uuid4().hex[:8]}"
    group = start_services(chaos, "labels", "quality")
    redis = connect(chaos.redis_url)

    async def post(items: range) -> None:
        pipe = redis.pipeline(transaction=False)
        for n in items:
            pipe.xadd(streams.LABELS, encode_event(LabelEvent(
                project=project, item_id=f"i{n}", label="cat", labeler_id="alice",
                source="human", mode="blind").to_json()))
        await pipe.execute()

    def stored(count: int):
        async def check() -> bool:
            async with engine.connect() as conn:
                return (await conn.execute(select(func.count()).select_from(label_events).where(
                    label_events.c.project == project))).scalar_one() == count
        return check

    try:
        await post(range(10))
        await wait_for(stored(10), 30, "the labels posted before the flush")
        assert metric(chaos, "labels", RECREATED, stream=streams.LABELS,
                      group=streams.GROUP_LABELS) == 0

        await redis.flushdb()  # every stream and consumer group is gone
        await post(range(10, 30))
        await wait_for(stored(30), 30, "the labels posted after the flush")

        for service, pairs in {"labels": [(streams.LABELS, streams.GROUP_LABELS)],
                               "quality": [(streams.LABELS, streams.GROUP_QUALITY),
                                           (streams.PROJECTS, streams.GROUP_QUALITY)]}.items():
            for stream, name in pairs:
                assert metric(chaos, service, RECREATED, stream=stream, group=name) == 1

            async def ready(service: str = service) -> bool:
                return readiness(chaos, service)[0] == 200
            await wait_for(ready, 30, f"{service} to be ready")
            _, body = readiness(chaos, service)
            assert {c["status"] for c in body["consumers"]} == {"consuming"}
            assert all(c["group_recreated"] == 1 for c in body["consumers"])
            assert metric(chaos, service, "loopwise_consumer_up", service=service,
                          stream=streams.LABELS) == 1
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(streams.LABELS)}
        assert set(groups) == {streams.GROUP_LABELS, streams.GROUP_QUALITY}
        assert all(g["pending"] == 0 for g in groups.values())
    finally:
        group.stop()
        await redis.aclose()


async def test_project_settings_come_back_to_every_copy_when_redis_comes_back_empty(
        private_redis, settings, engine):
    """The labels service owns the settings; the router, scorer and quality service keep
    copies (in Redis, where a restarted service finds them). A Redis that lost them
    (flushed here; a new or failed-over one alike) gets them again from their home, with
    their revision, without anyone declaring the project again: the router routes with
    the declared policy, not the defaults, and a quality service restarted afterwards
    still measures the project with its declared settings."""
    from tests.helpers import client, token

    chaos = chaos_settings(private_redis.url, settings.database_url)
    project = f"keep-{uuid.uuid4().hex[:8]}"
    group = start_services(chaos, "scorer", "router", "labels", "quality")
    redis = connect(chaos.redis_url)
    admin = await token(engine, f"admin-{project}", "admin", project)
    declared = {"routing": {"mode": "prelabel", "auto_accept_threshold": 0.77, "gold_rate": 0.0},
                "selection": {"strategy": "entropy", "select_budget": 17},
                "quality": {"auto_pause": False, "guideline_threshold": 0.42}}

    async def copies() -> tuple:
        async with client(chaos, "router", admin) as http:
            policy = (await http.get(f"/v1/projects/{project}/policy")).json()
        async with client(chaos, "scorer", admin) as http:
            config = (await http.get(f"/v1/projects/{project}/config")).json()
        async with client(chaos, "quality", admin) as http:
            quality = (await http.get(f"/v1/projects/{project}/quality")).json()
        return (policy.get("mode"), policy.get("auto_accept_threshold"),
                config.get("strategy"), config.get("select_budget"),
                (quality.get("settings") or {}).get("auto_pause"),
                (quality.get("settings") or {}).get("guideline_threshold"))

    expected = ("prelabel", 0.77, "entropy", 17, False, 0.42)

    async def copies_hold() -> bool:
        return await copies() == expected

    try:
        async with client(chaos, "labels", admin) as http:
            r = await http.patch(f"/v1/projects/{project}", json=declared)
            assert r.status_code == 200, r.text
            revision = r.json()["revision"]
        await wait_for(copies_hold, 30, "the declared settings in every copy")

        await redis.flushdb()  # every copy kept in Redis is gone with the streams
        await wait_for(copies_hold, 30, "the settings back in every copy after the flush")
        group.kill("quality")
        group.restart("quality", timeout=90)  # it reads its copy from Redis when it starts
        assert await copies() == expected
        async with client(chaos, "labels", admin) as http:  # nobody declared it again
            assert (await http.get(f"/v1/projects/{project}")).json()["revision"] == revision
    finally:
        group.stop()
        await redis.aclose()
