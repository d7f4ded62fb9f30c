"""A per-process cache for slowly changing settings read on every request.

Fresh entries are answered directly; a stale one is still answered while a
single background refresh reloads it (stale-while-revalidate); a missing one
is loaded once however many requests ask for it at the same moment
(single flight). Without that, every request in flight when an entry expired
made its own database or Redis round trip: a burst that showed as the review
API's tail latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from shared.logs import get_logger

K = TypeVar("K")
V = TypeVar("V")
log = get_logger(__name__)


def _now() -> float:
    return time.monotonic()


class RefreshingCache(Generic[K, V]):
    def __init__(self, loader: Callable[[K], Awaitable[V]], fresh_seconds: float,
                 stale_seconds: float = 60.0) -> None:
        self.loader = loader
        self.fresh_seconds = fresh_seconds
        self.stale_seconds = stale_seconds
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            age = _now() - entry[0]
            if age < self.fresh_seconds:
                return entry[1]
            if age < self.stale_seconds:
                if key not in self._loading:
                    self._start(key)
                return entry[1]
        future = self._loading.get(key) or self._start(key)
        return await asyncio.shield(future)

    def put(self, key: K, value: V) -> None:
        """A value this process just wrote: fresh from now."""
        self._entries[key] = (_now(), value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def _start(self, key: K) -> asyncio.Future[V]:
        started = _now()

        async def load() -> V:
            try:
                value = await self.loader(key)
                self._entries[key] = (started, value)
                return value
            finally:
                self._loading.pop(key, None)

        task = asyncio.ensure_future(load())
        # A stale-served refresh has nobody awaiting it: log its failure instead of losing it.
        task.add_done_callback(
            lambda t: t.cancelled() or t.exception() is None
            or log.warning("cache refresh failed", error=str(t.exception())))
        self._loading[key] = task
        return task
