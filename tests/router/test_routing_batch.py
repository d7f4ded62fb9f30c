"""One routing batch against real Redis, without the HTTP process: what a batch of several
projects writes (stream batches mix projects; the HTTP tests mostly see one at a time)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from services.router.service import RouterService
from shared import streams
from shared.bus import Delivery
from shared.events import PredictionEvent
from tests.helpers import stream_entries

pytestmark = pytest.mark.integration


async def test_a_batch_of_several_projects_routes_each_with_its_own_options(
        redis, settings, project):
    # Three shards (on a cluster, its own count): the batch's projects fall in several.
    settings = settings.model_copy(update={"stream_shards": settings.stream_shards or 3})
    runtime = SimpleNamespace(settings=settings, bus=SimpleNamespace(redis=redis))
    router = RouterService(runtime)  # type: ignore[arg-type]
    projects = [f"{project}-{k}" for k in ("a", "b", "c")]
    labels = {p: [f"{p[-1]}{i}" for i in range(3)] for p in projects}
    batch = [
        Delivery(f"{i}-{n}", PredictionEvent(
            project=p, item_id=f"multi-{i}", model_version=f"m-{p[-1]}",
            probs=dict(zip(labels[p], (0.5, 0.3, 0.2) if i else (0.95, 0.03, 0.02),
                           strict=True))))
        for i in range(4) for n, p in enumerate(projects)
    ]
    for _ in range(2):  # the second time is a redelivery: no task is added twice, and the
        await router.on_predictions(batch)  # auto labels come again with the same event ids
    for p in projects:
        assert await router.queue.depth(p) == 3
        task_id = (await redis.zrange(router.queue.queue_key(p), 0, 0))[0].decode()
        task = await router.queue.task(task_id)
        assert task["project"] == p and json.loads(task["options"]) == labels[p]
        assert await redis.get(router.queue.key("model", p)) == f"m-{p[-1]}".encode()
    autos = [json.loads(e[1][b"data"]) for e in await stream_entries(
        redis, streams.LABELS, settings.shards)]
    ours = [a for a in autos if a["project"] in projects]
    assert len(ours) == 6 and len({a["event_id"] for a in ours}) == 3  # item 0 of each
    ours = list({a["event_id"]: a for a in ours}.values())
    assert sorted((a["project"], a["label"], a["labeler_id"]) for a in ours) == [
        (p, labels[p][0], f"model:m-{p[-1]}") for p in projects]
