"""The review queue in Redis: per-project priority order, leases, overlap, idempotent submit.

Every state change is one Lua script, so concurrent reviewers and routers
cannot interleave half-way. Keys (prefix ``loopwise:router:{k}:``, where ``{k}`` is the
hash tag of the project's shard, :mod:`shared.sharding`, so that on a Redis Cluster a
project's keys and the label stream shard its scripts publish to share one slot):
``queue:{project}`` zset task → priority (tasks with an open slot; the
adjudication queue is ``adjudication:{project}``); ``leases:{project}`` zset
"task|labeler" → lease expiry (ms); ``task:{id}`` hash of the task (what the scripts
read as fields, everything else as one JSON ``body``); ``items:{project}`` item →
its latest task;
``task:{id}:leases`` labeler → expiry; ``task:{id}:leased_at`` labeler → when their
latest lease began (a submit's duration is measured from it); ``task:{id}:seen`` labelers not to
hand it again; ``task:{id}:handed`` everyone it was ever handed to (a late
submit is accepted from them); ``task:{id}:submitted`` labeler → event id;
``dropped:{project}`` list of tasks dropped because the queue was full;
``held:{queue|adjudication}:{project}`` labeler → the task of their newest lease (a
reload gets it back while the lease lives); ``progress:{project}:{labeler}:{day}``
quarter-hour → the labeler's recorded submits (the reviewer page's "labeled today").
A task id starts with its shard (``3.<uuid>``), so ``task:{id}`` is found from the id
alone.

On a cluster every script runs in one slot: the keys known before the call (the
anchors, the tasks named, the stream) are declared in KEYS, which routes the call and
lets Redis check that they share the slot; those a script finds as it runs (a task
popped off a full queue, a lease that lapsed) are named from the same tagged prefix. A
routed batch is split per shard, one call a shard.

Retention: a task that is finished (done, dropped, a gold task expired or skipped) is
kept, with its ``:leases``/``:seen``/``:handed``/``:submitted``/``:skipped``/``:leased_at``
keys, for
``finished_ttl_ms`` after its last change, then Redis expires it: the script that
finishes it sets the PEXPIRE, so the expiry is atomic with the finish and nothing has to
sweep. A dropped-task record leaves its list once older than ``dropped_ttl_ms`` (the
enqueue script pops old records from the head as it pushes new ones), and the list
itself expires that long after its last push. Open tasks never expire: they are work.
An ``items:{project}`` entry whose task has expired is removed by
:meth:`ReviewQueue.forget_expired_items`, which the router runs now and then (a hash
field cannot expire on its own before Redis 7.4). Within the retention a redelivered
prediction finds its task and adds nothing; after it, it would be queued again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from shared import sharding
from shared.events import stable_key
from shared.redisconn import is_cluster_client
from shared.redislink import ClusterLink, RedisLink, Unsupported
from shared.wire import text as _text

from .progress import PROGRESS_TTL_MS, bucket_of, parse_buckets

PREFIX = "loopwise:router:"

# Defaults of the retention (shared.settings: task_retention_seconds, ...).
FINISHED_TTL_MS = 7 * 24 * 3600 * 1000
DROPPED_TTL_MS = 7 * 24 * 3600 * 1000

# Lua: expire a finished task and the keys that hang off it ``ttl`` ms from now (again
# after each later change: a late submit, a skip). PEXPIRE of a missing key does nothing.
_SETTLE = """
local function settle(tkey, ttl)
  redis.call('PEXPIRE', tkey, ttl)
  for _, suffix in ipairs({':leases', ':seen', ':handed', ':submitted', ':skipped', ':order',
                           ':leased_at'}) do
    redis.call('PEXPIRE', tkey .. suffix, ttl)
  end
end
-- A task made for one labeler (a salted gold item or gold pair): never queued, so a lease
-- that lapses or a skip ends it instead of handing it to someone else.
local function salted(tkey)
  return redis.call('HGET', tkey, 'kind') == 'gold' or redis.call('HGET', tkey, 'salted') == '1'
end
"""

# A whole routed batch in one call. ARGV: prefix, queue name ('queue' or 'adjudication'),
# now, label stream, finished-task ttl (ms), dropped-record ttl (ms), then a count and
# that many label event JSONs to XADD, then a count and that many tasks of 7 values (id,
# project, item id, priority, needed, kind, body), then a count and that many (project,
# cap) pairs. A known task id is left alone.
# Returns {tasks added, JSON object project -> tasks dropped}.
_ENQUEUE = _SETTLE + """
local prefix, name, now, stream = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local task_ttl, dropped_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  redis.call('XADD', stream, '*', 'data', ARGV[i])
  i = i + 1
end
local added = 0
local new = {}  -- project -> {zadd args, hset args}: one call a project, not one a task
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  local tid, project, item = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local tkey = prefix .. 'task:' .. tid
  if redis.call('EXISTS', tkey) == 0 then
    redis.call('HSET', tkey, 'task_id', tid, 'state', 'open', 'done', 0, 'project', project,
      'item_id', item, 'priority', ARGV[i + 3], 'needed', ARGV[i + 4], 'kind', ARGV[i + 5],
      'body', ARGV[i + 6])
    local p = new[project]
    if not p then
      p = {{}, {}}
      new[project] = p
    end
    local z, h = p[1], p[2]
    z[#z + 1] = ARGV[i + 3]
    z[#z + 1] = tid
    h[#h + 1] = item
    h[#h + 1] = tid
    added = added + 1
  end
  i = i + 7
end
for project, p in pairs(new) do
  redis.call('ZADD', prefix .. name .. ':' .. project, unpack(p[1]))
  redis.call('HSET', prefix .. 'items:' .. project, unpack(p[2]))
end
local dropped = {}
n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  local project, cap = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local queue = prefix .. name .. ':' .. project
  local excess = cap > 0 and (redis.call('ZCARD', queue) - cap) or 0
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', queue, excess)
    local records = prefix .. 'dropped:' .. project
    for j = 1, #popped, 2 do
      local dkey = prefix .. 'task:' .. popped[j]
      redis.call('HSET', dkey, 'state', 'dropped')
      settle(dkey, task_ttl)
      redis.call('RPUSH', records, cjson.encode({
        task_id = popped[j], priority = popped[j + 1],
        item_id = redis.call('HGET', dkey, 'item_id'), dropped_at = now}))
    end
    -- Records are pushed in time order: the old ones are at the head.
    local cutoff = tonumber(now) - dropped_ttl
    while true do
      local head = redis.call('LINDEX', records, 0)
      if not head or tonumber(cjson.decode(head).dropped_at) > cutoff then break end
      redis.call('LPOP', records)
    end
    redis.call('PEXPIRE', records, dropped_ttl)
    dropped[project] = excess
  end
end
return {added, cjson.encode(dropped)}
"""

# KEYS: queue, leases index, held (labeler -> the task of their newest lease from this
# queue), then the project's review and adjudication queues (a lapsed lease in the index
# review and adjudication share goes back to its own kind's queue, whichever kind is asked
# for; comparisons have an index of their own). ARGV: labeler,
# now, ttl, scan limit, prefix, the key of the set of paused
# labelers ('' for none), finished-task ttl (ms), then optionally a task to create and
# hand out directly: its id, a set key and member to remember it by (the labeler's seen
# gold), and its field/value pairs. A labeler whose newest lease is still live (not
# expired, submitted or skipped, its task open) gets that task back, lease unchanged: a
# reloaded page shows the task it held instead of hiding it for the lease's length.
# Returns {id, expiry, task fields}, {'paused'} or nil.
_NEXT = _SETTLE + """
local queue, leases, held = KEYS[1], KEYS[2], KEYS[3]
local labeler, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, prefix, task_ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[7])
if ARGV[6] ~= '' and redis.call('SISMEMBER', ARGV[6], labeler) == 1 then
  return {'paused'}
end
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
    if salted(tkey) then
      redis.call('HSET', tkey, 'state', 'expired')
      settle(tkey, task_ttl)
    else
      local kind, home = redis.call('HGET', tkey, 'kind'), KEYS[4]
      if kind == 'adjudication' then home = KEYS[5] elseif kind == 'comparison' then
        home = queue  -- comparisons have a lease index of their own
      end
      redis.call('ZADD', home, redis.call('HGET', tkey, 'priority'), tid)
    end
  end
end
local holding = redis.call('HGET', held, labeler)
if holding then
  local tkey = prefix .. 'task:' .. holding
  local until_ms = tonumber(redis.call('HGET', tkey .. ':leases', labeler) or '0')
  if until_ms > now and redis.call('HGET', tkey, 'state') == 'open' then
    return {holding, tostring(until_ms), redis.call('HGETALL', tkey)}
  end
  redis.call('HDEL', held, labeler)
end
local function lease(tid, tkey)
  local expires = now + ttl
  redis.call('SADD', tkey .. ':seen', labeler)
  redis.call('SADD', tkey .. ':handed', labeler)
  redis.call('HSET', tkey .. ':leases', labeler, expires)
  redis.call('HSET', tkey .. ':leased_at', labeler, now)
  redis.call('ZADD', leases, expires, tid .. '|' .. labeler)
  redis.call('HSET', held, labeler, tid)
  return {tid, tostring(expires), redis.call('HGETALL', tkey)}
end
if ARGV[8] then
  local tkey = prefix .. 'task:' .. ARGV[8]
  if ARGV[9] ~= '' then redis.call('SADD', ARGV[9], ARGV[10]) end
  redis.call('HSET', tkey, 'task_id', ARGV[8], 'state', 'open', 'done', 0, unpack(ARGV, 11))
  return lease(ARGV[8], tkey)
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

# Records a submission, its ``duration_ms`` measured here: from the labeler's latest lease
# of the task (``task:{id}:leased_at``) to now, written into the event's JSON in place of
# what the client said (the event's one top-level "duration_ms" key: no other field holds
# an object). KEYS: queue, leases index. ARGV: prefix, task id, labeler, now,
# event id, label stream, the event's JSON on time, its JSON late, observation list key
# ('' for none), observation (confidence|correct|weight|blind|audit), observations kept
# (the list's ``:n`` key counts every observation ever pushed, so a reader can fetch only
# the ones it has not seen), finished-task ttl (ms).
# Decides the standing as _STATE does, then records the submission, publishes the label
# event and keeps the calibration observation in one atomic step: the event is on the
# stream if and only if the submission is recorded. Returns {'duplicate', first event
# id, '0'}, {'not_handed', '', '0'}, {'skipped', '', '0'} (the labeler gave it up) or
# {'recorded', event id, '1' if late else '0'}.
_SUBMIT = _SETTLE + """
local queue, leases = KEYS[1], KEYS[2]
local tid, labeler, now, event_id = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local tkey = ARGV[1] .. 'task:' .. tid
local first = redis.call('HGET', tkey .. ':submitted', labeler)
if first then return {'duplicate', first, '0'} end
if redis.call('SISMEMBER', tkey .. ':handed', labeler) == 0 then
  return {'not_handed', '', '0'}
end
if redis.call('SISMEMBER', tkey .. ':skipped', labeler) == 1 then
  return {'skipped', '', '0'}
end
local lease = redis.call('HGET', tkey .. ':leases', labeler)
local late = not (lease and tonumber(lease) >= now)
redis.call('HSET', tkey .. ':submitted', labeler, event_id)
local body = late and ARGV[8] or ARGV[7]
local leased_at = redis.call('HGET', tkey .. ':leased_at', labeler)
if leased_at then  -- the time it took: from the labeler's lease to this submit
  local _, stop = string.find(body, '"duration_ms":', 1, true)
  if stop then
    local rest = string.find(body, '[,}]', stop + 1)
    body = string.sub(body, 1, stop)
      .. string.format('%d', math.min(math.max(0, now - tonumber(leased_at)), 2147483647))
      .. string.sub(body, rest)
  end
end
redis.call('XADD', ARGV[6], '*', 'data', body)
if ARGV[9] ~= '' then
  redis.call('LPUSH', ARGV[9], ARGV[10])
  redis.call('LTRIM', ARGV[9], 0, tonumber(ARGV[11]) - 1)
  redis.call('INCR', ARGV[9] .. ':n')
end
redis.call('HDEL', tkey .. ':leases', labeler)
redis.call('ZREM', leases, tid .. '|' .. labeler)
redis.call('SADD', tkey .. ':seen', labeler)
local done = redis.call('HINCRBY', tkey, 'done', 1)
if done >= tonumber(redis.call('HGET', tkey, 'needed')) then
  redis.call('HSET', tkey, 'state', 'done')
  redis.call('ZREM', queue, tid)
end
if redis.call('HGET', tkey, 'state') ~= 'open' then  -- finished now, or a late submit
  settle(tkey, tonumber(ARGV[12]))
end
return {'recorded', event_id, late and '1' or '0'}
"""

# ARGV: prefix, task id, labeler, now. Returns {task fields, standing, detail}.
_STATE = """
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
local labeler, now = ARGV[3], tonumber(ARGV[4])
local task = redis.call('HGETALL', tkey)
local submitted = redis.call('HGET', tkey .. ':submitted', labeler)
if submitted then return {task, 'duplicate', submitted} end
if redis.call('SISMEMBER', tkey .. ':handed', labeler) == 0 then
  return {task, 'not_handed', ''}
end
if redis.call('SISMEMBER', tkey .. ':skipped', labeler) == 1 then
  return {task, 'skipped', ''}
end
local lease = redis.call('HGET', tkey .. ':leases', labeler)
if lease and tonumber(lease) >= now then return {task, 'on_time', ''} end
return {task, 'late', ''}
"""

# KEYS: queue, leases index. ARGV: prefix, task id, labeler, finished-task ttl (ms).
_SKIP = _SETTLE + """
local queue, leases = KEYS[1], KEYS[2]
local tkey = ARGV[1] .. 'task:' .. ARGV[2]
local labeler, task_ttl = ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', tkey) == 0 then return 'missing' end
if redis.call('HDEL', tkey .. ':leases', labeler) == 0 then return 'not_leased' end
redis.call('ZREM', leases, ARGV[2] .. '|' .. labeler)
redis.call('SADD', tkey .. ':skipped', labeler)
if salted(tkey) then
  redis.call('HSET', tkey, 'state', 'skipped')
  settle(tkey, task_ttl)
  return 'skipped'
end
local active = redis.call('HLEN', tkey .. ':leases') + tonumber(redis.call('HGET', tkey, 'done'))
local needed = tonumber(redis.call('HGET', tkey, 'needed'))
if redis.call('HGET', tkey, 'state') == 'open' then
  if active < needed then
    redis.call('ZADD', queue, redis.call('HGET', tkey, 'priority'), ARGV[2])
  end
else  -- a skip after the task finished: its ':skipped' key expires with the rest
  settle(tkey, task_ttl)
end
return 'skipped'
"""


# KEYS: observation list, its count. ARGV: rows already seen, most to return. Atomic, so
# the count and the rows agree. Returns {count, newest unseen rows, newest first}.
_OBSERVATIONS = """
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local k = math.min(math.max(total - tonumber(ARGV[1]), 0), tonumber(ARGV[2]))
if total < tonumber(ARGV[1]) then k = tonumber(ARGV[2]) end
if k == 0 then return {total, {}} end
return {total, redis.call('LRANGE', KEYS[1], 0, k - 1)}
"""


# KEYS: an item index (items:{project}). ARGV: prefix, then item/task pairs HSCAN saw. An
# item whose task has expired goes, unless it points at another task by now. Returns the
# count removed.
_FORGET_ITEMS = """
local removed = 0
for i = 2, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'task:' .. ARGV[i + 1]) == 0
      and redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""

# KEYS: a labeler's progress hash for one UTC day. ARGV: quarter hour, ttl (ms).
_COUNT_SUBMIT = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class NewTask:
    task_id: str
    project: str
    item_id: str
    priority: float
    needed: int
    fields: dict[str, str]  # "kind" (default review) is a hash field; the rest, JSON body
    # Made for one labeler and never queued (a gold pair; a gold item's kind says so):
    # a lapsed lease or a skip ends it (the scripts' ``salted``).
    salted: bool = False

    def body(self) -> bytes:
        return orjson.dumps({k: v for k, v in self.fields.items() if k != "kind"})

    def flat(self) -> list[str | bytes]:
        """Field/value pairs of the task hash beyond its id, state and done count."""
        return ["project", self.project, "item_id", self.item_id,
                "priority", repr(self.priority), "needed", str(self.needed),
                "kind", self.fields.get("kind", "review"), "body", self.body(),
                *(["salted", "1"] if self.salted else [])]


# A task as the enqueue script takes it: id, project, item id, priority, needed, kind, body.
QueuedTask = tuple[str, str, str, float, int, str, bytes]
# A label event to publish with a routed batch: its project (which picks the shard), JSON.
ProjectEvent = tuple[str, bytes]


class Paused(Exception):
    """The labeler is paused (a quality flag) and gets no tasks."""


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _task(fields: dict[Any, Any]) -> dict[str, str]:
    """A task hash as one flat dict of text: its fields plus its JSON body's."""
    task = {_text(k): _text(v) for k, v in fields.items() if k not in ("body", b"body")}
    body = fields.get(b"body", fields.get("body"))
    if body:
        task.update(orjson.loads(body))
    return task


class ScriptRunner:
    """EVALSHA over pipelining connections (:mod:`shared.redislink`): one connection on a
    single Redis, one a master on a cluster (``ClusterLink``).

    The review API makes one script call a request and routing one a chunk; through
    redis-py's pool each call took a connection of its own and paid for a write task,
    a read timeout and a pure-Python packer, as much as the call itself. Calls made in
    the same event-loop turn now go out in one write. ``pipelined=False``, or a client
    that connects in a way the links do not handle (TLS), uses redis-py's EVALSHA (its
    cluster client routes each call by its keys); ``loopwise bench cluster`` compares the
    two on a cluster.
    """

    def __init__(self, client: aioredis.Redis, *, pipelined: bool = True) -> None:
        self.client = client
        self._link: RedisLink | None = None
        self._cluster: ClusterLink | None = None
        if not pipelined:
            return
        try:
            if is_cluster_client(client):
                self._cluster = ClusterLink(cast(RedisCluster, client))
            else:
                self._link = RedisLink(client)
        except Unsupported:
            pass

    async def _send(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if self._cluster is not None:
            return await self._cluster.execute(keys[0], "EVALSHA", script.sha, len(keys),
                                               *keys, *args)
        assert self._link is not None
        return await self._link.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def __call__(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if self._link is None and (self._cluster is None or not keys):
            return await script(keys=keys, args=args)
        for attempt in (1, 2):
            reply = await self._send(script, keys, args)
            if not isinstance(reply, ResponseError):
                return reply
            if attempt == 2 or not str(reply).startswith("NOSCRIPT"):
                raise reply
            # Redis restarted, was flushed, or a replica took over (scripts are not
            # replicated): load it again (on every master of a cluster).
            await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._link is not None:
            await self._link.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()


def project_key(name: str, project: str, shards: int, prefix: str = PREFIX) -> str:
    """The router's key ``name`` of ``project`` (for the tests and benchmarks that look
    at the router's keys as witnesses; the router itself goes through ReviewQueue)."""
    return f"{prefix}{sharding.tag(sharding.shard_of(project, shards))}:{name}:{project}"


def task_key_of(task_id: str, prefix: str = PREFIX) -> str:
    shard = sharding.shard_of_task(task_id)
    return f"{prefix}{sharding.tag(shard) if shard is not None else '{none}'}:task:{task_id}"


def routed_task_id(prediction_event_id: str, project: str, shards: int) -> str:
    """The id of the review task routing makes of a prediction."""
    return sharding.task_id(sharding.shard_of(project, shards),
                            stable_key("task", prediction_event_id))


def _queue_name(kind: str) -> str:
    """The queue a task kind waits in: review and gold tasks share one."""
    return kind if kind in ("adjudication", "comparison") else "queue"


def _now_ms() -> int:
    return int(time.time() * 1000)


class ReviewQueue:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX, scan_limit: int = 200,
                 finished_ttl_ms: int = FINISHED_TTL_MS,
                 dropped_ttl_ms: int = DROPPED_TTL_MS, shards: int = 1,
                 pipelined: bool = True) -> None:
        self.redis = redis
        self.prefix = prefix
        self.shards = shards
        self.scan_limit = scan_limit
        self.finished_ttl_ms = finished_ttl_ms  # a finished task expires this long after
        self.dropped_ttl_ms = dropped_ttl_ms  # a dropped-task record leaves its list then
        self._enqueue = redis.register_script(_ENQUEUE)
        self._next = redis.register_script(_NEXT)
        self._state = redis.register_script(_STATE)
        self._skip = redis.register_script(_SKIP)
        self._submit = redis.register_script(_SUBMIT)
        self._observations = redis.register_script(_OBSERVATIONS)
        self._forget_items = redis.register_script(_FORGET_ITEMS)
        self._count_submit = redis.register_script(_COUNT_SUBMIT)
        self._run = ScriptRunner(redis, pipelined=pipelined)

    async def aclose(self) -> None:
        await self._run.aclose()

    # --- keys: every one carries its shard's hash tag ------------------------------
    def shard_of(self, project: str) -> int:
        return sharding.shard_of(project, self.shards)

    def shard_prefix(self, shard: int | None) -> str:
        """``loopwise:router:{k}:``; a task id that names no shard gets a prefix under
        which no key exists (such a task is unknown)."""
        return f"{self.prefix}{sharding.tag(shard) if shard is not None else '{none}'}:"

    def project_prefix(self, project: str) -> str:
        return self.shard_prefix(self.shard_of(project))

    def key(self, name: str, project: str) -> str:
        """A per-project key, ``loopwise:router:{k}:<name>:<project>``."""
        return f"{self.project_prefix(project)}{name}:{project}"

    def new_task_id(self, project: str, base: str) -> str:
        """The id of a new task of ``project``: ``base`` after the project's shard."""
        return sharding.task_id(self.shard_of(project), base)

    def labels_stream(self, stream: str, shard: int) -> str:
        """The shard of ``stream`` a script of that shard may XADD to (same slot)."""
        return sharding.shard_stream(stream, shard)

    def queue_key(self, project: str, kind: str = "review") -> str:
        return self.key(_queue_name(kind), project)

    def leases_key(self, project: str, kind: str = "review") -> str:
        """The lease index a task's kind uses. Comparisons have their own: the next-task
        script puts a task whose lease lapsed back into the queue it was called for."""
        return self.key("leases:comparison" if kind == "comparison" else "leases", project)

    def held_key(self, project: str, kind: str = "review") -> str:
        """Labeler -> the task of their newest lease from this queue (see ``_NEXT``); one
        per queue, so a held review task is never handed back to a call for another kind."""
        return self.key(f"held:{_queue_name(kind)}", project)

    def order_key(self, task_id: str) -> str:
        """labeler -> the order a comparison task's candidates were shown to them (JSON);
        expires with the task."""
        return f"{self.task_key(task_id)}:order"

    def task_key(self, task_id: str) -> str:
        return f"{self.shard_prefix(sharding.shard_of_task(task_id))}task:{task_id}"

    def dropped_key(self, project: str) -> str:
        return self.key("dropped", project)

    def items_key(self, project: str) -> str:
        return self.key("items", project)

    async def enqueue_many(self, tasks: list[NewTask], cap: int | dict[str, int] = 0,
                           kind: str = "review") -> tuple[int, Counter[str]]:
        """Add tasks in one script call (see ``enqueue_rows``)."""
        return await self.enqueue_rows(
            [(t.task_id, t.project, t.item_id, t.priority, t.needed,
              t.fields.get("kind", "review"), t.body()) for t in tasks], cap, kind)

    async def enqueue_rows(self, tasks: list[QueuedTask], cap: int | dict[str, int] = 0,
                           kind: str = "review",
                           labels: tuple[str, list[ProjectEvent]] | None = None
                           ) -> tuple[int, Counter[str]]:
        """Add tasks, and XADD label events ``(stream, [(project, json), ...])`` to their
        project's shard of the stream, in one script call a shard (concurrent; on one
        Redis they go out in one write).

        A known task id is left as it is (a redelivery adds nothing). With a cap, the
        queue keeps its most uncertain tasks and records the least uncertain ones it
        drops. Returns (added, dropped per project).
        """
        stream, events = labels or ("", [])
        if not tasks and not events:
            return 0, Counter()
        by_shard: dict[int, tuple[list[QueuedTask], list[bytes]]] = defaultdict(
            lambda: ([], []))
        for row in tasks:
            by_shard[self.shard_of(row[1])][0].append(row)
        for project, event in events:
            by_shard[self.shard_of(project)][1].append(event)
        calls = [self._enqueue_shard(shard, rows, cap, kind, stream, evs)
                 for shard, (rows, evs) in by_shard.items()]
        added, dropped = 0, Counter[str]()
        for n, d in await asyncio.gather(*calls) if len(calls) > 1 else [await calls[0]]:
            added += n
            dropped.update(d)
        return added, dropped

    async def _enqueue_shard(self, shard: int, tasks: list[QueuedTask],
                             cap: int | dict[str, int], kind: str, stream: str,
                             events: list[bytes]) -> tuple[int, Counter[str]]:
        name = _queue_name(kind)
        prefix = self.shard_prefix(shard)
        shard_stream = self.labels_stream(stream, shard) if events else ""
        args: list[Any] = [prefix, name, _now_ms(), shard_stream, self.finished_ttl_ms,
                           self.dropped_ttl_ms, len(events), *events, len(tasks)]
        for row in tasks:
            args += row
        projects = {row[1] for row in tasks}
        caps = {p: (cap.get(p, 0) if isinstance(cap, dict) else cap) for p in projects}
        caps = {p: c for p, c in caps.items() if c > 0}
        args.append(len(caps))
        for project, c in caps.items():
            args += (project, c)
        # Declared: the stream, the tasks named, each project's queue, index and drops.
        keys = [shard_stream] if events else []
        keys += [f"{prefix}task:{row[0]}" for row in tasks]
        for project in sorted(projects):
            keys += (f"{prefix}{name}:{project}", f"{prefix}items:{project}",
                     f"{prefix}dropped:{project}")
        added, dropped = await self._run(self._enqueue, keys, args)
        return int(added), +Counter(json.loads(dropped) or {})

    async def next(self, project: str, labeler: str, lease_seconds: int, kind: str = "review",
                   direct: NewTask | None = None, remember: tuple[str, str] | None = None,
                   paused_key: str = "") -> tuple[str, int, dict[str, str]] | None:
        """The task this labeler holds a live lease on, else lease the most uncertain open
        task they have not seen; None when none.

        ``direct`` creates a task and hands it out in the same script (gold salting),
        so a gold task takes the same path as any other; ``remember`` = (set key,
        member) is added in the same step. A labeler in ``paused_key`` raises
        ``Paused``. Returns (task id, lease expiry ms, task).
        """
        extra = [direct.task_id, *(remember or ("", "")), *direct.flat()] if direct else []
        declared = [k for k in (paused_key, remember[0] if remember else "") if k]
        if direct:
            declared.append(self.task_key(direct.task_id))
        got = await self._run(
            self._next, [self.queue_key(project, kind), self.leases_key(project, kind),
                         self.held_key(project, kind), self.queue_key(project),
                         self.queue_key(project, "adjudication"), *declared],
            [labeler, _now_ms(), lease_seconds * 1000, self.scan_limit,
             self.project_prefix(project), paused_key, self.finished_ttl_ms, *extra])
        if not got:
            return None
        if len(got) == 1:
            raise Paused(labeler)
        return _text(got[0]), int(_text(got[1])), _task(_pairs(got[2]))

    async def task_with_state(self, task_id: str, labeler: str
                              ) -> tuple[dict[str, str] | None, str, str | None]:
        """The task and this labeler's standing on it, in one script call.

        Standing: ``duplicate`` (with the event id), ``not_handed``, ``skipped``, ``on_time``
        or ``late``.
        """
        prefix = self.shard_prefix(sharding.shard_of_task(task_id))
        task, standing, detail = await self._state(
            keys=[self.task_key(task_id)], args=[prefix, task_id, labeler, _now_ms()])
        return _task(_pairs(task)) or None, _text(standing), _text(detail) or None

    async def task(self, task_id: str) -> dict[str, str] | None:
        return _task(await self.redis.hgetall(self.task_key(task_id))) or None

    async def task_of_item(self, project: str, item_id: str) -> dict[str, str] | None:
        """The latest task made for an item (its payload, for adjudication)."""
        task_id = await self.redis.hget(self.items_key(project), item_id)
        return await self.task(_text(task_id)) if task_id else None

    async def commit_submit(self, project: str, task_id: str, labeler: str, event_id: str,
                            stream: str, event_json: str, kind: str = "review",
                            observation: tuple[str, str, int] | None = None) -> tuple[str, str]:
        """``submit`` with one event JSON, on time or late alike: (outcome, event id)."""
        outcome, first, _ = await self.submit(project, task_id, labeler, event_id, stream,
                                              event_json, event_json, kind, observation)
        return outcome, first

    async def submit(self, project: str, task_id: str, labeler: str, event_id: str,
                     stream: str, on_time_json: str, late_json: str, kind: str = "review",
                     observation: tuple[str, str, int] | None = None
                     ) -> tuple[str, str, bool]:
        """Decide the labeler's standing and record the submission in one script call.

        Publishes ``on_time_json`` or ``late_json`` as the lease says. Returns (outcome,
        event id, late): outcome ``recorded``, ``duplicate`` (with the first event id)
        or ``not_handed``.
        """
        obs_key, obs_value, obs_max = observation or ("", "", 0)
        prefix, queue, leases, tkey = self._task_keys(project, task_id, kind)
        shard = sharding.shard_of_task(task_id)
        if shard is None:  # an id that names no shard is no task of ours
            return "not_handed", "", False
        stream = self.labels_stream(stream, shard)
        declared = [queue, leases, tkey, stream] + ([obs_key] if obs_key else [])
        got = await self._run(
            self._submit, declared,
            [prefix, task_id, labeler, _now_ms(), event_id, stream, on_time_json,
             late_json, obs_key, obs_value, obs_max, self.finished_ttl_ms])
        return _text(got[0]), _text(got[1]), _text(got[2]) == "1"

    async def skip(self, project: str, task_id: str, labeler: str, kind: str = "review") -> str:
        prefix, queue, leases, tkey = self._task_keys(project, task_id, kind)
        got = await self._skip(keys=[queue, leases, tkey],
                               args=[prefix, task_id, labeler, self.finished_ttl_ms])
        return _text(got)

    def _task_keys(self, project: str, task_id: str, kind: str
                   ) -> tuple[str, str, str, str]:
        """(prefix, queue, leases, task key) in the slot the task id names, which is its
        project's (the one it was made in, should the shard count ever change)."""
        prefix = self.shard_prefix(sharding.shard_of_task(task_id))
        leases = "leases:comparison" if kind == "comparison" else "leases"
        return (prefix, f"{prefix}{_queue_name(kind)}:{project}", f"{prefix}{leases}:{project}",
                f"{prefix}task:{task_id}")

    async def observations_since(self, key: str, seen: int, limit: int
                                 ) -> tuple[int, list[bytes]]:
        """(observations ever pushed to ``key``, the newest ones after the first ``seen``,
        newest first); all stored ones when the count went back (a reset)."""
        total, rows = await self._observations(keys=[key, f"{key}:n"], args=[seen, limit])
        return int(total), list(rows)

    async def forget_expired_items(self, chunk: int = 1000) -> int:
        """Remove the item-index entries (every project's) whose task has expired, a
        chunk of HSCAN at a time; how many went."""
        removed = 0
        async for raw_key in self.redis.scan_iter(match=f"{self.prefix}{{*}}:items:*",
                                                  count=chunk):
            key = _text(raw_key)
            prefix = key[:key.index("}:") + 2]  # the shard's tagged prefix
            cursor = None
            while cursor != 0:
                cursor, pairs = await self.redis.hscan(key, cursor or 0, count=chunk)
                if isinstance(pairs, dict) and pairs:  # (a list only with NOVALUES)
                    flat = [x for pair in pairs.items() for x in pair]
                    removed += int(await self._forget_items(keys=[key],
                                                            args=[prefix, *flat]))
        return removed

    def progress_key(self, project: str, labeler: str, day: date) -> str:
        return self.key("progress", f"{project}:{labeler}:{day.isoformat()}")

    async def count_submit(self, project: str, labeler: str, at: datetime) -> None:
        """Count a recorded submit in the labeler's quarter-hour bucket (progress.py)."""
        day, quarter = bucket_of(at)
        await self._run(self._count_submit, [self.progress_key(project, labeler, day)],
                        [quarter, PROGRESS_TTL_MS])

    async def submits_on(self, project: str, labeler: str, days: list[date]
                         ) -> dict[date, dict[int, int]]:
        """The labeler's submit counts per quarter hour, for each of ``days``."""
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.progress_key(project, labeler, day))
        return {day: parse_buckets(raw)
                for day, raw in zip(days, await pipe.execute(), strict=True)}

    async def depth(self, project: str, kind: str = "review") -> int:
        return int(await self.redis.zcard(self.queue_key(project, kind)))

    async def dropped(self, project: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.redis.lrange(self.dropped_key(project), -limit, -1)
        return [json.loads(r) for r in rows]
