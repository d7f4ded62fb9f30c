"""Recalibration against real Redis, without the HTTP process: overlapping calls add no
observation twice, a decision is adopted once, and a fixed threshold exports no
precision."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from services.router.queue import project_key
from services.router.service import RouterService
from shared import metrics
from shared.projects import ProjectSettings, RoutingPolicy
from shared.settings import Settings

pytestmark = pytest.mark.integration


async def _router(redis, settings, project: str, **routing) -> RouterService:
    runtime = SimpleNamespace(settings=settings, bus=SimpleNamespace(redis=redis))
    router = RouterService(runtime)  # type: ignore[arg-type]
    chosen = ProjectSettings(routing=RoutingPolicy(**routing))
    await redis.hset(project_key("settings", project, settings.shards), "settings",
                     chosen.model_dump_json())
    return router


async def _observe(redis, project: str, rows: list[str]) -> None:
    key = project_key("observations", project, Settings().shards)
    for row in rows:
        await redis.lpush(key, row)
        await redis.incr(f"{key}:n")


async def test_overlapping_recalibrations_count_each_observation_once(redis, settings, project):
    router = await _router(redis, settings, project, kind="target_precision",
                           target_precision=0.9, min_audits=20)
    await _observe(redis, project, ["0.950000|1|1.000000|1|0"] * 150)
    first, second = await asyncio.gather(router.recalibrate(project, force=True),
                                         router.recalibrate(project, force=True))
    assert first is not None and first.calibrated and first.effective_n == 150
    assert second is not None and second.tested == 0  # its window is empty: no decision
    assert len(router._observations[project].rows) == 150
    calibration = await router.calibration(project)
    assert calibration["effective_n"] == 150 and calibration["observations"] == 150
    assert calibration["procedure"] == "fixed-sequence" and calibration["since"] == 150
    # Another process that decided from the same window (since 0) after this adoption:
    # its decision is dropped.
    assert await router._adopt(keys=[project_key("calibration", project, settings.shards)],
                               args=[json.dumps(0), "threshold", "0.5"]) == 0
    assert (await router.calibration(project))["threshold"] == 0.95


async def test_a_fixed_threshold_exports_no_precision(redis, settings, project):
    router = await _router(redis, settings, project, kind="fixed", auto_accept_threshold=0.9)
    metrics.AUTO_ACCEPT_PRECISION.labels(project).set(0.5)  # left over from before
    await _observe(redis, project, ["0.600000|0|1.000000|1|0"] * 50)  # reviewed, below
    assert await router.recalibrate(project, force=True) is None
    exported = {s.labels.get("project") for m in metrics.AUTO_ACCEPT_PRECISION.collect()
                for s in m.samples}
    assert project not in exported
    assert await router.calibration(project) == {}


async def test_a_decision_waits_for_its_interval_and_then_uses_only_its_window(
        redis, settings, project):
    router = await _router(redis, settings, project, kind="target_precision",
                           target_precision=0.9, min_audits=20, recalibration_seconds=3600)
    await _observe(redis, project, ["0.950000|1|1.000000|1|0"] * 100)
    assert await router.recalibrate(project) is None  # the window just opened
    assert (await router.calibration(project)).keys() == {"opened_at"}
    assert project in router._pending
    assert (await router.recalibrate(project, force=True)).calibrated
    await _observe(redis, project, ["0.990000|1|10.000000|1|1"] * 70)
    later = await router.recalibrate(project, force=True)
    assert later is not None and later.effective_n == 70  # the 100 before are not reused


def test_a_review_that_showed_the_model_label_is_recorded_as_not_blind():
    from services.router.service import _observation
    from services.router.tasks import ReviewTask
    from shared.events import ReviewMode

    base = dict(task_id="t", project="p", item_id="i", kind="review", options=["a", "b"],
                model_label="a", confidence=0.97)
    shown = ReviewTask(mode=ReviewMode.prelabel, prelabel="a", **base)
    blind = ReviewTask(mode=ReviewMode.blind, **base)
    audit = ReviewTask(mode=ReviewMode.blind, audit=True, audit_rate=0.02, **base)
    assert _observation(shown, "a") == "0.970000|1|1.000000|0|0"
    assert _observation(blind, "b") == "0.970000|0|1.000000|1|0"
    assert _observation(audit, "a") == "0.970000|1|50.000000|1|1"
