"""A real Redis Cluster on loopback for the tests and benchmarks: three masters, three
replicas.

Six ``redis-server --cluster-enabled yes`` processes (no persistence, each in a
directory of its own) joined by ``redis-cli --cluster create ... --cluster-replicas 1``.
:meth:`LocalCluster.kill_master` SIGKILLs the master of a slot, so that a test can watch
its replica take over (``cluster-node-timeout`` is short: failover within seconds).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

NODE_TIMEOUT_MS = 2000
# A node's cluster bus listens here above its port (Redis' default, + 10,000, would leave
# the range of ports a test run may use: LOOPWISE_TEST_PORT_BASE .. + 999).
BUS_OFFSET = 500


def _ping(port: int) -> bool:
    with redis.Redis(port=port, socket_connect_timeout=1) as node:
        return bool(node.ping())


@dataclass
class LocalCluster:
    first_port: int
    nodes: int = 6
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lw-cluster-")))
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return [self.first_port + i for i in range(self.nodes)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.first_port}"

    def start(self, timeout: float = 60) -> LocalCluster:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis)")
        for port in self.ports:
            self._spawn(server, port)
        for port in self.ports:
            self._wait(partial(_ping, port), timeout, f"node {port}")
        subprocess.run([cli, "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout)
        self._wait(self._healthy, timeout, "the cluster to be ok on every node")
        return self

    def _spawn(self, server: str, port: int) -> None:
        node = self.workdir / str(port)
        node.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(port + BUS_OFFSET),
             "--cluster-config-file", str(node / "nodes.conf"),
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "",
             "--appendonly", "no", "--dir", str(node), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=(node / "log").open("ab"))

    def restart(self, port: int, timeout: float = 60) -> None:
        """Start a killed node again: it comes back empty, learns from its nodes.conf that
        its slots moved to its former replica, and rejoins as that node's replica."""
        server = shutil.which("redis-server")
        assert server is not None
        self._spawn(server, port)
        self._wait(lambda: _ping(port), timeout, f"node {port}")
        self._wait(self._healthy, timeout, "the cluster to be ok again")

    def _healthy(self) -> bool:
        for port in self.ports:
            if port not in self.processes:
                continue
            with redis.Redis(port=port) as node:
                info = node.execute_command("CLUSTER INFO")  # parsed: a dict
            if info.get("cluster_state") != "ok":
                return False
        return True

    @staticmethod
    def _wait(check: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def client(self) -> redis.RedisCluster:
        """A blocking cluster client (close it: ``with cluster.client() as c``), started
        from a node that runs: after ``kill_master`` the first port may be the dead one."""
        alive = next((p for p in self.ports if p in self.processes), self.first_port)
        return redis.RedisCluster(host="127.0.0.1", port=alive)

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        with self.client() as c:
            return int(c.get_node_from_key(key).port)

    def kill_master(self, key: str) -> int:
        """SIGKILL the master of ``key``'s slot; its port."""
        port = self.master_of(key)
        process = self.processes.pop(port)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return port

    def wait_failover(self, key: str, dead: int, timeout: float = 60) -> int:
        """Until another node serves ``key``'s slot as master; its port."""
        def promoted() -> bool:
            with self.client() as c:
                return int(c.get_node_from_key(key).port) != dead and self._healthy()

        self._wait(promoted, timeout, f"a replica to take over {key}'s slot")
        return self.master_of(key)

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait()
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
