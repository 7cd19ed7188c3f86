"""Blocking work (SQLite, file I/O, Pillow, PyAV) leaves the event loop through this one door.

Why one door: the rule "never block the event loop" is easy to keep when every blocking call
site reads ``await offload.run_sync(...)``, and the count of calls in flight lets a
:class:`~wan_mcp.core.clock.VirtualClock` tell "every task is idle" from "a task waits for a
worker thread" (only the first may move virtual time forward).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["busy", "run_sync"]

T = TypeVar("T")

_busy = 0
_lock = threading.Lock()


def busy() -> int:
    """How many offloaded calls are in flight right now (in this process)."""
    return _busy


async def run_sync(fn: Callable[..., T], *args: object, limiter: anyio.CapacityLimiter | None = None) -> T:
    """Run ``fn(*args)`` in a worker thread; the caller may be cancelled, the thread finishes."""
    global _busy
    with _lock:
        _busy += 1
    try:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
    finally:
        with _lock:
            _busy -= 1
