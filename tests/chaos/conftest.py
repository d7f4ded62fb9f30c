"""Private servers for the fault tests: a Redis and a PostgreSQL cluster of their own.

The fault tests flush Redis and stop PostgreSQL; they must never do that to the servers
other tests (or other runs on the machine) use. Each server here lives in a temporary
directory on a port of its own (``LOOPWISE_TEST_PORT_BASE`` + 40 and up) and is gone
after the test module.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.db import upgrade
from shared.settings import Settings
from tests.conftest import PORT_BASE, ROOT, service_env
from tests.helpers import METRICS_TOKEN, require_tool

REDIS_PORT = PORT_BASE + 40
POSTGRES_PORT = PORT_BASE + 41
SERVICE_PORTS = {"scorer": PORT_BASE + 42, "router": PORT_BASE + 43, "labels": PORT_BASE + 44,
                 "quality": PORT_BASE + 45}


def _wait(ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not up after {timeout:.0f}s")
        time.sleep(0.1)


class PrivateRedis:
    """A redis-server on its own port, in a directory of its own.

    Without ``appendfsync`` it keeps nothing (no RDB, no AOF): restarted, it comes back
    empty. With ``appendfsync`` (``always`` or ``everysec``) it writes an append-only file
    and reloads it when restarted in the same directory.
    """

    def __init__(self, port: int, appendfsync: str | None = None) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="loopwise-redis-"))
        self.appendfsync = appendfsync
        self.server = require_tool("redis-server", "redis-server")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", self.appendfsync]
                       if self.appendfsync else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self._pong, 30, "the private Redis")

    def kill(self) -> None:
        """SIGKILL, as a crash: no final fsync, no shutdown save."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def wipe(self) -> None:
        """Forget everything on disk (after ``kill``): the next start is empty."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()

    def _pong(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster made with initdb in a temporary directory (trust auth), which
    the test may stop and start at will: never the shared server."""

    def __init__(self, port: int) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            require_tool("initdb", "postgresql")  # fails under CI, skips elsewhere
        self.bin = Path(bins[-1])
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="loopwise-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: as abrupt as a crash; every connection is cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(REDIS_PORT)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(POSTGRES_PORT)
    try:
        upgrade(server.url)
        yield server
    finally:
        server.close()


def chaos_settings(redis_url: str, database_url: str) -> Settings:
    return Settings(redis_url=redis_url, database_url=database_url,
                    **{f"{name}_port": port for name, port in SERVICE_PORTS.items()},
                    reclaim_idle_ms=3000, metrics_token=METRICS_TOKEN)


def start_services(settings: Settings, *names: str):
    """The named services as processes (``loopwise serve``) against these servers; ready
    (``/readyz``) when this returns. The caller stops them."""
    from loopwise.processes import ServiceGroup

    group = ServiceGroup(settings, services=names, env=service_env(settings),
                         log_dir=ROOT / "var" / "test-logs" / "chaos")
    group.start(timeout=90)
    return group


def metric(settings: Settings, at: str, name: str, **labels: str) -> float:
    """One sample of the /metrics of service ``at`` (0 when absent)."""
    text = httpx.get(settings.url_of(at) + "/metrics", timeout=5,
                     headers={"Authorization": f"Bearer {settings.metrics_token}"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return 0.0


def readiness(settings: Settings, service: str) -> tuple[int, dict]:
    r = httpx.get(settings.url_of(service) + "/readyz", timeout=10)
    return r.status_code, r.json()
