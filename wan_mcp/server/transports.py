"""stdio | sse | streamable HTTP, locked down by default.

HTTP listens on loopback unless told otherwise, and refuses to listen anywhere else
without a bearer token (peers ship open ``0.0.0.0`` servers; see anchors.md P8).
DNS-rebinding protection stays on with an explicit Host/Origin allowlist: the SDK
silently disables it for ``0.0.0.0``, so we always pass our own settings.
Request bodies are capped at ``max_request_body_bytes`` (16 MiB: a 10 MiB image as
base64 is ~13.4 MiB) and answered 413 beyond it.

A stop signal (SIGTERM/SIGINT) is graceful on every transport: waits in flight end
early with a normal "still running, poll again" result carrying the task id, then
the server stops accepting, lets the answers go out and closes the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import uvicorn
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.routes import cors_middleware
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse

from wan_mcp.config import Settings
from wan_mcp.errors import ErrorCode, WanError, register_secret
from wan_mcp.gateway.client import make_http_client
from wan_mcp.server.app import build_server, journal_ready, quiet_third_party_loggers
from wan_mcp.server.files import FILES_ROUTE, FileRoute
from wan_mcp.server.lifecycle import Lifecycle
from wan_mcp.server.limits import MAX_CONNECTIONS, GuardedH11Protocol, SseSessionLimit
from wan_mcp.server.principals import Principals
from wan_mcp.server.tenants_file import load_tenants

log = logging.getLogger("wan_mcp.transports")

Transport = Literal["stdio", "sse", "http"]

#: How long a stop signal waits for in-flight requests to answer before closing connections.
DRAIN_SECONDS = 5.0
#: uvicorn's own bound on open responses after that (downloads finishing, slow clients).
GRACEFUL_SECONDS = 10.0
#: Where OAuth clients look for this resource's metadata (RFC 9728) when they do not insert the path.
PRM_PATH = "/.well-known/oauth-protected-resource"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_literal(host: str) -> str:
    """How ``host`` appears in a Host header: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _has_port(host_header: str) -> bool:
    tail = host_header.rsplit("]", 1)[-1] if host_header.startswith("[") else host_header
    return ":" in tail


def transport_security(settings: Settings, host: str, port: int) -> TransportSecuritySettings:
    """Host/Origin allowlists, always on: loopback names, the bound name, and WAN_MCP_ALLOWED_HOSTS/ORIGINS.

    A wildcard bind (0.0.0.0, ::) adds nothing: the names clients use for this machine
    are unknown here, so they must be listed; the SDK would instead accept any Host.
    """
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        hosts.append(_host_literal(host))
    allowed_hosts = [h for base in hosts for h in (base, f"{base}:{port}")]
    for extra in settings.allowed_hosts:  # "wan.example.com" also allows "wan.example.com:<any port>"
        allowed_hosts += [extra] if _has_port(extra) else [extra, f"{extra}:*"]
    origins = [f"http://{h}:{port}" for h in hosts] + list(settings.allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts, allowed_origins=origins
    )


#: The shortest bearer token accepted: shorter ones can be guessed (or their fingerprint reversed).
MIN_TOKEN_CHARS = 32
TOKEN_FILE = "http-token"  # noqa: S105 - a file name, not a secret


def other_principals(settings: Settings) -> bool:
    """Whether tenants (the tenants file) or OAuth sign-in let clients in besides ``WAN_MCP_HTTP_TOKEN``."""
    return bool(settings.oauth_issuer) or bool(load_tenants(settings.resolved_tenants_file))


def http_tokens(settings: Settings) -> tuple[list[str], Path | None]:
    """The bearer tokens HTTP/SSE clients must send; never none (no unauthenticated door, not even on loopback).

    Configured tokens (``WAN_MCP_HTTP_TOKEN``) must be at least 32 characters. With none
    configured, one random token is made at first start into ``<data dir>/http-token`` (mode
    0600, readable only by this user) and reused afterwards; its path (never the token) is
    logged so the owner can give it to their client. Returns the tokens and that file, if used.
    """
    tokens = [t.get_secret_value() for t in settings.http_token]
    if tokens:
        short = [t for t in tokens if len(t) < MIN_TOKEN_CHARS]
        if short:
            raise WanError(
                ErrorCode.CONFIG,
                f"{len(short)} of the WAN_MCP_HTTP_TOKEN tokens is shorter than {MIN_TOKEN_CHARS} characters",
                hint='use long random tokens, e.g. the output of: python3 -c "import secrets; '
                'print(secrets.token_urlsafe(32))"',
            )
        return tokens, None
    if other_principals(settings):
        return [], None  # tenants or OAuth sign in: no generated token beside them
    path = settings.data_dir / TOKEN_FILE
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            token = path.read_text().strip()
        else:
            token = secrets.token_urlsafe(32)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
    except OSError as exc:
        raise WanError(
            ErrorCode.CONFIG,
            f"cannot create the HTTP token file {path} ({exc.strerror})",
            hint="set WAN_MCP_HTTP_TOKEN to a long random string, or make the data dir writable",
        ) from None
    if len(token) < MIN_TOKEN_CHARS:
        raise WanError(
            ErrorCode.CONFIG,
            f"the HTTP token in {path} is shorter than {MIN_TOKEN_CHARS} characters",
            hint="delete the file to have a new one made at the next start",
        )
    register_secret(token)
    return [token], path


def check_bind(settings: Settings, host: str) -> None:
    if not is_loopback(host) and not settings.http_token and not other_principals(settings):
        raise WanError(
            ErrorCode.CONFIG,
            f"refusing to listen on {host} without a bearer token: anyone on the network could spend your credits",
            hint="set WAN_MCP_HTTP_TOKEN to a long random string (clients send 'Authorization: Bearer <token>'),"
            " add tenants with `wan-mcp tenant add NAME`, configure WAN_MCP_OAUTH_ISSUER, or listen on 127.0.0.1",
        )


def links_base(resource: str) -> str:
    """Where download links point: the MCP endpoint's folder (``https://h/p/mcp`` -> ``https://h/p``)."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    head, _, last = path.rpartition("/")
    if last in ("mcp", "sse"):
        path = head
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def build_http_app(
    settings: Settings,
    transport: Literal["sse", "http"],
    host: str,
    port: int,
    *,
    http: httpx2.AsyncClient,
    lifecycle: Lifecycle | None = None,
) -> Any:
    """The Starlette app for an HTTP transport. ``http``: the process's one HTTP client (the
    caller closes it), used by every tool call and by the OAuth verifier for the issuer's keys."""
    check_bind(settings, host)
    tokens, token_file = http_tokens(settings)
    if token_file is not None:
        log.info("HTTP clients must send 'Authorization: Bearer <the token in %s>'", token_file)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - compared, not bound
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    resource = settings.public_url or f"{base}{'/mcp' if transport == 'http' else '/sse'}"
    # Remote tenants' videos: signed links under the resource's parent (behind a proxy, its public path).
    download_base = links_base(resource)
    principals = Principals.from_settings(settings, tokens, http=lambda: http, audience=resource)
    auth = AuthSettings(
        issuer_url=AnyHttpUrl(settings.oauth_issuer or base),
        resource_server_url=AnyHttpUrl(resource),
        required_scopes=[settings.oauth_scope],
        validate_token_resource=False,  # the audience is checked in the JWT itself; static tokens have none
    )
    server = build_server(
        settings,
        principals=principals,
        auth=auth,
        lifecycle=lifecycle,
        remote=True,
        http=http,
        download_base=download_base,
    )
    if settings.oauth_issuer:
        # RFC 9728 places the metadata at the path-inserted URL (the SDK serves that one, and 401s
        # point to it); clients that look only at the root find it there too.
        metadata = ProtectedResourceMetadata(
            resource=AnyHttpUrl(resource),
            authorization_servers=[AnyHttpUrl(settings.oauth_issuer)],
            scopes_supported=[settings.oauth_scope],
        )
        root_metadata = cors_middleware(ProtectedResourceMetadataHandler(metadata).handle, ["GET", "OPTIONS"])
        server.custom_route(PRM_PATH, methods=["GET", "OPTIONS"], include_in_schema=False)(root_metadata)

    async def healthz(_request: Request) -> JSONResponse:
        # For load balancers: unauthenticated, so it says nothing (no version, paths or counts).
        return JSONResponse({"ok": True})

    server.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)

    async def readyz(_request: Request) -> JSONResponse:
        # For load balancers: is the journal (SQLite file or PostgreSQL) answering? Says nothing more.
        ready = await journal_ready(settings)
        return JSONResponse({"ok": ready}, status_code=200 if ready else 503)

    server.custom_route("/readyz", methods=["GET"], include_in_schema=False)(readyz)
    # Unauthenticated by bearer: the signature is the credential (see server/files.py).
    server.custom_route(FILES_ROUTE, methods=["GET", "HEAD"], include_in_schema=False)(
        FileRoute(settings, download_base).handle
    )

    security = transport_security(settings, host, port)
    if transport == "http":
        return server.streamable_http_app(
            stateless_http=True,  # any replica can serve any request; progress still streams (no json_response)
            max_request_body_size=settings.max_request_body_bytes,
            transport_security=security,
            host=host,
        )
    return SseSessionLimit(
        server.sse_app(max_request_body_size=settings.max_request_body_bytes, transport_security=security, host=host)
    )


class GracefulServer(uvicorn.Server):
    """uvicorn whose stop signal first lets waits end with "still running, poll again".

    uvicorn's graceful shutdown waits for open responses, but sse-starlette ends every
    streaming response (each streamable-HTTP answer is one) shortly after ``should_exit``
    turns true. So the first signal stops accepting connections, ends the waits, lets
    the requests in flight answer (bounded by ``drain_seconds``) and only then hands
    over to uvicorn's own shutdown, which runs the lifespan exit (journal closed).
    A second signal goes straight to uvicorn (twice Ctrl-C forces the exit).
    """

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, *, drain_seconds: float = DRAIN_SECONDS) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        # Runs in the signal handler: hand the work to the loop (thread-safe wake-up).
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        if self._drain_task is None and self._loop is not None:
            self._drain_task = self._loop.create_task(self._drain(sig))

    async def _drain(self, sig: int) -> None:
        log.info("%s: answering waits in flight, then stopping", _signal_name(sig))
        for server in getattr(self, "servers", ()):
            server.close()  # stop accepting now; requests on open connections still get answers
        self._lifecycle.begin_shutdown()
        if not await self._lifecycle.drain(self._drain_seconds):
            log.warning("requests still in flight after %.0f s; closing anyway", self._drain_seconds)
        super().handle_exit(sig, None)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


async def serve(settings: Settings, transport: Transport, host: str, port: int) -> None:
    quiet_third_party_loggers()
    lifecycle = Lifecycle()
    if transport == "stdio":
        await _serve_stdio(settings, lifecycle)
        return

    http = make_http_client(settings)
    try:
        app = build_http_app(settings, transport, host, port, http=http, lifecycle=lifecycle)
        await _serve_http(app, settings, transport, host, port, lifecycle)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(GRACEFUL_SECONDS):
            await http.aclose()


async def _serve_http(
    app: Any, settings: Settings, transport: Transport, host: str, port: int, lifecycle: Lifecycle
) -> None:
    quiet_third_party_loggers()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        server_header=False,  # /healthz and the rest say nothing about the software
        # a deadline for headers (slow-header floods)
        http=type("Guarded", (GuardedH11Protocol,), {"header_timeout": settings.http_header_timeout_seconds}),
        limit_concurrency=MAX_CONNECTIONS,
    )
    log.info(
        "wan-mcp %s listening on http://%s:%d%s (bearer token %s, request bodies up to %d bytes)",
        transport,
        host if ":" not in host else f"[{host}]",
        port,
        "/mcp" if transport == "http" else "/sse",
        "required",
        settings.max_request_body_bytes,
    )
    if host in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        log.info(
            "listening on every interface: clients must send a Host header listed in WAN_MCP_ALLOWED_HOSTS "
            "(loopback names are always allowed); others get 421"
        )
    await GracefulServer(config, lifecycle).serve()


async def _serve_stdio(settings: Settings, lifecycle: Lifecycle) -> None:
    server = build_server(settings, lifecycle=lifecycle)
    quiet_third_party_loggers()
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as serving:
            tg.start_soon(_stop_stdio_on_signal, lifecycle, serving)
            await server.run_stdio_async()  # returns when the host closes stdin
        tg.cancel_scope.cancel()


async def _stop_stdio_on_signal(lifecycle: Lifecycle, serving: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for sig in signals:
            log.info("%s: answering waits in flight, closing the journal", _signal_name(sig))
            break
    lifecycle.begin_shutdown()
    await lifecycle.drain(DRAIN_SECONDS)
    serving.cancel()  # the lifespan exits: tracker stopped, journal closed (shielded)
    closed = await lifecycle.wait_closed(GRACEFUL_SECONDS)
    # The SDK reads stdin in a worker thread that no cancellation reaches while the host
    # keeps the pipe open, so once everything of ours is closed, leave without it.
    logging.shutdown()
    os._exit(0 if closed else 1)


def install_sigterm_as_interrupt() -> None:
    """Until a transport installs its own handlers, SIGTERM stops the process like Ctrl-C."""
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, signal.default_int_handler)
