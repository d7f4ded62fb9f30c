"""The supervisor: failing loops go on and are counted; stop() leaves nothing running."""

from __future__ import annotations

import asyncio

import pytest

from shared import metrics
from shared import supervisor as supervisor_mod
from shared.supervisor import Supervisor, pause_after


def failures(service: str, loop: str) -> float:
    return metrics.BACKGROUND_FAILURES.labels(service, loop)._value.get()


async def test_a_failing_loop_keeps_running_and_each_failure_is_counted(monkeypatch):
    monkeypatch.setattr(supervisor_mod, "BACKOFF_SECONDS", 0.001)
    runs: list[int] = []
    enough = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) >= 6:
            enough.set()
        if len(runs) % 2:  # every other run fails
            raise RuntimeError("redis went away")

    supervisor = Supervisor("test-flaky")
    before = failures("test-flaky", "flaky")
    supervisor.every("flaky", 0.001, flaky, immediately=True)
    await asyncio.wait_for(enough.wait(), 10)
    await supervisor.stop()
    assert failures("test-flaky", "flaky") - before == sum(1 for r in runs if r % 2 == 0)
    assert supervisor.running == []


def test_backoff_grows_while_failures_go_on_but_never_shortens_the_interval():
    assert pause_after(5.0, 0) == 5.0
    assert [pause_after(0.5, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert pause_after(0.5, 50) == supervisor_mod.MAX_BACKOFF_SECONDS
    assert pause_after(60.0, 3) == 60.0


async def test_a_guarded_step_fails_alone_and_the_run_goes_on():
    supervisor = Supervisor("test-guard")
    done: list[str] = []
    before = failures("test-guard", "depths")
    for project in ("a", "broken", "c"):
        with supervisor.guard("depths", project=project):
            if project == "broken":
                raise ValueError("no such key")
            done.append(project)
    assert done == ["a", "c"] and failures("test-guard", "depths") - before == 1


async def test_stop_cancels_and_awaits_every_loop_and_job():
    started = asyncio.Event()
    cleaned: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # its clean-up awaits too: stop() waits for it
            cleaned.append(name)

    async def tick() -> None:
        await forever("loop")

    supervisor = Supervisor("test-stop")
    supervisor.every("tick", 0.0, tick, immediately=True)
    job = supervisor.spawn("job", forever("job"))
    await started.wait()
    assert supervisor.running == ["job", "tick"]
    await supervisor.stop()
    assert sorted(cleaned) == ["job", "loop"] and job.cancelled()
    assert supervisor.running == []
    with pytest.raises(RuntimeError, match="stopped"):
        supervisor.spawn("late", forever("late"))


async def test_stop_ends_a_loop_whose_library_turns_the_cancellation_into_an_error():
    """A Redis client cancelled mid-call may raise its own error (connection closed) instead
    of CancelledError: that is no failure to sleep on, and stop() still ends promptly."""
    sup = Supervisor("test")
    started = asyncio.Event()

    async def call() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed") from None

    sup.every("redis call", 30.0, call, immediately=True)
    await started.wait()
    before = metrics.BACKGROUND_FAILURES.labels("test", "redis call")._value.get()
    await asyncio.wait_for(sup.stop(), 2.0)
    assert sup.running == []
    assert metrics.BACKGROUND_FAILURES.labels("test", "redis call")._value.get() == before


async def test_a_failing_job_is_logged_and_counted_not_raised():
    supervisor = Supervisor("test-job")
    before = failures("test-job", "retrain")

    async def retrain() -> None:
        raise ValueError("one class only")

    await supervisor.spawn("retrain", retrain())
    assert failures("test-job", "retrain") - before == 1
    await supervisor.stop()


async def test_a_consumer_only_process_runs_housekeeping_but_not_the_services_loops():
    ran: list[str] = []

    async def note(name: str) -> None:
        ran.append(name)

    worker = Supervisor("test-worker", primary=False)
    assert not worker.every("calibration", 0.001, lambda: note("calibration"),
                            immediately=True)
    assert worker.every("stream trim", 0.001, lambda: note("trim"), immediately=True,
                        each_process=True)
    with pytest.raises(ValueError, match="runs already"):
        worker.every("stream trim", 1.0, lambda: note("trim"), each_process=True)
    await asyncio.sleep(0.01)
    await worker.stop()
    assert "trim" in ran and "calibration" not in ran


@pytest.mark.integration
@pytest.mark.parametrize("service", ["router", "scorer", "labels", "quality"])
async def test_a_service_started_and_stopped_leaves_no_task_behind(settings, service):
    """The real lifespan (engine, bus, supervisor, the service's loops and consumers):
    after it, no task it started is still pending (none left to be destroyed so)."""
    from importlib import import_module

    app = import_module(f"services.{service}.app").create_app(settings)
    before = asyncio.all_tasks()
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        assert runtime.supervisor.primary
        await asyncio.sleep(0.3)  # the loops and consumers are running
        assert runtime.supervisor.running
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    if left:  # a task may still be finishing a cancellation under way
        await asyncio.wait(left, timeout=2.0)
        left = [t for t in left if not t.done()]
    assert left == [], left
    assert runtime.supervisor.running == []


@pytest.mark.integration
async def test_a_consumer_only_router_trims_but_leaves_calibration_to_the_primary(settings):
    from services.router.app import create_app
    from shared.service import mark_consumer_only

    app = create_app(settings)
    mark_consumer_only(app)
    async with app.router.lifespan_context(app):
        supervisor = app.state.runtime.supervisor
        assert not supervisor.primary
        await asyncio.sleep(0.1)
        assert supervisor.running == ["stream trim"]
