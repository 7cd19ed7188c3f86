"""``build_server(settings)``: the MCP server and the lifespan that owns every resource.

One ``httpx2.AsyncClient``, one journal and one tracker per process, opened when the
server starts and closed when it stops (for HTTP transports the lifespan runs once per
app, shared by all sessions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx2
from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from mcp.server.subscriptions import InMemorySubscriptionBus

from wan_mcp import __version__
from wan_mcp.config import Settings
from wan_mcp.core.boundary import FileBoundary, UrlPolicy
from wan_mcp.core.journal import SqliteJournal, TaskJournal
from wan_mcp.core.links import LINK_KEY, DownloadLinks
from wan_mcp.core.service import ServiceOptions, VideoService
from wan_mcp.core.spending import PriceTable
from wan_mcp.core.tenancy import TENANTS_FOLDER
from wan_mcp.core.tracker import PollTiming, TaskTracker
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client
from wan_mcp.server.lifecycle import Lifecycle
from wan_mcp.server.mcp_tasks import TaskListenHandler, TasksExtension
from wan_mcp.server.player import apps_extension
from wan_mcp.server.principals import Principals
from wan_mcp.server.registration import serve_listen
from wan_mcp.server.resources import instructions, register_resources
from wan_mcp.server.tools import AppState, build_tools

log = logging.getLogger("wan_mcp.server")

#: How long closing the journal and the HTTP client may take, even when the run was cancelled.
CLOSE_TIMEOUT = 10.0


def _shielded(close: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """Run a close step to completion even when the run that owns it was cancelled."""

    async def run() -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            await close()

    return run


@asynccontextmanager
async def open_service(
    settings: Settings,
    lifecycle: Lifecycle | None = None,
    *,
    remote: bool = False,
    http: httpx2.AsyncClient | None = None,
    download_base: str | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[VideoService]:
    """Everything a VideoService needs, opened in order and closed in reverse.

    ``remote``: the clients are HTTP/SSE clients, who may not name files on this machine
    unless ``allow_remote_paths`` says so. ``http``: the HTTP client of the caller, who closes
    it (the HTTP transports make one per process, which the OAuth verifier shares; an SSE
    connection runs this per connection); without it one is made here and closed here.
    ``download_base``: where this server is reached (an HTTP transport's base URL): remote tenants
    then get their finished files as signed links under it (``<base>/files/...``). ``wall_clock``: the
    service's time (tests inject one).
    """
    if settings.allowed_dirs is None:
        _create_inbox(settings.resolved_inbox_dir)
    async with AsyncExitStack() as stack:
        if http is None:
            http = make_http_client(settings)
            stack.push_async_callback(_shielded(http.aclose))
        provider = GatewayClient(
            http,
            base_url=settings.base_url,
            api_key=settings.api_key,
            retry=RetryPolicy.from_settings(settings),
        )
        journal = await open_journal(settings)
        stack.push_async_callback(_shielded(journal.close))
        timing = PollTiming.from_settings(settings)
        tracker = await stack.enter_async_context(
            TaskTracker(
                provider,
                journal,
                timing=timing,
                rate_budget=settings.upstream_rate_budget,
                shared=settings.database_url is not None,  # replicas on one database: one poller per task
            )
        )
        if lifecycle is not None:
            lifecycle.attach(tracker)
        boundary = FileBoundary(
            settings.read_roots,
            settings.resolved_output_dir,
            restrict_dotdirs=settings.restrict_dotdirs,
            excluded=[settings.resolved_output_dir / TENANTS_FOLDER],  # remote tenants' files are theirs
        )
        service = VideoService(
            provider=provider,
            journal=journal,
            tracker=tracker,
            boundary=boundary,
            url_policy=UrlPolicy(settings.allow_private_urls),
            http=http,
            options=ServiceOptions.from_settings(settings, local_paths=not remote or settings.allow_remote_paths),
            prices=PriceTable.load(settings.prices_file),
            links=None if download_base is None else await download_links(settings, journal, download_base),
            wall_clock=wall_clock,
        )
        stack.push_async_callback(_shielded(service.aclose))
        yield service


async def download_links(settings: Settings, journal: TaskJournal, base_url: str) -> DownloadLinks:
    """The link signer (and checker) of this deployment: its key is the journal's, shared by every replica."""
    return DownloadLinks(
        await journal.server_key(LINK_KEY),
        base_url=base_url,
        output_dir=settings.resolved_output_dir,
        ttl_seconds=settings.download_link_seconds,
    )


async def open_journal(settings: Settings) -> TaskJournal:
    """SQLite in the data dir, or PostgreSQL when ``WAN_MCP_DATABASE_URL`` names one (loaded only then)."""
    if settings.database_url is None:
        return await SqliteJournal.open(settings.journal_path)
    url = settings.database_url.get_secret_value()
    try:
        from wan_mcp.core.journal.postgres import PostgresJournal
    except ImportError:
        raise WanError(
            ErrorCode.CONFIG,
            "WAN_MCP_DATABASE_URL names a PostgreSQL journal, but its driver is not installed",
            hint="pip install 'wan-mcp[postgres]' (psycopg 3), or unset WAN_MCP_DATABASE_URL to use SQLite",
        ) from None
    return await PostgresJournal.open(url)


async def journal_ready(settings: Settings) -> bool:
    """Whether the journal this server writes to answers now (``/readyz``)."""
    if settings.database_url is None:
        return await SqliteJournal.ping(settings.journal_path)
    from wan_mcp.core.journal.postgres import PostgresJournal

    return await PostgresJournal.ping(settings.database_url.get_secret_value())


def _create_inbox(inbox: Path) -> None:
    """The one folder the default lets an agent read pictures from; made on first run (private)."""
    try:
        inbox.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create the inbox %s (%s); local pictures cannot be read until it exists", inbox, exc)


def build_server(
    settings: Settings,
    *,
    principals: Principals | None = None,
    auth: AuthSettings | None = None,
    lifecycle: Lifecycle | None = None,
    remote: bool = False,
    http: httpx2.AsyncClient | None = None,
    download_base: str | None = None,
) -> MCPServer[AppState]:
    """The MCP server. ``principals``: who may call (HTTP/SSE) and as which tenant; none on stdio."""
    run = lifecycle if lifecycle is not None else Lifecycle()

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        run.mark_closed(False)
        try:
            async with (
                open_service(settings, run, remote=remote, http=http, download_base=download_base) as service,
                anyio.create_task_group() as tg,
            ):
                if settings.api_key is not None:
                    tg.start_soon(_reconcile, service)
                yield AppState(service=service, settings=settings, principals=principals)
                tg.cancel_scope.cancel()
        finally:
            run.mark_closed(True)

    bus = InMemorySubscriptionBus()
    tasks = TasksExtension()
    server: MCPServer[AppState] = MCPServer(
        "wan-mcp",
        title="Wan 2.6 video (ToAPIs)",
        version=__version__,
        instructions=instructions(settings, remote=remote),
        lifespan=lifespan,
        tools=build_tools(settings),
        token_verifier=principals,
        auth=auth,
        middleware=[run],
        extensions=[tasks, apps_extension(settings)],  # MCP Tasks; the inline player (MCP Apps)
        subscriptions=bus,
    )
    serve_listen(server, TaskListenHandler(bus, tasks))  # subscriptions/listen, with the tasks' taskIds
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
