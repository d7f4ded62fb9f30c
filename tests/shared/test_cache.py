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
