"""Time, injected: every timing rule (poll delays, back-off, the rate budget, waits) reads it here.

Why: a rule such as "the first poll comes 5 s after the submission" cannot be tested on a
busy 2-core machine by measuring wall-clock time without flaking. Code that owns a timing
rule takes a :class:`Clock`; production passes :data:`SYSTEM_CLOCK`, and tests (and the
benchmarks that model hours of polling) pass a :class:`VirtualClock`, whose time moves only
when every task is idle, straight to the next deadline.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread

from wan_mcp.core import offload

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    """The four things timing code needs."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""
        ...

    def time(self) -> float:
        """Unix seconds (timestamps stored in the journal)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def move_on_after(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        """A scope cancelled ``seconds`` from now (like :func:`anyio.move_on_after`)."""
        ...


class SystemClock:
    """Real time: :func:`time.monotonic`, :func:`time.time` and anyio's own timers."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def move_on_after(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        return anyio.move_on_after(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


class VirtualClock:
    """Time that stands still until the test (or a benchmark) lets it move.

    :meth:`advance` fires every timer due within the step, earliest first, and between two
    firings lets every task run until all are idle again (blocked on something other than
    a worker thread), so what happens at virtual second 5 is complete before second 6
    begins. Nothing here depends on how fast the machine is: a rule tested on it holds on a
    starved CI runner exactly as on a quiet laptop.
    """

    def __init__(self, start: float = 1_000.0, wall_offset: float = 1_750_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._timers: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def _add(self, due: float, callback: Callable[[], None]) -> int:
        handle = next(self._ids)
        self._callbacks[handle] = callback
        heapq.heappush(self._timers, (due, handle))
        return handle

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        handle = self._add(self._now + seconds, event.set)
        try:
            await event.wait()
        finally:
            self._callbacks.pop(handle, None)

    @contextmanager
    def move_on_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        scope = anyio.CancelScope()
        handle = self._add(self._now + max(0.0, seconds), scope.cancel)
        try:
            with scope:
                yield scope
        finally:
            self._callbacks.pop(handle, None)

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][1] not in self._callbacks:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    @staticmethod
    async def settle() -> None:
        """Return once every other task is blocked and no worker thread is busy."""
        limiter = anyio.to_thread.current_default_thread_limiter()

        def threads_idle() -> bool:
            return offload.busy() == 0 and limiter.borrowed_tokens == 0

        while True:
            await _all_tasks_blocked()
            if threads_idle():
                await _all_tasks_blocked()
                if threads_idle():
                    return
            await anyio.sleep(0.001)  # a worker thread is still busy: let it finish in real time

    async def advance(self, seconds: float) -> None:
        """Move ``seconds`` forward, firing every timer due on the way, in order."""
        target = self._now + seconds
        await self.settle()
        while (due := self.next_deadline()) is not None and due <= target:
            _, handle = heapq.heappop(self._timers)
            callback = self._callbacks.pop(handle, None)
            self._now = max(self._now, due)
            if callback is not None:
                callback()
                await self.settle()
        self._now = target
        await self.settle()

    async def run_until(self, done: Callable[[], bool], *, limit: float) -> None:
        """Jump from deadline to deadline until ``done()`` holds; at most ``limit`` virtual seconds.

        Raises ``TimeoutError`` if the condition still fails when the limit is reached (or no
        timer is left to fire), so a test never hangs on a rule that was broken.
        """
        stop = self._now + limit
        await self.settle()
        while not done():
            due = self.next_deadline()
            if due is None or due > stop:
                raise TimeoutError(f"condition not met by virtual t+{limit:g}s (next timer: {due})")
            await self.advance(due - self._now)


async def _all_tasks_blocked() -> None:
    """:func:`anyio.wait_all_tasks_blocked`, without its 0.1 s naps on asyncio.

    anyio re-checks every 100 ms while a task is runnable; stepping a virtual clock through
    hundreds of deadlines would then take minutes of real time. On asyncio a task is blocked
    when it awaits a future that is not done, which we can check after each loop iteration.
    """
    try:
        import asyncio

        me = asyncio.current_task()
    except RuntimeError:  # not on asyncio (trio): anyio's own check works there
        me = None
    if me is None:
        await anyio.wait_all_tasks_blocked()
        return
    # asyncio keeps every callback about to run (a task's next step included) in the loop's
    # ready queue: empty once we resume means every other task waits on something. Checking it
    # is O(1); scanning every task (the fallback, for loops without it) made each virtual timer
    # O(tasks), and a benchmark of 1,000 live tasks took minutes instead of seconds.
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    while True:
        await asyncio.sleep(0)
        if ready is not None:
            if not ready:
                return
            continue
        others = [t for t in asyncio.all_tasks() if t is not me]
        # _fut_waiter is how asyncio itself tracks what a task waits on (anyio reads it too).
        if all((w := getattr(t, "_fut_waiter", None)) is not None and not w.done() for t in others):
            return
