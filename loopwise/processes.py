"""Start the four services as separate processes, wait until healthy, stop them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from shared.metricsdir import process_exited
from shared.settings import SERVICES, Settings


class ServiceGroup:
    """The services as child processes; a context manager that always stops them."""

    def __init__(
        self,
        settings: Settings,
        services: Iterable[str] = SERVICES,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.services = tuple(services)
        self.env = {**os.environ, **(env or {})}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, timeout: float = 60.0,
              should_stop: Callable[[], bool] | None = None) -> None:
        """Start every service and wait until all are healthy, or ``should_stop()``."""
        for name in self.services:
            self._spawn(name)
        self.wait_healthy(timeout, should_stop)

    def _spawn(self, name: str) -> None:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "loopwise", "serve", name],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            preexec_fn=_die_with_parent,  # a killed `loopwise up` leaves no orphans
        )
        if out is not None:
            out.close()  # the child holds its own copy

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash or the OOM killer would: no shutdown code runs
        (its stream workers get SIGTERM from the kernel as their parent dies)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start one service again (after ``kill``) and wait until it is ready."""
        if self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._spawn(name)
        self.wait_healthy(timeout, only=(name,))

    def wait_healthy(self, timeout: float,
                     should_stop: Callable[[], bool] | None = None,
                     only: Iterable[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.services if only is None else only)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                if should_stop is not None and should_stop():
                    return
                for name in list(pending):
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        self.stop()
                        raise RuntimeError(f"{name} exited with code {proc.returncode} at start")
                    try:
                        if client.get(self.settings.url_of(name) + "/readyz").status_code == 200:
                            pending.discard(name)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"not healthy after {timeout:.0f}s: {sorted(pending)}")
                if pending:
                    time.sleep(0.2)

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, grace: float = 15.0) -> None:
        stop_processes(list(self.procs.values()), grace)
        self.procs.clear()

    def __enter__(self) -> ServiceGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so stream
    workers never outlive the service process that started them."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def consume_until_stopped(app: Any) -> None:
    """Run an app's lifespan (its service and stream consumers) until SIGTERM or SIGINT.

    A consumer-only process: the service's own background loops (calibration, gauges,
    scheduled selection, quality recompute) run once, in the process serving HTTP."""
    from shared.service import mark_consumer_only

    mark_consumer_only(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with app.router.lifespan_context(app):
        await stop.wait()


def run_loop(main: Any) -> Any:
    """``asyncio.run`` on uvloop where it is installed (as uvicorn does), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def fork_stream_workers(app: Any, settings: Settings, count: int) -> list[int]:
    """Fork ``count`` consumer-only copies of this process (no HTTP); returns their pids.

    Forked after the service's modules are imported and its app is built (no event loop,
    connection or thread exists yet), so a worker starts at once instead of importing
    everything again: three fresh processes on two cores spent seconds in imports alone.
    Each gets its own consumer name in the groups and dies with its parent.
    """
    pids = []
    for _ in range(max(0, count)):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                _die_with_parent()
                settings.consumer_name = f"{socket.gethostname()}-{os.getpid()}"
                run_loop(consume_until_stopped(app))
                code = 0
            except BaseException:  # report anything, then leave
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    return pids


def stop_forked(pids: list[int], grace: float = 15.0) -> None:
    """SIGTERM the workers, wait for them (SIGKILL after ``grace`` seconds)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    waiting = set(pids)
    while waiting:
        for pid in list(waiting):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            waiting.discard(pid)
            process_exited(pid)
        if waiting and time.monotonic() > deadline:
            for pid in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            grace, deadline = 0.0, float("inf")
        time.sleep(0.05)


def stop_processes(procs: list[subprocess.Popen], grace: float = 15.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
