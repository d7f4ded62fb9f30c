"""``loopwise bench soak`` on a small size (5 s at 200/s): the four services start, every
auto label is measured, the sampled tasks are found, memory is sampled for each service,
and the plot is drawn. No timing is asserted. It uses a Redis database of its own (the
suite's number + 9: it flushes it) and ports of its own."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PORT_BASE

pytestmark = pytest.mark.integration


def test_the_soak_benchmark_measures_every_auto_label_and_each_service(settings, tmp_path):
    import redis

    from bench import soak

    client = redis.Redis.from_url(settings.redis_url)
    db = (int(client.connection_pool.connection_kwargs.get("db", 0)) + 9) % 16
    client.close()
    plot = tmp_path / "soak.png"
    body = soak.run(rate=200, seconds=5, warmup=1,
                    redis_url=settings.redis_url.rsplit("/", 1)[0] + f"/{db}",
                    database_url=settings.database_url, port_base=PORT_BASE + 60, plot=plot)
    stored = re.search(r"([\d,]+) of ([\d,]+) auto labels stored; (\d+) sampled tasks missing",
                       body)
    assert stored, body
    assert stored[1] == stored[2] and stored[3] == "0", body
    assert "1,000 predictions posted" in body
    for service in ("scorer", "router", "labels", "quality"):
        assert f"| {service} |" in body
    assert "| `loopwise:predictions` |" in body
    assert plot.stat().st_size > 0
    # A clean run logs no warning: a loop failing every few seconds behind good figures
    # (the quality service's zero-class refit did) fails here.
    assert "Warnings or errors in the services' logs: **none**." in body, body
