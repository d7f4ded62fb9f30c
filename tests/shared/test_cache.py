import asyncio

import pytest

from shared import cache as cache_mod
from shared.cache import RefreshingCache


async def test_concurrent_misses_load_once_and_stale_entries_answer_while_one_refresh_runs(
        monkeypatch):
    calls: list[str] = []
    gate = asyncio.Event()

    async def load(key: str) -> str:
        calls.append(key)
        await gate.wait()
        return f"{key}-{len(calls)}"

    c: RefreshingCache[str, str] = RefreshingCache(load, fresh_seconds=10)
    waiting = [asyncio.ensure_future(c.get("p")) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert set(await asyncio.gather(*waiting)) == {"p-1"} and calls == ["p"]

    later = cache_mod._now() + 30  # now the entry is stale, not expired
    monkeypatch.setattr(cache_mod, "_now", lambda: later)
    gate.clear()
    assert [await c.get("p") for _ in range(5)] == ["p-1"] * 5  # no waiting
    await asyncio.sleep(0)
    assert calls == ["p", "p"]  # one refresh for all five
    gate.set()
    await asyncio.sleep(0.01)
    assert await c.get("p") == "p-2"


async def test_a_failed_refresh_keeps_the_stale_value_and_a_failed_load_raises(monkeypatch):
    fail = [False]

    async def load(key: str) -> int:
        if fail[0]:
            raise RuntimeError("database down")
        return 1

    c: RefreshingCache[str, int] = RefreshingCache(load, fresh_seconds=0.0)
    assert await c.get("a") == 1
    fail[0] = True
    assert await c.get("a") == 1  # stale answer; its refresh fails in the background
    await asyncio.sleep(0.01)
    assert await c.get("a") == 1
    with pytest.raises(RuntimeError, match="database down"):
        await c.get("b")
    c.put("b", 7)
    assert await c.get("b") == 7


async def test_a_batched_cache_loads_misses_together_and_refreshes_stale_entries_in_one_call(
        monkeypatch):
    calls: list[set[str]] = []

    async def load_many(keys: set[str]) -> dict[str, str]:
        calls.append(set(keys))
        return {k: f"{k}-{len(calls)}" for k in keys}

    c: RefreshingCache[str, str] = RefreshingCache.batched(load_many, fresh_seconds=10)
    assert await c.get_many(["a", "b", "c"]) == {"a": "a-1", "b": "b-1", "c": "c-1"}
    assert await c.get_many(["a", "b"]) == {"a": "a-1", "b": "b-1"} and len(calls) == 1
    later = cache_mod._now() + 30
    monkeypatch.setattr(cache_mod, "_now", lambda: later)
    # Found stale one by one (one request each), refreshed together, behind the answers.
    assert [await c.get(k) for k in "abc"] == ["a-1", "b-1", "c-1"]
    await c.settle()
    assert calls[1:] == [{"a", "b", "c"}]
    assert await c.get_many("abc") == {"a": "a-2", "b": "b-2", "c": "c-2"}


async def test_values_refused_for_stale_answers_are_loaded_inline(monkeypatch):
    loads: list[str] = []

    async def load(key: str) -> str | None:
        loads.append(key)
        return None if len(loads) == 1 else "valid now"

    c: RefreshingCache[str, str | None] = RefreshingCache(
        load, fresh_seconds=2, serve_stale=lambda v: v is not None)
    assert await c.get("token") is None
    later = cache_mod._now() + 3
    monkeypatch.setattr(cache_mod, "_now", lambda: later)
    assert await c.get("token") == "valid now"  # not the stale None


async def test_drop_and_clear_win_over_a_load_in_flight():
    """A value read before this process changed it is never kept after the change."""
    gate = asyncio.Event()
    version = ["old"]

    async def load(key: str) -> str:
        seen = version[0]
        await gate.wait()
        return seen

    c: RefreshingCache[str, str] = RefreshingCache(load, fresh_seconds=10)
    for forget in (lambda: c.drop("k"), c.clear):
        version[0], gate = "old", asyncio.Event()
        pending = asyncio.ensure_future(c.get("k"))
        await asyncio.sleep(0.01)  # the load has read the old version
        version[0] = "new"
        forget()
        gate.set()
        assert await pending == "old"  # the request that started before the change
        assert await c.get("k") == "new"  # every later one
        c.clear()


async def test_the_cache_is_bounded_and_aclose_leaves_no_load_running():
    hang = asyncio.Event()

    async def load(key: int) -> int:
        if key < 0:
            await hang.wait()
        return key

    c: RefreshingCache[int, int] = RefreshingCache(load, fresh_seconds=10, max_entries=3)
    for key in range(5):
        await c.get(key)
    assert len(c) == 3 and c.peek(0) is None and c.peek(4) == 4  # the oldest went
    before = asyncio.all_tasks()
    waiting = asyncio.ensure_future(c.get(-1))
    await asyncio.sleep(0)
    await c.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [t for t in asyncio.all_tasks() - before if not t.done()] == []
