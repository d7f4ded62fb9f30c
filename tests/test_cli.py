"""The ``loopwise`` command as a user runs it: up (and Ctrl-C), token create."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import PORT_BASE, service_env

pytestmark = pytest.mark.integration
SERVICES = ("scorer", "router", "labels", "quality")


def _env(settings, offset: int) -> dict[str, str]:
    env = {**os.environ, **service_env(settings)}
    for i, name in enumerate(SERVICES, start=1):
        env[f"LOOPWISE_{name.upper()}_PORT"] = str(PORT_BASE + offset + i)
    return env


def _private_redis(settings) -> str:
    """A flushed Redis database of the test's own: the session's services consume the same
    streams and groups, and processes a test starts must neither take their entries nor
    show up among their consumers."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    db = (int(client.connection_pool.connection_kwargs.get("db", 0)) + 8) % 16
    client.close()
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    with redis.Redis.from_url(url) as client:
        client.flushdb(asynchronous=True)
    return url


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_starts_four_processes_and_ctrl_c_stops_them_all(settings):
    env = {**_env(settings, 10), "LOOPWISE_REDIS_URL": _private_redis(settings)}
    ports = [PORT_BASE + 10 + i for i in range(1, 5)]
    proc = subprocess.Popen([sys.executable, "-m", "loopwise", "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Read the output as it comes: a full pipe would block the services writing to it.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not all(_healthy(p) for p in ports):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "services did not become healthy:\n" + \
                "".join(lines)
            time.sleep(0.3)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 4, children  # one process per service
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "stopped." in output
    assert not any(_healthy(p) for p in ports)
    assert not any(_running(pid) for pid in children)


def test_ctrl_c_while_the_services_start_stops_them_cleanly(settings):
    env = {**_env(settings, 40), "LOOPWISE_REDIS_URL": _private_redis(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "loopwise", "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        children: list[str] = []
        while not children:  # the first service process exists: they are starting
            assert proc.poll() is None and time.monotonic() < deadline
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                      text=True).stdout.split()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopped." in output and "Ctrl-C stops all four" not in output
    assert not any(_running(pid) for pid in children)


def _running(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_token_create_prints_a_token_that_authenticates(services, project):
    """The README's order: a '*' admin token, the project declared with it, then the
    project's tokens; a token for a project nobody declared is refused (exit 1, one line)."""
    env = {**os.environ, **service_env(services)}

    def create(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "loopwise", "token", "create", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    early = create("--user", "kim", "--role", "labeler", "--project", project)
    assert early.returncode == 1, early.stderr
    assert f"unknown project '{project}': declare it first" in early.stderr
    assert len(early.stderr.strip().splitlines()) == 1 and not early.stdout
    root = create("--user", f"root-{project}", "--role", "admin", "--project", "*")
    assert root.returncode == 0, root.stderr
    r = httpx.put(f"{services.url_of('labels')}/v1/projects/{project}",
                  json={"label_options": ["a", "b"]},
                  headers={"Authorization": f"Bearer {root.stdout.strip()}"})
    assert r.status_code == 200, r.text
    out = create("--user", "kim", "--role", "labeler", "--project", project)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    r = httpx.get(f"{services.url_of('labels')}/v1/projects/{project}/labels",
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    bad = create("--user", "kim", "--role", "emperor", "--project", project)
    assert bad.returncode != 0 and "unknown role" in bad.stderr


def test_serve_starts_stream_workers_that_join_the_group_and_die_with_it(settings):
    """LOOPWISE_STREAM_WORKERS=3: two forked consumer-only workers, each its own consumer in
    the router's groups; they stop with the service, and die with it if it is killed."""
    import redis

    from shared import streams

    # A consumer shows in XINFO CONSUMERS only once it has read an entry.
    url = _private_redis(settings)
    client = redis.Redis.from_url(url)
    env = {**_env(settings, 20), "LOOPWISE_STREAM_WORKERS": "3", "LOOPWISE_REDIS_URL": url}
    port = PORT_BASE + 22
    for kill in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-m", "loopwise", "serve", "router"], env=env)
        try:
            deadline = time.monotonic() + 60
            while not _healthy(port):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                      text=True).stdout.split()
            assert len(children) == 2
            expected = {f"-{pid}" for pid in [*children, str(proc.pid)]}
            for _ in range(200):
                client.xadd(streams.PREDICTIONS, {"data": "{}"})  # dead letters, that's fine
            while True:  # every process reads the predictions stream in the router group
                names = {c["name"].decode() for c in client.xinfo_consumers(
                    streams.PREDICTIONS, streams.GROUP_ROUTER)}
                if all(any(n.endswith(e) for n in names) for e in expected):
                    break
                assert time.monotonic() < deadline, (names, expected)
                client.xadd(streams.PREDICTIONS, {"data": "{}"})
                time.sleep(0.05)
            proc.send_signal(kill)
            proc.wait(30)
            deadline = time.monotonic() + 20
            while any(_running(pid) for pid in children):
                assert time.monotonic() < deadline, f"workers outlived the service ({kill!r})"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
    client.close()


def _metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``, from /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def test_metrics_of_a_service_with_three_stream_workers_add_up_over_its_processes(
        settings, tmp_path):
    """LOOPWISE_STREAM_WORKERS=3: the predictions are routed by three processes, and the
    counter on /metrics (served by one of them) is the sum over all three."""
    import redis

    from shared import streams
    from tests.helpers import METRICS_TOKEN

    url = _private_redis(settings)
    client = redis.Redis.from_url(url)
    env = {**_env(settings, 60), "LOOPWISE_STREAM_WORKERS": "3", "LOOPWISE_REDIS_URL": url,
           "LOOPWISE_METRICS_DIR": str(tmp_path)}
    port = PORT_BASE + 62
    project, rounds, per_round = "workers", 40, 100
    proc = subprocess.Popen([sys.executable, "-m", "loopwise", "serve", "router"], env=env)

    def scrape() -> str:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                      headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200, r.text
        return r.text

    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        for r in range(rounds):  # in rounds, so that every process reads some
            pipe = client.pipeline(transaction=False)
            for i in range(per_round):
                confidence = 0.99 if i % 2 else 0.6  # half auto-accepted, half reviewed
                pipe.xadd(streams.PREDICTIONS, {"data": json.dumps({
                    "project": project, "item_id": f"i{r}-{i}", "model_version": "m1",
                    "probs": {"a": confidence, "b": round(1 - confidence, 2)}})})
            pipe.execute()
            time.sleep(0.05)
        routed = rounds * per_round
        deadline = time.monotonic() + 60
        while True:
            text = scrape()
            total = _metric_sum(text, "loopwise_routed_total", project=project)
            if total >= routed or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert total == routed, f"/metrics counted {total} of {routed} routed"
        assert _metric_sum(text, "loopwise_routed_total", project=project,
                           decision="auto") == routed / 2
        readers = [c for c in _consumers(client) if c["name"].decode().startswith("router-")]
        assert len(readers) == 3  # every process read predictions (and counted them)
        # Every consumer of every process is consuming; the scrapes themselves are counted.
        assert _metric_sum(text, "loopwise_consumer_up", stream=streams.PREDICTIONS) == 1
        assert _metric_sum(scrape(), "loopwise_http_requests_total", route="/metrics",
                           method="GET", status="200") >= 1  # the earlier scrapes
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        client.close()


def test_consume_runs_a_consumer_without_http_until_sigterm(settings):
    import redis

    from shared import streams

    url = _private_redis(settings)
    client = redis.Redis.from_url(url)
    env = {**_env(settings, 30), "LOOPWISE_REDIS_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "loopwise", "consume", "router"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(c["name"].decode().endswith(f"-{proc.pid}") for c in _consumers(client)):
            assert proc.poll() is None and time.monotonic() < deadline
            client.xadd(streams.PREDICTIONS, {"data": "{}"})
            time.sleep(0.1)
        assert not _healthy(PORT_BASE + 32)  # no HTTP
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()


def _consumers(client) -> list[dict]:
    from redis.exceptions import ResponseError

    from shared import streams

    try:
        return client.xinfo_consumers(streams.PREDICTIONS, streams.GROUP_ROUTER)
    except ResponseError:  # the group does not exist yet
        return []


@pytest.mark.parametrize(("args", "env", "says"), [
    (["labels", "versions", "--project", "x"],
     {"LOOPWISE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"},
     "cannot use the database"),
    (["labels", "import", "--project", "x", "/no/such/export.json"], {}, "No such file"),
    (["token", "revoke", "999999999"], {}, "no token 999999999"),
])
def test_a_failing_command_says_why_in_a_line_and_exits_non_zero(settings, args, env, says):
    """No traceback for an operator's mistake or an outage: one line on stderr, exit != 0."""
    run = subprocess.run([sys.executable, "-m", "loopwise", *args], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **service_env(settings),
                                                    "LOOPWISE_LOG_LEVEL": "WARNING", **env})
    assert run.returncode != 0
    assert says in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert len(run.stderr.strip().splitlines()) <= 6  # typer's usage box for exit 2 at most
