"""The review queue in Redis: per-project priority order, leases, overlap, idempotent submit.

Every state change is one Lua script, so concurrent reviewers and routers
cannot interleave half-way. Keys (prefix ``loopwise:router:``):
``queue:{project}`` zset task → priority (tasks with an open slot; the
adjudication queue is ``adjudication:{project}``); ``leases:{project}`` zset
"task|labeler" → lease expiry (ms); ``task:{id}`` hash of the task;
``task:{id}:leases`` labeler → expiry; ``task:{id}:seen`` labelers not to
hand it again; ``task:{id}:handed`` everyone it was ever handed to (a late
submit is accepted from them); ``task:{id}:submitted`` labeler → event id;
``dropped:{project}`` list of tasks dropped because the queue was full.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

PREFIX = "loopwise:router:"

# KEYS: queue, dropped list. ARGV: prefix, task id, priority, cap, now, field/value pairs...
_ENQUEUE = """
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
if redis.call('EXISTS', tkey) == 1 then return {0, 0} end
redis.call('HSET', tkey, 'task_id', ARGV[2], 'state', 'open', 'done', 0, unpack(ARGV, 6))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local cap = tonumber(ARGV[4])
local dropped = 0
if cap > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - cap
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[1], excess)
    for i = 1, #popped, 2 do
      local dkey = ARGV[1] .. 'task:' .. popped[i]
      redis.call('HSET', dkey, 'state', 'dropped')
      redis.call('RPUSH', KEYS[2], cjson.encode({task_id = popped[i], priority = popped[i + 1],
        item_id = redis.call('HGET', dkey, 'item_id'), dropped_at = ARGV[5]}))
      dropped = dropped + 1
    end
  end
end
return {1, dropped}
"""

# KEYS: queue, leases index. ARGV: labeler, now, ttl, scan limit, prefix,
# then optionally a task id and field/value pairs of a task to create and hand out directly.
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
    if redis.call('HGET', tkey, 'kind') == 'gold' then
      redis.call('HSET', tkey, 'state', 'expired')
    else
      redis.call('ZADD', queue, redis.call('HGET', tkey, 'priority'), tid)
    end
  end
end
local function lease(tid, tkey)
  local expires = now + ttl
  redis.call('SADD', tkey .. ':seen', labeler)
  redis.call('SADD', tkey .. ':handed', labeler)
  redis.call('HSET', tkey .. ':leases', labeler, expires)
  redis.call('ZADD', leases, expires, tid .. '|' .. labeler)
  return {tid, tostring(expires)}
end
if ARGV[6] then
  local tkey = prefix .. 'task:' .. ARGV[6]
  redis.call('HSET', tkey, 'task_id', ARGV[6], 'state', 'open', 'done', 0, unpack(ARGV, 7))
  return lease(ARGV[6], tkey)
end
local candidates = redis.call('ZREVRANGE', queue, 0, limit - 1)
for _, tid in ipairs(candidates) do
  local tkey = prefix .. 'task:' .. tid
  if redis.call('SISMEMBER', tkey .. ':seen', labeler) == 0 then
    local got = lease(tid, tkey)
    local active = redis.call('HLEN', tkey .. ':leases')
      + tonumber(redis.call('HGET', tkey, 'done'))
    if active >= tonumber(redis.call('HGET', tkey, 'needed')) then
      redis.call('ZREM', queue, tid)
    end
    return got
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
  return {'duplicate', redis.call('HGET', tkey .. ':submitted', labeler), '0'}
end
redis.call('HDEL', tkey .. ':leases', labeler)
redis.call('ZREM', leases, ARGV[2] .. '|' .. labeler)
redis.call('SADD', tkey .. ':seen', labeler)
local done = redis.call('HINCRBY', tkey, 'done', 1)
if done >= tonumber(redis.call('HGET', tkey, 'needed')) then
  redis.call('HSET', tkey, 'state', 'done')
  redis.call('ZREM', queue, ARGV[2])
end
return {'recorded', event_id, tostring(done)}
"""

_SKIP = """
local queue, leases = KEYS[1], KEYS[2]
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
local labeler = ARGV[3]
if redis.call('EXISTS', tkey) == 0 then return 'missing' end
if redis.call('HDEL', tkey .. ':leases', labeler) == 0 then return 'not_leased' end
redis.call('ZREM', leases, ARGV[2] .. '|' .. labeler)
redis.call('SADD', tkey .. ':skipped', labeler)
if redis.call('HGET', tkey, 'kind') == 'gold' then
  redis.call('HSET', tkey, 'state', 'skipped')
  return 'skipped'
end
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

    def flat(self) -> list[str]:
        fields = {**self.fields, "project": self.project, "item_id": self.item_id,
                  "priority": repr(self.priority), "needed": str(self.needed)}
        out: list[str] = []
        for k, v in fields.items():
            out += [k, v]
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


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

    def queue_key(self, project: str, kind: str = "review") -> str:
        name = "adjudication" if kind == "adjudication" else "queue"
        return f"{self.prefix}{name}:{project}"

    def leases_key(self, project: str) -> str:
        return f"{self.prefix}leases:{project}"

    def task_key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def dropped_key(self, project: str) -> str:
        return f"{self.prefix}dropped:{project}"

    async def enqueue_many(self, tasks: list[NewTask], cap: int | dict[str, int] = 0,
                           kind: str = "review") -> tuple[int, Counter[str]]:
        """Add tasks; a known task id is left as it is (a redelivery adds nothing).

        With a cap, the queue keeps its most uncertain tasks and records the
        least uncertain ones it drops. Returns (added, dropped per project).
        """
        if not tasks:
            return 0, Counter()
        pipe = self.redis.pipeline(transaction=False)
        now = str(_now_ms())
        for t in tasks:
            limit = cap.get(t.project, 0) if isinstance(cap, dict) else cap
            await self._enqueue(
                keys=[self.queue_key(t.project, kind), self.dropped_key(t.project)],
                args=[self.prefix, t.task_id, repr(t.priority), limit, now, *t.flat()],
                client=pipe,
            )
        results = await pipe.execute()
        dropped: Counter[str] = Counter()
        for t, r in zip(tasks, results, strict=True):
            dropped[t.project] += int(r[1])
        return sum(int(r[0]) for r in results), +dropped

    async def next(self, project: str, labeler: str, lease_seconds: int, kind: str = "review",
                   direct: NewTask | None = None) -> tuple[str, int] | None:
        """Lease the most uncertain open task this labeler has not seen; None when none.

        ``direct`` creates a task and hands it out in the same script (gold salting),
        so a gold task takes the same path as any other.
        """
        extra = [direct.task_id, *direct.flat()] if direct else []
        got = await self._next(
            keys=[self.queue_key(project, kind), self.leases_key(project)],
            args=[labeler, _now_ms(), lease_seconds * 1000, self.scan_limit, self.prefix, *extra],
        )
        if not got:
            return None
        return _text(got[0]), int(_text(got[1]))

    async def task(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.task_key(task_id))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def check_submit(self, task_id: str, labeler: str) -> tuple[str, str | None]:
        got = await self._check(keys=[], args=[self.prefix, task_id, labeler, _now_ms()])
        return _text(got[0]), (_text(got[1]) if len(got) > 1 else None)

    async def commit_submit(self, project: str, task_id: str, labeler: str, event_id: str,
                            kind: str = "review") -> tuple[str, str]:
        got = await self._commit(
            keys=[self.queue_key(project, kind), self.leases_key(project)],
            args=[self.prefix, task_id, labeler, event_id],
        )
        return _text(got[0]), _text(got[1])

    async def skip(self, project: str, task_id: str, labeler: str, kind: str = "review") -> str:
        got = await self._skip(
            keys=[self.queue_key(project, kind), self.leases_key(project)],
            args=[self.prefix, task_id, labeler],
        )
        return _text(got)

    async def depth(self, project: str, kind: str = "review") -> int:
        return int(await self.redis.zcard(self.queue_key(project, kind)))

    async def dropped(self, project: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.redis.lrange(self.dropped_key(project), -limit, -1)
        return [json.loads(r) for r in rows]
