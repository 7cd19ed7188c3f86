"""A graceful stop for one server run, driven by the transport runner (signals).

Why it exists: a host that stops us (SIGTERM, Ctrl-C, a closed window) must not cut an agent's
answer in half or leave the journal open. ``begin_shutdown()`` makes every wait in flight
return its current record at once (a normal "still running, poll again" result) and every
later wait return immediately; ``drain()`` then waits, bounded, until no request is being
handled; ``wait_closed()`` until the lifespan has closed the journal. Waiting is done on
events, never by polling a flag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from wan_mcp.core.tracker import TaskTracker

__all__ = ["Lifecycle"]


class Lifecycle:
    """State of one run: stopping, requests in flight, closed. Use it from the event loop's thread."""

    def __init__(self) -> None:
        self.stopping = False
        self.closed = False
        self.in_flight = 0
        self._tracker: TaskTracker | None = None
        self._watchers: list[anyio.Event] = []  # created on the loop, when someone waits

    def attach(self, tracker: TaskTracker) -> None:
        self._tracker = tracker
        if self.stopping:
            tracker.begin_shutdown()

    def begin_shutdown(self) -> None:
        self.stopping = True
        if self._tracker is not None:
            self._tracker.begin_shutdown()

    def mark_closed(self, closed: bool) -> None:
        """Called by the lifespan: False when it opens, True once the journal is closed."""
        self.closed = closed
        self._changed()

    def _changed(self) -> None:
        watchers, self._watchers = self._watchers, []
        for event in watchers:
            event.set()

    async def _until(self, condition: Callable[[], bool], within: float) -> bool:
        with anyio.move_on_after(within):
            while not condition():
                event = anyio.Event()
                self._watchers.append(event)
                await event.wait()
        return condition()

    async def drain(self, within: float, *, settle: float = 0.2) -> bool:
        """Wait until no request is in flight (at most ``within`` s); True if drained."""
        if not await self._until(lambda: self.in_flight == 0, within):
            return False
        await anyio.sleep(settle)  # the last answers leave the handler before they reach the socket
        return True

    async def wait_closed(self, within: float) -> bool:
        return await self._until(lambda: self.closed, within)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: counts the requests being handled (notifications pass through)."""
        if ctx.request_id is None:
            return await call_next(ctx)
        self.in_flight += 1
        try:
            return await call_next(ctx)
        finally:
            self.in_flight -= 1
            self._changed()
