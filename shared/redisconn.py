"""One way to open a Redis client: a single server or a Redis Cluster, by the URL.

``redis+cluster://host:port`` (any node of the cluster), or any ``redis://`` URL with
``LOOPWISE_REDIS_CLUSTER=1``, gives redis-py's :class:`redis.asyncio.cluster.RedisCluster`,
which discovers the slot map and sends each command to the master of its keys' slot;
anything else gives a plain :class:`redis.asyncio.Redis`. Both offer the commands the
services use (streams, hashes, scripts, non-transactional pipelines that the cluster
client splits per node), so callers are typed against ``Redis`` and need not care.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

CLUSTER_SCHEME = "redis+cluster://"


def is_cluster_url(url: str, cluster: bool = False) -> bool:
    return cluster or url.startswith(CLUSTER_SCHEME)


def plain_url(url: str) -> str:
    """The URL redis-py understands (``redis://``), for either kind."""
    return "redis://" + url[len(CLUSTER_SCHEME):] if url.startswith(CLUSTER_SCHEME) else url


def cluster_url(url: str) -> str:
    """``url`` for redis-py's cluster client: a cluster has database 0 only."""
    parts = urlsplit(plain_url(url))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, not {parts.path!r} ({url})")
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))


def connect(url: str, cluster: bool = False, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client for ``url``: a cluster client for a cluster URL."""
    if is_cluster_url(url, cluster):
        return cast(aioredis.Redis, RedisCluster.from_url(cluster_url(url), **kwargs))
    return aioredis.from_url(url, **kwargs)


def connect_sync(url: str, cluster: bool = False, **kwargs: Any) -> redis.Redis:
    """A blocking client for ``url`` (commands, benchmarks, tests)."""
    if is_cluster_url(url, cluster):
        return cast(redis.Redis, redis.RedisCluster.from_url(cluster_url(url), **kwargs))
    return redis.Redis.from_url(url, **kwargs)


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (RedisCluster, redis.RedisCluster))


def client_for(settings: Any, **kwargs: Any) -> aioredis.Redis:
    """The client of ``settings`` (a :class:`shared.settings.Settings`)."""
    return connect(settings.redis_url, settings.cluster, **kwargs)
