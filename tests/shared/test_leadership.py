"""Leadership among replicas: one holder of the lease at a time, handed over on release
or when the holder stops renewing it."""

from __future__ import annotations

import uuid

import pytest

from shared.leadership import Leadership
from shared.supervisor import Supervisor
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


async def test_one_replica_leads_and_another_takes_over_when_it_stops(redis):
    service = f"test-{uuid.uuid4().hex[:8]}"
    a, b = Leadership(redis, service, ttl=1.0), Leadership(redis, service, ttl=1.0)
    await a.keep()
    await b.keep()
    assert (a.held, b.held) == (True, False)
    await a.keep()  # renewing keeps it
    await b.keep()
    assert (a.held, b.held) == (True, False)

    await a.release()  # a clean stop hands over at once
    await b.keep()
    await a.keep()
    assert (a.held, b.held) == (False, True)

    async def lapsed() -> bool:  # b stops renewing (a crash): the lease lapses
        await a.keep()
        return a.held

    await wait_for(lapsed, 10, "the lapsed lease to be taken over")
    await b.keep()  # the old holder finds it lost and stops leading
    assert (a.held, b.held) == (True, False)
    await a.release()


async def test_service_loops_run_only_in_the_leading_replica(redis):
    service = f"test-{uuid.uuid4().hex[:8]}"
    ran: dict[str, int] = {"a": 0, "b": 0, "refresh-b": 0}
    supervisors = {}
    for name in ("a", "b"):
        sup = Supervisor(service)
        sup.leadership = Leadership(redis, service, ttl=5.0)
        await sup.leadership.keep()
        supervisors[name] = sup

    def bump(key: str):
        async def run() -> None:
            ran[key] += 1
        return run

    for name, sup in supervisors.items():
        sup.every("service work", 0.01, bump(name), immediately=True)
    supervisors["b"].every("own cache", 0.01, bump("refresh-b"), immediately=True,
                           each_replica=True)

    async def b_refreshed_and_a_worked() -> bool:
        return ran["refresh-b"] >= 5 and ran["a"] >= 5

    await wait_for(b_refreshed_and_a_worked, 10, "the loops to run")
    assert ran["b"] == 0  # the follower never did the service's work
    for sup in supervisors.values():
        await sup.stop()
        assert sup.leadership is not None
        await sup.leadership.release()
