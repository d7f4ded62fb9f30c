"""Where a project's Redis keys and stream entries live: one shard, one hash slot.

Redis Cluster refuses a command or script whose keys lie in different hash slots, and
puts each slot on one master. What must change together must therefore share a slot:
the router's keys of a project (its queue, leases, tasks, calibration) and the label
stream its scripts XADD to, atomically with the queue change. The scheme:

- ``shard_of(project, shards) = crc32(project) mod shards`` (zlib's CRC-32 of the UTF-8
  name: stable across processes, machines and Python versions, unlike ``hash()``).
- Shard ``k`` is the hash tag ``{k}``: every key of the shard carries it, so Redis
  hashes only ``k`` and the shard is one slot (``CLUSTER KEYSLOT {k}``).
- The streams in :data:`shared.streams.SHARDED` (items, predictions, labels) exist once a
  shard: ``loopwise:predictions:{3}``. Producers inside loopwise write a project's
  entries to its shard, so a project's entries stay in order on one stream and the
  shards spread over the cluster's masters. The plain name of the design contract
  (``loopwise:predictions``) is consumed as well, so a producer that knows nothing of
  shards still works (its entries all land on the one node that holds that key).
- Router task ids start with their shard (``3.<uuid>``): a submit names only its task,
  and the id says which slot holds it.

The shard count (``LOOPWISE_STREAM_SHARDS``; 1 on a single Redis, 12 on a cluster when
unset) must be the same for every process and stay fixed while data lives in Redis:
changing it moves every project to other keys (its queue would look empty). Task ids
keep their shard, so tasks already handed out can still be submitted.
"""

from __future__ import annotations

import zlib

from shared import streams

DEFAULT_CLUSTER_SHARDS = 12  # about four slots a master on three masters


def shard_of(project: str, shards: int) -> int:
    return zlib.crc32(project.encode()) % shards


def tag(shard: int) -> str:
    """The hash tag of a shard: the part of its keys Redis Cluster hashes."""
    return f"{{{shard}}}"


def shard_stream(stream: str, shard: int) -> str:
    return f"{stream}:{tag(shard)}"


def project_stream(stream: str, project: str, shards: int) -> str:
    """The stream a project's entries of ``stream`` go to."""
    return shard_stream(stream, shard_of(project, shards))


def every_stream(stream: str, shards: int) -> list[str]:
    """Each shard of ``stream``, then its plain name (what outside producers write)."""
    return [shard_stream(stream, k) for k in range(shards)] + [stream]


def names_of(stream: str, shards: int) -> list[str]:
    """The Redis streams behind a stream of the design: :func:`every_stream` for a
    sharded one, else the stream itself."""
    return every_stream(stream, shards) if stream in streams.SHARDED else [stream]


def task_id(shard: int, base: str) -> str:
    """A task id that names its shard."""
    return f"{shard}.{base}"


def shard_of_task(task: str) -> int | None:
    """The shard a task id names; None for an id that names none (no such task)."""
    head, dot, _ = task.partition(".")
    if not dot or not head.isdigit() or len(head) > 6:
        return None
    return int(head)
