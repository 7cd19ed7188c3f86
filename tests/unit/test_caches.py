"""The one in-memory cache: bounded, least recently used out first."""

from __future__ import annotations

from wan_mcp.core.caches import Lru


def test_the_least_recently_used_entry_leaves_first() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2
