"""Retention of the review queue against real Redis: a finished task and the keys hanging
off it expire a stated time after it finished, set by the script that finishes it; open
tasks never expire; dropped-task records leave their list once older than their time."""

import uuid

import pytest
from pydantic import ValidationError

from services.router import queue as queue_module
from services.router.queue import NewTask, ReviewQueue
from shared.settings import Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
SUFFIXES = ("", ":leases", ":seen", ":handed", ":submitted", ":skipped")


def _task(queue: ReviewQueue, project: str, priority: float = 0.5, needed: int = 1,
          kind: str = "review") -> NewTask:
    tid = queue.new_task_id(project, str(uuid.uuid4()))
    return NewTask(tid, project, f"item-{tid[:6]}", priority, needed,
                   {"payload": "null", "probs": "{}", "kind": kind})


@pytest.fixture
def queue(redis) -> ReviewQueue:
    return ReviewQueue(redis, prefix=f"test:{uuid.uuid4().hex[:8]}:",
                       finished_ttl_ms=HOUR_MS, dropped_ttl_ms=HOUR_MS)


async def _ttls(queue: ReviewQueue, task_id: str) -> dict[str, int]:
    """PTTL of each key of the task that exists (-1: no expiry)."""
    key = queue.task_key(task_id)
    ttls = {s: await queue.redis.pttl(key + s) for s in SUFFIXES}
    return {s: t for s, t in ttls.items() if t != -2}


async def _submit(queue: ReviewQueue, project: str, task_id: str, who: str) -> str:
    outcome, _ = await queue.commit_submit(project, task_id, who, f"e-{who}",
                                           f"{queue.prefix}labels", "{}")
    return outcome


async def test_a_done_task_expires_with_its_keys_and_an_open_one_never(queue, project):
    t = _task(queue, project, needed=2)
    await queue.enqueue_many([t])
    await queue.next(project, "alice", 60)
    assert await _submit(queue, project, t.task_id, "alice") == "recorded"
    open_ttls = await _ttls(queue, t.task_id)
    assert open_ttls and set(open_ttls.values()) == {-1}  # one of two labels: still open

    await queue.next(project, "bob", 60)
    assert await _submit(queue, project, t.task_id, "bob") == "recorded"
    ttls = await _ttls(queue, t.task_id)
    assert {"", ":seen", ":handed", ":submitted"} <= set(ttls)
    assert all(0 < ttl <= HOUR_MS for ttl in ttls.values())
    # Until it expires, a repeated submit is still recognised.
    assert await _submit(queue, project, t.task_id, "bob") == "duplicate"


async def test_a_finished_task_is_gone_after_its_time(redis, project):
    queue = ReviewQueue(redis, prefix=f"test:{uuid.uuid4().hex[:8]}:", finished_ttl_ms=50)
    t = _task(queue, project)
    await queue.enqueue_many([t])
    await queue.next(project, "alice", 60)
    assert await _submit(queue, project, t.task_id, "alice") == "recorded"

    async def gone() -> bool:
        return not await _ttls(queue, t.task_id)

    await wait_for(gone, timeout=10, what="the finished task's keys to expire")
    assert await queue.task(t.task_id) is None


async def test_a_skip_after_the_finish_expires_with_the_task(queue, project):
    t = _task(queue, project)
    await queue.enqueue_many([t])
    await queue.next(project, "alice", 1)
    await queue.redis.zadd(queue.leases_key(project), {f"{t.task_id}|alice": 0})
    await queue.next(project, "bob", 60)  # alice's lease ran out: bob gets the task
    assert await _submit(queue, project, t.task_id, "alice") == "recorded"  # late, done
    assert await queue.skip(project, t.task_id, "bob") == "skipped"  # after the finish
    ttls = await _ttls(queue, t.task_id)
    assert ":skipped" in ttls and all(0 < ttl <= HOUR_MS for ttl in ttls.values())


async def test_gold_tasks_expire_once_skipped(queue, project):
    gold = _task(queue, project, kind="gold")
    await queue.next(project, "alice", 60, direct=gold)
    assert await queue.skip(project, gold.task_id, "alice") == "skipped"
    assert (await queue.task(gold.task_id))["state"] == "skipped"
    assert all(0 < ttl <= HOUR_MS for ttl in (await _ttls(queue, gold.task_id)).values())


async def test_dropped_tasks_expire_and_their_records_leave_the_list_by_age(
        queue, project, monkeypatch):
    now = 10 * HOUR_MS
    monkeypatch.setattr(queue_module, "_now_ms", lambda: now)
    first = [_task(queue, project, 0.1), _task(queue, project, 0.9)]
    _, dropped = await queue.enqueue_many(first, cap=1)
    assert dropped[project] == 1
    assert 0 < await queue.redis.pttl(queue.task_key(first[0].task_id)) <= HOUR_MS
    assert 0 < await queue.redis.pttl(queue.dropped_key(project)) <= HOUR_MS

    now += HOUR_MS // 2  # half an hour later: the first record is kept
    await queue.enqueue_many([_task(queue, project, 0.05)], cap=1)
    assert [r["task_id"] for r in await queue.dropped(project)][:1] == [first[0].task_id]

    now += HOUR_MS  # 1.5 h after the first drop, 1 h after the second
    late = _task(queue, project, 0.01)
    await queue.enqueue_many([late], cap=1)
    assert [r["task_id"] for r in await queue.dropped(project)] == [late.task_id]


def test_a_task_may_not_expire_before_its_lease():
    with pytest.raises(ValidationError, match="lease_seconds"):
        Settings(lease_seconds=600, task_retention_seconds=60)


async def test_the_item_index_forgets_items_whose_task_expired(queue, project):
    kept, gone = _task(queue, project), _task(queue, project)
    await queue.enqueue_many([kept, gone])
    await queue.redis.delete(queue.task_key(gone.task_id))  # as its expiry would
    assert await queue.forget_expired_items(chunk=1) == 1
    assert (await queue.task_of_item(project, kept.item_id))["task_id"] == kept.task_id
    assert await queue.redis.hget(queue.items_key(project), gone.item_id) is None
