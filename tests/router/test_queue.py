"""The review queue against real Redis: order, leases, overlap, late and repeated submits."""

import asyncio
import uuid

import pytest

from services.router.queue import NewTask, Paused, ReviewQueue

pytestmark = pytest.mark.integration


def _task(queue: ReviewQueue, project: str, priority: float, needed: int = 1) -> NewTask:
    tid = queue.new_task_id(project, str(uuid.uuid4()))
    return NewTask(tid, project, f"item-{tid[:6]}", priority, needed, {"payload": "null",
                                                                       "probs": "{}"})


async def _commit(queue: ReviewQueue, project: str, task_id: str, who: str, event_id: str):
    stream = f"{queue.prefix}test-labels"
    return await queue.commit_submit(project, task_id, who, event_id, stream,
                                     f'{{"event_id": "{event_id}"}}')


@pytest.fixture(params=[1, 3], ids=["one-shard", "three-shards"])
def queue(redis, request) -> ReviewQueue:
    return ReviewQueue(redis, prefix=f"test:{uuid.uuid4().hex[:8]}:", shards=request.param)


def _published(queue: ReviewQueue, stream: str, project: str) -> str:
    """The shard of ``stream`` the project's submits are published to."""
    return queue.labels_stream(stream, queue.shard_of(project))


async def test_most_uncertain_first_and_redelivery_adds_nothing(queue, project):
    low, high = _task(queue, project, 0.1), _task(queue, project, 0.9)
    assert (await queue.enqueue_many([low, high]))[0] == 2
    assert (await queue.enqueue_many([low]))[0] == 0
    first = await queue.next(project, "alice", 60)
    await _commit(queue, project, first[0], "alice", "e-first")
    second = await queue.next(project, "alice", 60)
    assert (first[0], second[0]) == (high.task_id, low.task_id)
    await _commit(queue, project, second[0], "alice", "e-second")
    assert await queue.next(project, "alice", 60) is None


async def test_a_live_lease_is_handed_back_until_submitted_skipped_or_expired(queue, project):
    """A reload (a second next without an answer) gets the held task back with its lease
    unchanged, instead of hiding it for the lease's length and leasing another."""
    a, b, c = _task(queue, project, 0.9), _task(queue, project, 0.5), _task(queue, project, 0.1)
    await queue.enqueue_many([a, b, c])
    held = await queue.next(project, "alice", 60)
    again = await queue.next(project, "alice", 60)
    assert held[0] == again[0] == a.task_id and held[1] == again[1]  # same lease expiry
    assert (await queue.next(project, "bob", 60))[0] == b.task_id  # others go on as before
    await _commit(queue, project, a.task_id, "alice", "e-a")
    after_submit = await queue.next(project, "alice", 60)
    assert after_submit[0] == c.task_id  # b is bob's; a is done
    assert await queue.skip(project, c.task_id, "alice") == "skipped"
    assert await queue.next(project, "alice", 60) is None  # nothing is handed back after a skip
    await _commit(queue, project, b.task_id, "bob", "e-b")
    assert (await queue.next(project, "carol", 1))[0] == c.task_id
    d = _task(queue, project, 0.3)
    await queue.enqueue_many([d])
    await asyncio.sleep(1.1)  # carol's lease runs out: she is given the next task, not c again
    assert (await queue.next(project, "carol", 60))[0] == d.task_id


async def test_overlap_hands_a_task_to_distinct_labelers_only(queue, project):
    t = _task(queue, project, 0.5, needed=3)
    await queue.enqueue_many([t])
    assert (await queue.next(project, "alice", 60))[0] == t.task_id
    assert (await _commit(queue, project, t.task_id, "alice", "e-alice"))[0] == "recorded"
    assert await queue.next(project, "alice", 60) is None  # never the same labeler twice
    assert (await queue.next(project, "bob", 60))[0] == t.task_id
    assert (await queue.next(project, "carol", 60))[0] == t.task_id
    assert await queue.next(project, "dave", 60) is None  # all three slots taken
    for who in ("bob", "carol"):
        _, standing, _ = await queue.task_with_state(t.task_id, who)
        assert standing == "on_time"
        assert (await _commit(queue, project, t.task_id, who, f"e-{who}"))[0] == "recorded"
    assert (await queue.task(t.task_id))["state"] == "done"
    assert await queue.depth(project) == 0


async def test_expired_lease_returns_the_task_and_late_submit_is_accepted_once(queue, project):
    t = _task(queue, project, 0.5)
    await queue.enqueue_many([t])
    await queue.next(project, "alice", 1)
    await asyncio.sleep(1.1)
    assert (await queue.next(project, "bob", 60))[0] == t.task_id  # back in the queue
    assert (await queue.task_with_state(t.task_id, "alice"))[1:] == ("late", None)
    assert (await _commit(queue, project, t.task_id, "alice", "e1")) == ("recorded", "e1")
    assert (await _commit(queue, project, t.task_id, "alice", "e2")) == ("duplicate", "e1")
    assert (await queue.task_with_state(t.task_id, "alice"))[1:] == ("duplicate", "e1")
    assert (await queue.task_with_state(t.task_id, "bob"))[1:] == ("on_time", None)


async def test_submit_requires_having_been_handed_the_task(queue, project):
    t = _task(queue, project, 0.5)
    await queue.enqueue_many([t])
    task, standing, _ = await queue.task_with_state(t.task_id, "mallory")
    assert task["item_id"] == t.item_id and standing == "not_handed"
    assert (await queue.task_with_state("no-such-task", "mallory"))[0] is None


async def test_skip_returns_the_task_to_others_not_to_the_skipper(queue, project):
    t = _task(queue, project, 0.5)
    await queue.enqueue_many([t])
    await queue.next(project, "alice", 60)
    assert await queue.skip(project, t.task_id, "alice") == "skipped"
    assert await queue.skip(project, t.task_id, "alice") == "not_leased"
    assert await queue.next(project, "alice", 60) is None
    assert (await queue.next(project, "bob", 60))[0] == t.task_id


async def test_concurrent_pulls_never_hand_one_slot_twice(queue, project):
    tasks = [_task(queue, project, i / 100) for i in range(50)]
    await queue.enqueue_many(tasks)
    got = await asyncio.gather(*(queue.next(project, f"u{i}", 60) for i in range(80)))
    handed = [g[0] for g in got if g]
    assert len(handed) == 50 and len(set(handed)) == 50


async def test_a_full_queue_keeps_the_most_uncertain_and_records_what_it_dropped(queue, project):
    tasks = [_task(queue, project, p) for p in (0.5, 0.1, 0.9, 0.3, 0.7)]
    added, dropped = await queue.enqueue_many(tasks, cap=3)
    assert added == 5 and dropped == {project: 2}
    kept = [(await queue.next(project, f"u{i}", 60))[0] for i in range(3)]
    assert kept == [tasks[2].task_id, tasks[4].task_id, tasks[0].task_id]
    records = await queue.dropped(project)
    assert {r["task_id"] for r in records} == {tasks[1].task_id, tasks[3].task_id}
    assert (await queue.task(tasks[1].task_id))["state"] == "dropped"


async def test_a_direct_task_is_handed_out_by_the_same_script_and_never_requeued(queue, project):
    gold = _task(queue, project, 0.0)
    gold.fields["kind"] = "gold"
    got = await queue.next(project, "alice", 1, direct=gold)
    assert got[0] == gold.task_id
    await asyncio.sleep(1.1)
    assert await queue.next(project, "bob", 60) is None  # an expired gold task is not requeued
    assert (await queue.task(gold.task_id))["state"] == "expired"


@pytest.mark.parametrize("end", ["lapse", "skip"])
async def test_a_salted_gold_pair_ends_with_its_reviewer_and_is_never_requeued(
        queue, project, end):
    """A gold pair is a comparison made for one reviewer: neither a lapsed lease nor a
    skip hands it to anyone else."""
    pair = _task(queue, project, 0.0)
    pair.fields["kind"] = "comparison"
    salted = NewTask(pair.task_id, pair.project, pair.item_id, pair.priority, 1,
                     pair.fields, salted=True)
    got = await queue.next(project, "alice", 1, kind="comparison", direct=salted)
    assert got[0] == salted.task_id
    if end == "lapse":
        await asyncio.sleep(1.1)
    else:
        assert await queue.skip(project, salted.task_id, "alice", kind="comparison") == "skipped"
    assert await queue.next(project, "bob", 60, kind="comparison") is None
    assert await queue.next(project, "alice", 60, kind="comparison") is None
    assert (await queue.task(salted.task_id))["state"] == ("expired" if end == "lapse"
                                                          else "skipped")


async def test_a_submission_publishes_its_event_once_with_its_observation(queue, redis, project):
    t = _task(queue, project, 0.5)
    await queue.enqueue_many([t])
    await queue.next(project, "alice", 60)
    stream, observations = f"{queue.prefix}labels", queue.key("obs", project)
    for _ in range(2):  # a retried submit publishes nothing more
        await queue.commit_submit(project, t.task_id, "alice", "e1", stream, '{"n": 1}',
                                  observation=(observations, "0.6|1|1.0", 10))
    entries = await redis.xrange(_published(queue, stream, project))
    assert [e[1][b"data"] for e in entries] == [b'{"n": 1}']
    assert await redis.lrange(observations, 0, -1) == [b"0.6|1|1.0"]
    # A reader takes in only what it has not seen, and everything after a reset.
    assert await queue.observations_since(observations, 0, 10) == (1, [b"0.6|1|1.0"])
    assert await queue.observations_since(observations, 1, 10) == (1, [])
    await redis.lpush(observations, "0.7|0|1.0", "0.8|1|1.0")
    await redis.incrby(f"{observations}:n", 2)
    assert await queue.observations_since(observations, 1, 10) == (
        3, [b"0.8|1|1.0", b"0.7|0|1.0"])
    assert (await queue.observations_since(observations, 9, 10))[1] == [
        b"0.8|1|1.0", b"0.7|0|1.0", b"0.6|1|1.0"]


async def test_a_paused_labeler_gets_no_task(queue, redis, project):
    await queue.enqueue_many([_task(queue, project, 0.5)])
    paused = queue.key("paused", project)
    await redis.sadd(paused, "mallory")
    with pytest.raises(Paused):
        await queue.next(project, "mallory", 60, paused_key=paused)
    assert await queue.next(project, "alice", 60, paused_key=paused) is not None


async def test_one_step_submit_decides_standing_and_records_once(queue, redis, project):
    """The path of a process that handed the task out: standing and record in one script."""
    t = _task(queue, project, 0.5, needed=2)
    await queue.enqueue_many([t])
    stream = f"{queue.prefix}labels"

    async def submit(who: str, event_id: str):
        return await queue.submit(project, t.task_id, who, event_id, stream,
                                  f'{{"id": "{event_id}", "late": false}}',
                                  f'{{"id": "{event_id}", "late": true}}')

    assert await submit("mallory", "m1") == ("not_handed", "", False)
    await queue.next(project, "alice", 1)
    await queue.next(project, "bob", 60)
    await asyncio.sleep(1.1)  # alice's lease runs out; bob's does not
    assert (await queue.next(project, "carol", 60))[0] == t.task_id  # alice's slot reopened
    assert await submit("bob", "b1") == ("recorded", "b1", False)
    assert await submit("alice", "a1") == ("recorded", "a1", True)  # late, accepted once
    assert await submit("alice", "a2") == ("duplicate", "a1", False)
    assert [e[1][b"data"] for e in await redis.xrange(
        _published(queue, stream, project))] == [
        b'{"id": "b1", "late": false}', b'{"id": "a1", "late": true}']
    assert (await queue.task(t.task_id))["state"] == "done"
    assert (await queue.task_with_state(t.task_id, "carol"))[1] == "on_time"


async def test_a_cancelled_script_call_leaves_no_reply_behind_for_the_next_caller(redis):
    from services.router.queue import ScriptRunner

    slow = redis.register_script(
        "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] "
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 150000 return 'slow'")
    echo = redis.register_script("return ARGV[1]")
    await redis.script_load(slow.script)
    run_script = ScriptRunner(redis)  # one runner: its connections are reused
    call = asyncio.ensure_future(run_script(slow, [], []))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for i in range(3):  # every pooled connection answers its own command
        assert await run_script(echo, [], [f"mine-{i}"]) == f"mine-{i}".encode()
    await run_script.aclose()


async def test_a_lapsed_lease_goes_back_to_its_own_kind_of_queue(queue, project):
    """Review and adjudication leases share one index a project; the sweep that runs in
    either kind's ``next`` must return a lapsed task to the queue of its own kind, never to
    the other (a review task must not be offered as an adjudication, nor vanish from review)."""
    review = _task(queue, project, 0.5)
    adjudication = NewTask(queue.new_task_id(project, str(uuid.uuid4())), project, "item-adj",
                           0.5, 1, {"kind": "adjudication", "payload": "null", "probs": "{}"})
    await queue.enqueue_many([review])
    await queue.enqueue_many([adjudication], kind="adjudication")
    assert (await queue.next(project, "alice", 1))[0] == review.task_id
    assert (await queue.next(project, "alice", 1, kind="adjudication"))[0] == adjudication.task_id
    await asyncio.sleep(1.1)
    # bob asks for adjudication first: that call sweeps both lapsed leases
    assert (await queue.next(project, "bob", 60, kind="adjudication"))[0] == adjudication.task_id
    assert await queue.next(project, "carol", 60, kind="adjudication") is None
    assert (await queue.next(project, "carol", 60))[0] == review.task_id
    assert await queue.depth(project) == 0 and await queue.depth(project, "adjudication") == 0
