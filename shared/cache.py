"""A per-process cache for slowly changing values read on every request or batch.

The one cache mechanism of the services (routing policy, gold, sensitivity and label
options in the router, bearer tokens in every service, label schemas in the labels
service). Fresh entries are answered directly; a stale one is still answered while a
background refresh reloads it (stale-while-revalidate); a missing one is loaded once
however many requests ask for it at the same moment (single flight). Without that,
every request in flight when an entry expired made its own database or Redis round
trip: a burst that showed as the review API's tail latency.

A batched cache (:meth:`RefreshingCache.batched`) loads many keys in one call: the
misses of one :meth:`get_many`, and every entry that went stale in the same moment,
in one background refresh (one query for all active reviewers' tokens, not one each).

``drop`` and ``clear`` take effect at once: a load that was in flight when they were
called still answers its waiters but is not kept, so a value read before a change
this process made is never cached after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Generic, TypeVar

from shared.logs import get_logger

K = TypeVar("K")
V = TypeVar("V")
log = get_logger(__name__)
MAX_ENTRIES = 10_000


def _now() -> float:
    return time.monotonic()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A refresh's future may have nobody awaiting it: mark its error as seen."""
    if not future.cancelled():
        future.exception()


def _owner(batch: dict[K, asyncio.Future[V]]) -> Callable[[], dict[K, asyncio.Future[V]]]:
    """The futures a load answers, for :meth:`RefreshingCache._spawn` to settle."""
    return lambda: batch


class RefreshingCache(Generic[K, V]):
    def __init__(self, loader: Callable[[K], Awaitable[V]], fresh_seconds: float,
                 stale_seconds: float = 60.0, *, max_entries: int = MAX_ENTRIES,
                 serve_stale: Callable[[V], bool] | None = None) -> None:
        """``loader`` reads one key. Entries younger than ``fresh_seconds`` are answered
        as they are; younger than ``stale_seconds`` (and ``serve_stale(value)``, if
        given), answered while they are refreshed; older ones are loaded inline. At most
        ``max_entries`` are kept (the least recently loaded go first)."""
        self.loader = loader
        self.fresh_seconds = fresh_seconds
        self.stale_seconds = stale_seconds
        self.max_entries = max_entries
        self.serve_stale = serve_stale
        self._many: Callable[[set[K]], Awaitable[Mapping[K, V]]] | None = None
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}  # the load whose result is kept
        self._due: dict[K, asyncio.Future[V]] = {}  # stale keys for the next refresh
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def batched(cls, load_many: Callable[[set[K]], Awaitable[Mapping[K, V]]],
                fresh_seconds: float, stale_seconds: float = 60.0, *,
                max_entries: int = MAX_ENTRIES,
                serve_stale: Callable[[V], bool] | None = None) -> RefreshingCache[K, V]:
        """A cache whose loader reads a set of keys in one call and returns each of them."""

        async def one(key: K) -> V:
            return (await load_many({key}))[key]

        cache = cls(one, fresh_seconds, stale_seconds, max_entries=max_entries,
                    serve_stale=serve_stale)
        cache._many = load_many
        return cache

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None and self._answers(key, entry, _now()):
            return entry[1]
        future = self._loading.get(key)
        if future is None:
            future = self._load([key])[key]
        return await asyncio.shield(future)

    async def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """Each key's value; the missing ones loaded together (one call when batched)."""
        now = _now()
        out: dict[K, V] = {}
        waiting: dict[K, asyncio.Future[V]] = {}
        missing: list[K] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and self._answers(key, entry, now):
                out[key] = entry[1]
            elif (future := self._loading.get(key)) is not None:
                waiting[key] = future
            else:
                missing.append(key)
        if missing:
            waiting.update(self._load(missing))
        for key, future in waiting.items():
            out[key] = await asyncio.shield(future)
        return out

    async def refresh(self, older_than: float = 0.0) -> None:
        """Reload now, together, every entry loaded at least ``older_than`` seconds ago.

        For a loop that keeps entries fresh ahead of the requests (tokens): with it, no
        request waits on a load and none is answered from an entry older than the loop's
        period plus one load, whether the key was idle or busy."""
        now = _now()
        keys = [key for key, (at, _) in self._entries.items()
                if now - at >= older_than and key not in self._loading]
        if not keys:
            return
        futures = {key: self._future() for key in keys}
        self._loading.update(futures)
        for batch in self._batches(futures):
            await self._run(batch, background=True)

    def keys(self) -> list[K]:
        return list(self._entries)

    def peek(self, key: K) -> V | None:
        """The value held for ``key``, fresh or stale, without loading anything."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def is_fresh(self, key: K) -> bool:
        entry = self._entries.get(key)
        return entry is not None and _now() - entry[0] < self.fresh_seconds

    def put(self, key: K, value: V) -> None:
        """A value this process just wrote (or read): fresh from now."""
        self._loading.pop(key, None)
        self._store(key, _now(), value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def settle(self) -> None:
        """Wait for the loads and refreshes in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel the loads and refreshes in flight and wait for them to end."""
        for task in list(self._tasks):
            task.cancel()
        await self.settle()

    def _answers(self, key: K, entry: tuple[float, V], now: float) -> bool:
        """Whether ``entry`` may answer now; a stale one that may is refreshed behind it."""
        age = now - entry[0]
        if age < self.fresh_seconds:
            return True
        if age >= self.stale_seconds or (self.serve_stale and not self.serve_stale(entry[1])):
            return False
        if key not in self._loading:
            future = self._future()
            self._loading[key] = self._due[key] = future
            if self._refresher is None or self._refresher.done():
                # Started on the next turn of the event loop: every entry found stale until
                # then is refreshed in the same batch.
                self._refresher = self._spawn(self._refresh_due(), self._take_due)
        return True

    def _future(self) -> asyncio.Future[V]:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        return future

    def _load(self, keys: list[K]) -> dict[K, asyncio.Future[V]]:
        futures = {key: self._future() for key in keys}
        self._loading.update(futures)
        for batch in self._batches(futures):
            self._spawn(self._run(batch, background=False), _owner(batch))
        return futures

    def _batches(self, futures: dict[K, asyncio.Future[V]]) -> list[dict[K, asyncio.Future[V]]]:
        if self._many is not None:
            return [futures]
        return [{key: future} for key, future in futures.items()]

    async def _refresh_due(self) -> None:
        while self._due:
            due, self._due = self._due, {}
            batches = self._batches(due)
            if len(batches) == 1:
                await self._run(batches[0], background=True)
            else:  # one key a load: side by side
                await asyncio.wait([self._spawn(self._run(b, background=True), _owner(b))
                                    for b in batches])

    def _take_due(self) -> dict[K, asyncio.Future[V]]:
        due, self._due = self._due, {}
        return due

    async def _run(self, futures: dict[K, asyncio.Future[V]], background: bool) -> None:
        """Load these keys; keep each value unless the key was put, dropped or cleared
        meanwhile; answer the futures either way."""
        started = _now()
        try:
            if self._many is not None:
                values = dict(await self._many(set(futures)))
            else:
                ((key, _),) = futures.items()
                values = {key: await self.loader(key)}
        except BaseException as exc:
            for key, future in futures.items():
                if self._loading.get(key) is future:
                    del self._loading[key]
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if background:  # nobody awaits a refresh: say that it failed
                log.warning("cache refresh failed", error=f"{type(exc).__name__}: {exc}")
            return
        for key, future in futures.items():
            kept = self._loading.get(key) is future
            if kept:
                del self._loading[key]
            if future.done():
                continue
            if key not in values:
                future.set_exception(KeyError(key))
                continue
            if kept:
                self._store(key, started, values[key])
            future.set_result(values[key])

    def _store(self, key: K, at: float, value: V) -> None:
        self._entries.pop(key, None)  # to the end: the oldest load goes first
        self._entries[key] = (at, value)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def _spawn(self, work: Coroutine[Any, Any, None],
               owns: Callable[[], dict[K, asyncio.Future[V]]]) -> asyncio.Task[None]:
        """Run ``work``; once it ends, however (even cancelled before it began), no future
        it ``owns`` is left unanswered."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            for key, future in owns().items():
                if self._loading.get(key) is future:
                    del self._loading[key]
                if not future.done():
                    future.cancel()

        task.add_done_callback(done)
        return task
