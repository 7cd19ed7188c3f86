"""``build_server(settings)``: the MCP server and the lifespan that owns every resource.

One ``httpx2.AsyncClient``, one journal and one tracker per process, opened when the
server starts and closed when it stops (for HTTP transports the lifespan runs once per
app, shared by all sessions).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from wan_mcp import __version__
from wan_mcp.config import Settings
from wan_mcp.core.files import FileBoundary, UrlPolicy
from wan_mcp.core.journal import SqliteJournal
from wan_mcp.core.service import ServiceOptions, VideoService
from wan_mcp.core.tracker import PollTiming, TaskTracker
from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client
from wan_mcp.server.resources import INSTRUCTIONS, register_resources
from wan_mcp.server.tools import AppState, build_tools

log = logging.getLogger("wan_mcp.server")

#: How long closing the journal and the HTTP client may take, even when the run was cancelled.
CLOSE_TIMEOUT = 10.0


class Lifecycle:
    """A graceful stop for one server run, driven by the transport runner (signals).

    ``begin_shutdown()`` makes every wait in flight return its current record at once
    (a normal "still running, poll again" result) and every later wait return
    immediately; ``drain()`` then waits, bounded, until no request is being handled,
    so the runner can close connections without cutting an answer. ``closed`` turns
    true once the lifespan has closed the journal. Use it from the event loop's thread.
    """

    def __init__(self) -> None:
        self.stopping = False
        self.closed = False
        self.in_flight = 0
        self._tracker: TaskTracker | None = None

    def attach(self, tracker: TaskTracker) -> None:
        self._tracker = tracker
        if self.stopping:
            tracker.begin_shutdown()

    def begin_shutdown(self) -> None:
        self.stopping = True
        if self._tracker is not None:
            self._tracker.begin_shutdown()

    async def drain(self, timeout: float, *, settle: float = 0.2) -> bool:  # noqa: ASYNC109 - a bounded poll
        """Wait until no request is in flight (at most ``timeout`` s); True if drained."""
        with anyio.move_on_after(timeout):
            while self.in_flight:  # noqa: ASYNC110 - no loop exists when this object is built
                await anyio.sleep(0.05)
            await anyio.sleep(settle)  # the last answers leave the handler before they reach the socket
            return True
        return False

    async def wait_closed(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded poll
        with anyio.move_on_after(timeout):
            while not self.closed:  # noqa: ASYNC110 - set from a lifespan that may run in another task
                await anyio.sleep(0.05)
        return self.closed

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: counts the requests being handled (notifications pass through)."""
        if ctx.request_id is None:
            return await call_next(ctx)
        self.in_flight += 1
        try:
            return await call_next(ctx)
        finally:
            self.in_flight -= 1


def _shielded(close: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """Run a close step to completion even when the run that owns it was cancelled."""

    async def run() -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            await close()

    return run


@asynccontextmanager
async def open_service(settings: Settings, lifecycle: Lifecycle | None = None) -> AsyncIterator[VideoService]:
    """Everything a VideoService needs, opened in order and closed in reverse."""
    async with AsyncExitStack() as stack:
        http = make_http_client(settings)
        stack.push_async_callback(_shielded(http.aclose))
        provider = GatewayClient(
            http,
            base_url=settings.base_url,
            api_key=settings.api_key,
            retry=RetryPolicy.from_settings(settings),
        )
        journal = await SqliteJournal.open(settings.journal_path)
        stack.push_async_callback(_shielded(journal.close))
        timing = PollTiming(
            first_delay=settings.poll_first_seconds,
            interval=settings.poll_interval_seconds,
            max_interval=settings.poll_max_interval_seconds,
            heartbeat=min(5.0, settings.poll_interval_seconds),
            min_refresh=min(2.0, settings.poll_first_seconds),
        )
        tracker = await stack.enter_async_context(
            TaskTracker(provider, journal, timing=timing, rate_budget=settings.upstream_rate_budget)
        )
        if lifecycle is not None:
            lifecycle.attach(tracker)
        boundary = FileBoundary(
            settings.read_roots, settings.resolved_output_dir, restrict_dotdirs=settings.restrict_dotdirs
        )
        service = VideoService(
            provider=provider,
            journal=journal,
            tracker=tracker,
            boundary=boundary,
            url_policy=UrlPolicy(settings.allow_private_urls),
            http=http,
            options=ServiceOptions.from_settings(settings),
        )
        yield service


def build_server(
    settings: Settings,
    *,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
    lifecycle: Lifecycle | None = None,
) -> MCPServer[AppState]:
    run = lifecycle if lifecycle is not None else Lifecycle()

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        run.closed = False
        try:
            async with open_service(settings, run) as service, anyio.create_task_group() as tg:
                if settings.api_key is not None:
                    tg.start_soon(_reconcile, service)
                yield AppState(service=service, settings=settings)
                tg.cancel_scope.cancel()
        finally:
            run.closed = True

    server: MCPServer[AppState] = MCPServer(
        "wan-mcp",
        title="Wan 2.6 video (ToAPIs)",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        tools=build_tools(settings),
        token_verifier=token_verifier,
        auth=auth,
        middleware=[run],
    )
    register_resources(server)
    return server


async def _reconcile(service: VideoService) -> None:
    """Settle submissions a previous run left in flight (crash between POST and reply)."""
    try:
        settled = await service.reconcile_unsettled()
        if settled:
            log.info("reconciled %d in-flight submission(s) from a previous run", settled)
    except Exception as exc:  # never let start-up housekeeping take the server down
        log.warning("start-up reconciliation skipped: %s", exc)


def quiet_third_party_loggers() -> None:
    """MCPServer configures INFO on the root logger; httpx2 then logs every request."""
    for name in ("httpx2", "httpcore", "httpcore2", "mcp", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
