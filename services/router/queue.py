"""The review queue in Redis: per-project priority order, leases, overlap, idempotent submit.

Every state change is one Lua script, so concurrent reviewers and routers
cannot interleave half-way. Keys (prefix ``loopwise:router:``):
``queue:{project}`` zset task → priority (tasks with an open slot);
``leases:{project}`` zset "task|labeler" → lease expiry (ms);
``task:{id}`` hash of the task; ``task:{id}:leases`` labeler → expiry;
``task:{id}:seen`` labelers not to hand it again; ``task:{id}:handed``
everyone it was ever handed to (a late submit is accepted from them);
``task:{id}:submitted`` labeler → label event id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

PREFIX = "loopwise:router:"

_ENQUEUE = """
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
if redis.call('EXISTS', tkey) == 1 then return 0 end
redis.call('HSET', tkey, 'task_id', ARGV[2], 'state', 'open', 'done', 0, unpack(ARGV, 5))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"""

_NEXT = """
local queue, leases = KEYS[1], KEYS[2]
local labeler, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, prefix = tonumber(ARGV[4]), ARGV[5]
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
for _, member in ipairs(expired) do
  redis.call('ZREM', leases, member)
  local sep = string.find(member, '|', 1, true)
  local tid = string.sub(member, 1, sep - 1)
  local who = string.sub(member, sep + 1)
  local tkey = prefix .. 'task:' .. tid
  redis.call('HDEL', tkey .. ':leases', who)
  redis.call('SREM', tkey .. ':seen', who)
  if redis.call('HGET', tkey, 'state') == 'open' then
    redis.call('ZADD', queue, redis.call('HGET', tkey, 'priority'), tid)
  end
end
local candidates = redis.call('ZREVRANGE', queue, 0, limit - 1)
for _, tid in ipairs(candidates) do
  local tkey = prefix .. 'task:' .. tid
  if redis.call('SISMEMBER', tkey .. ':seen', labeler) == 0 then
    local expires = now + ttl
    redis.call('SADD', tkey .. ':seen', labeler)
    redis.call('SADD', tkey .. ':handed', labeler)
    redis.call('HSET', tkey .. ':leases', labeler, expires)
    redis.call('ZADD', leases, expires, tid .. '|' .. labeler)
    local active = redis.call('HLEN', tkey .. ':leases')
      + tonumber(redis.call('HGET', tkey, 'done'))
    if active >= tonumber(redis.call('HGET', tkey, 'needed')) then
      redis.call('ZREM', queue, tid)
    end
    return {tid, tostring(expires)}
  end
end
return false
"""

_CHECK = """
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
local labeler, now = ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', tkey) == 0 then return {'missing'} end
local previous = redis.call('HGET', tkey .. ':submitted', labeler)
if previous then return {'duplicate', previous} end
if redis.call('SISMEMBER', tkey .. ':handed', labeler) == 0 then return {'not_handed'} end
local lease = redis.call('HGET', tkey .. ':leases', labeler)
if lease and tonumber(lease) >= now then return {'ok', 'on_time'} end
return {'ok', 'late'}
"""

_COMMIT = """
local queue, leases = KEYS[1], KEYS[2]
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
local labeler, event_id = ARGV[3], ARGV[4]
if redis.call('HSETNX', tkey .. ':submitted', labeler, event_id) == 0 then
  return {'duplicate', redis.call('HGET', tkey .. ':submitted', labeler)}
end
redis.call('HDEL', tkey .. ':leases', labeler)
redis.call('ZREM', leases, ARGV[2] .. '|' .. labeler)
redis.call('SADD', tkey .. ':seen', labeler)
local done = redis.call('HINCRBY', tkey, 'done', 1)
if done >= tonumber(redis.call('HGET', tkey, 'needed')) then
  redis.call('HSET', tkey, 'state', 'done')
  redis.call('ZREM', queue, ARGV[2])
end
return {'recorded', event_id}
"""

_SKIP = """
local queue, leases = KEYS[1], KEYS[2]
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
local labeler = ARGV[3]
if redis.call('EXISTS', tkey) == 0 then return 'missing' end
if redis.call('HDEL', tkey .. ':leases', labeler) == 0 then return 'not_leased' end
redis.call('ZREM', leases, ARGV[2] .. '|' .. labeler)
redis.call('SADD', tkey .. ':skipped', labeler)
local active = redis.call('HLEN', tkey .. ':leases') + tonumber(redis.call('HGET', tkey, 'done'))
local needed = tonumber(redis.call('HGET', tkey, 'needed'))
if redis.call('HGET', tkey, 'state') == 'open' and active < needed then
  redis.call('ZADD', queue, redis.call('HGET', tkey, 'priority'), ARGV[2])
end
return 'skipped'
"""


@dataclass(frozen=True, slots=True)
class NewTask:
    task_id: str
    project: str
    item_id: str
    priority: float
    needed: int
    fields: dict[str, str]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ReviewQueue:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX, scan_limit: int = 200) -> None:
        self.redis = redis
        self.prefix = prefix
        self.scan_limit = scan_limit
        self._enqueue = redis.register_script(_ENQUEUE)
        self._next = redis.register_script(_NEXT)
        self._check = redis.register_script(_CHECK)
        self._commit = redis.register_script(_COMMIT)
        self._skip = redis.register_script(_SKIP)

    def queue_key(self, project: str) -> str:
        return f"{self.prefix}queue:{project}"

    def leases_key(self, project: str) -> str:
        return f"{self.prefix}leases:{project}"

    def task_key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    async def enqueue_many(self, tasks: list[NewTask]) -> int:
        """Add tasks; a task id already known is left as it is (a redelivery adds nothing)."""
        if not tasks:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for t in tasks:
            flat: list[str] = []
            fields = {
                **t.fields,
                "project": t.project,
                "item_id": t.item_id,
                "priority": repr(t.priority),
                "needed": str(t.needed),
            }
            for k, v in fields.items():
                flat += [k, v]
            await self._enqueue(
                keys=[self.queue_key(t.project)],
                args=[self.prefix, t.task_id, repr(t.priority), "", *flat],
                client=pipe,
            )
        return sum(int(x) for x in await pipe.execute())

    async def next(self, project: str, labeler: str, lease_seconds: int) -> tuple[str, int] | None:
        """Lease the most uncertain open task this labeler has not seen; None when none."""
        now = int(time.time() * 1000)
        got = await self._next(
            keys=[self.queue_key(project), self.leases_key(project)],
            args=[labeler, now, lease_seconds * 1000, self.scan_limit, self.prefix],
        )
        if not got:
            return None
        return _text(got[0]), int(_text(got[1]))

    async def task(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.task_key(task_id))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def check_submit(self, task_id: str, labeler: str) -> tuple[str, str | None]:
        now = int(time.time() * 1000)
        got = await self._check(keys=[], args=[self.prefix, task_id, labeler, now])
        return _text(got[0]), (_text(got[1]) if len(got) > 1 else None)

    async def commit_submit(
        self, project: str, task_id: str, labeler: str, event_id: str
    ) -> tuple[str, str]:
        got = await self._commit(
            keys=[self.queue_key(project), self.leases_key(project)],
            args=[self.prefix, task_id, labeler, event_id],
        )
        return _text(got[0]), _text(got[1])

    async def skip(self, project: str, task_id: str, labeler: str) -> str:
        got = await self._skip(
            keys=[self.queue_key(project), self.leases_key(project)],
            args=[self.prefix, task_id, labeler],
        )
        return _text(got)

    async def depth(self, project: str) -> int:
        return int(await self.redis.zcard(self.queue_key(project)))


def task_fields(
    payload: Any, probs: dict[str, float], model_version: str, prediction_id: str, created_at: str
) -> dict[str, str]:
    return {
        "payload": json.dumps(payload),
        "probs": json.dumps(probs),
        "model_version": model_version,
        "prediction_event_id": prediction_id,
        "created_at": created_at,
    }
