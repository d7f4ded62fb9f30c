"""The documented, stable sharding scheme: a project's shard never depends on the process,
machine or Python version, and every key of a shard lies in one Redis Cluster slot."""

from __future__ import annotations

import zlib

import pytest
from redis.crc import key_slot

from shared import sharding, streams


def test_a_projects_shard_is_crc32_of_its_name_mod_the_shard_count():
    # Pinned values: changing the scheme would move every project to other keys.
    assert [sharding.shard_of(p, 12) for p in ("demo", "alpha", "beta", "digits")] == [
        0, 10, 7, 10]
    assert [sharding.shard_of(p, 16) for p in ("demo", "alpha", "beta", "digits")] == [
        0, 10, 3, 2]
    for name in ("x" * 64, "ünïcode", "a b"):
        assert sharding.shard_of(name, 12) == zlib.crc32(name.encode()) % 12
    assert all(sharding.shard_of(f"p{n}", 1) == 0 for n in range(50))


def test_every_key_of_a_shard_hashes_to_one_slot_and_shards_spread():
    for shard in range(12):
        tag = sharding.tag(shard)
        keys = [sharding.shard_stream(streams.PREDICTIONS, shard),
                sharding.shard_stream(streams.LABELS, shard),
                f"loopwise:router:{tag}:queue:some-project",
                f"loopwise:router:{tag}:task:{sharding.task_id(shard, 'abc')}"]
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    slots = {key_slot(sharding.shard_stream(streams.ITEMS, k).encode()) for k in range(12)}
    assert len(slots) == 12


def test_the_plain_stream_of_the_contract_is_consumed_with_the_shards():
    names = sharding.every_stream(streams.PREDICTIONS, 3)
    assert names == ["loopwise:predictions:{0}", "loopwise:predictions:{1}",
                     "loopwise:predictions:{2}", "loopwise:predictions"]


@pytest.mark.parametrize(("task", "shard"), [
    ("3.6f1c", 3), ("11.x", 11), ("0.a.b", 0), ("abc", None), (".x", None),
    ("1234567.x", None), ("-1.x", None), ("", None)])
def test_a_task_id_names_its_shard(task, shard):
    assert sharding.shard_of_task(task) == shard
