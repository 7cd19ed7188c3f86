"""stdio | sse | streamable HTTP, locked down by default.

HTTP listens on loopback unless told otherwise, and refuses to listen anywhere else
without a bearer token (peers ship open ``0.0.0.0`` servers; see anchors.md P8).
DNS-rebinding protection stays on with an explicit Host/Origin allowlist: the SDK
silently disables it for ``0.0.0.0``, so we always pass our own settings.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import signal
from typing import Any, Literal

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse

from wan_mcp.config import Settings
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.app import build_server, quiet_third_party_loggers

log = logging.getLogger("wan_mcp.transports")

Transport = Literal["stdio", "sse", "http"]


class StaticTokenVerifier(TokenVerifier):
    """Accepts any of the configured bearer tokens, compared in constant time."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    async def verify_token(self, token: str) -> AccessToken | None:
        candidate = token.encode()
        ok = False
        for known in self._tokens:  # no early exit: timing does not reveal which token matched
            ok |= hmac.compare_digest(candidate, known)
        if not ok:
            return None
        return AccessToken(token="(redacted)", client_id="wan-mcp-client", scopes=["wan"])  # noqa: S106


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(settings: Settings, host: str, port: int) -> TransportSecuritySettings:
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        hosts.append(host)
    allowed_hosts = [h for base in hosts for h in (base, f"{base}:{port}")] + list(settings.allowed_hosts)
    origins = [f"http://{h}:{port}" for h in hosts] + list(settings.allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts, allowed_origins=origins
    )


def check_bind(settings: Settings, host: str) -> None:
    if not is_loopback(host) and not settings.http_token:
        raise WanError(
            ErrorCode.CONFIG,
            f"refusing to listen on {host} without a bearer token: anyone on the network could spend your credits",
            hint="set WAN_MCP_HTTP_TOKEN to a long random string (clients send 'Authorization: Bearer <token>'),"
            " or listen on 127.0.0.1",
        )


def build_http_app(settings: Settings, transport: Literal["sse", "http"], host: str, port: int) -> Any:
    """The Starlette app for an HTTP transport (also used by tests with their own uvicorn)."""
    check_bind(settings, host)
    tokens = [t.get_secret_value() for t in settings.http_token]
    verifier = StaticTokenVerifier(tokens) if tokens else None
    auth = None
    if verifier is not None:
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        auth = AuthSettings(
            issuer_url=AnyHttpUrl(base),
            resource_server_url=AnyHttpUrl(f"{base}/mcp"),
            required_scopes=["wan"],
            validate_token_resource=False,
        )
    server = build_server(settings, token_verifier=verifier, auth=auth)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    server.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)

    security = transport_security(settings, host, port)
    if transport == "http":
        return server.streamable_http_app(
            stateless_http=True,  # any replica can serve any request; progress still streams (no json_response)
            max_request_body_size=settings.max_request_body_bytes,
            transport_security=security,
            host=host,
        )
    return server.sse_app(max_request_body_size=settings.max_request_body_bytes, transport_security=security, host=host)


async def serve(settings: Settings, transport: Transport, host: str, port: int) -> None:
    quiet_third_party_loggers()
    if transport == "stdio":
        server = build_server(settings)
        quiet_third_party_loggers()
        await server.run_stdio_async()
        return
    import uvicorn

    app = build_http_app(settings, transport, host, port)
    quiet_third_party_loggers()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=10)
    userver = uvicorn.Server(config)
    log.info(
        "wan-mcp %s listening on http://%s:%d%s",
        transport,
        host,
        port,
        "/mcp" if transport == "http" else "/sse",
    )
    await userver.serve()


def install_sigterm_as_interrupt() -> None:
    """stdio servers get SIGTERM from hosts: exit like Ctrl-C so lifespans close the journal."""
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, signal.default_int_handler)
