"""One owner for a process's background work: periodic loops and one-off jobs.

Every loop and job of a service runs here, so that they start, fail and stop the
same way: a failure is logged and counted (``loopwise_background_failures_total``)
and the loop goes on, after a short backoff while it keeps failing; ``stop()``
cancels everything and waits for it, so nothing outlives the service (no "Task was
destroyed but it is pending").

A service may run in several processes (``LOOPWISE_STREAM_WORKERS``, ``loopwise
consume``) and in several replicas (processes serving HTTP, each with its workers).
A loop doing the service's work (calibration, gauges, scheduled selection, quality
recompute) runs only in a primary process, the one serving HTTP, and there only
while that replica leads the service (``shared.leadership``: one replica at a time);
a loop of the replica's own (``each_replica=True``: the token cache) runs in every
primary process; a loop doing the process's own housekeeping (``each_process=True``:
stream trimming) runs in every process. One-off jobs run wherever they are spawned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from shared import metrics
from shared.leadership import Leadership
from shared.logs import get_logger

log = get_logger(__name__)
BACKOFF_SECONDS = 1.0  # the first pause after a failure; doubles while failures go on
MAX_BACKOFF_SECONDS = 30.0


def pause_after(interval: float, failures: int) -> float:
    """Seconds to wait before the next run: the interval, or more after failures in a row."""
    if failures == 0:
        return interval
    return max(interval, min(BACKOFF_SECONDS * 2 ** (failures - 1), MAX_BACKOFF_SECONDS))


def _cancelling() -> bool:
    """Whether the running task is being cancelled (the error came from that)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Supervisor:
    """Owns the named periodic loops and one-off jobs of one service process."""

    def __init__(self, service: str, primary: bool = True) -> None:
        self.service = service
        self.primary = primary
        # Set by the app when replicas elect a leader; None: this process always leads.
        self.leadership: Leadership | None = None
        self._tasks: dict[asyncio.Task[None], str] = {}
        self._loops: set[str] = set()
        self._stopped = False

    def every(self, name: str, seconds: float, fn: Callable[[], Awaitable[None]], *,
              immediately: bool = False, each_process: bool = False,
              each_replica: bool = False) -> bool:
        """Run ``fn`` every ``seconds`` (counted from the end of a run), first after one
        interval or ``immediately``. Only in the primary process unless ``each_process``,
        and there only while this replica leads the service unless ``each_replica`` or
        ``each_process``; True if the loop runs in this process."""
        if name in self._loops:
            raise ValueError(f"a loop named {name!r} runs already")
        if not (self.primary or each_process):
            return False
        self._loops.add(name)
        gated = not (each_process or each_replica)
        self._track(name, self._loop(name, seconds, fn, immediately, gated))
        return True

    @property
    def leading(self) -> bool:
        """Whether this process does the service's own work now."""
        return self.primary and (self.leadership is None or self.leadership.held)

    def spawn(self, name: str, job: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run ``job`` once in the background; a failure is logged and counted."""
        if self._stopped:
            job.close()
        return self._track(name, self._job(name, job))

    @contextmanager
    def guard(self, name: str, **context: Any) -> Iterator[None]:
        """Log and count a failure of one step of loop ``name`` (one project, one stream)
        without ending the run: the other steps still happen."""
        try:
            yield
        except Exception as exc:
            self.failed(name, exc, **context)

    def failed(self, name: str, exc: BaseException, **context: Any) -> None:
        metrics.BACKGROUND_FAILURES.labels(self.service, name).inc()
        log.warning("background work failed", loop=name,
                    error=f"{type(exc).__name__}: {exc}", exc_info=exc, **context)

    @property
    def running(self) -> list[str]:
        """The names of the loops and jobs not finished yet."""
        return sorted(self._tasks.values())

    async def stop(self) -> None:
        """Cancel every loop and job and wait until each has ended."""
        self._stopped = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # Cancelled again until they end: a library that turns the cancellation of a
            # call into an error of its own (a Redis client's "connection closed") would
            # otherwise leave a loop asleep until its next run.
            await asyncio.wait(tasks, timeout=0.1)

    def _track(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._stopped:
            work.close()
            raise RuntimeError(f"{self.service}: the supervisor has stopped; {name!r} not run")
        task = asyncio.get_running_loop().create_task(work, name=f"{self.service}:{name}")
        self._tasks[task] = name
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _loop(self, name: str, seconds: float, fn: Callable[[], Awaitable[None]],
                    immediately: bool, gated: bool = False) -> None:
        failures = 0
        if not immediately:
            await asyncio.sleep(seconds)
        while True:
            try:
                if not gated or self.leading:
                    await fn()
                failures = 0
            except Exception as exc:  # a loop outlives any one failure
                if self._stopped or _cancelling():
                    raise asyncio.CancelledError from exc  # not a failure: it was stopped
                failures += 1
                self.failed(name, exc, failures=failures)
            await asyncio.sleep(pause_after(seconds, failures))

    async def _job(self, name: str, job: Coroutine[Any, Any, Any]) -> None:
        try:
            await job
        except Exception as exc:
            self.failed(name, exc)
