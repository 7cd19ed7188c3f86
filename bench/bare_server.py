"""The SDK floor: a bare ``MCPServer`` with one trivial tool, nothing of ours.

Run as a script so nothing from ``wan_mcp`` (or ``bench``) is imported::

    python bench/bare_server.py                 # stdio
    python bench/bare_server.py http PORT       # streamable HTTP on 127.0.0.1:PORT (stateless, like ours)
    python bench/bare_server.py http-auth PORT  # the same behind the SDK's bearer-token auth (token: $BARE_TOKEN)

The only deviation from the SDK's hello-world is that the ``mcp`` loggers are set to
WARNING, as ``wan-mcp`` does: the comparison is about request handling, not log lines.
"""

from __future__ import annotations

import logging
import os
import sys

from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings


class OneToken:
    """The simplest token verifier: one static token, compared as the SDK's examples do."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if token != os.environ.get("BARE_TOKEN"):
            return None
        return AccessToken(token=token, client_id="bench", scopes=["mcp"])


async def ping() -> str:
    """Answer pong."""
    return "pong"


def build(auth: bool, port: int = 0) -> MCPServer:
    """The bare server with its one tool; behind the SDK's bearer auth when ``auth``."""
    if auth:
        url = f"http://127.0.0.1:{port}"
        settings = AuthSettings(issuer_url=url, resource_server_url=f"{url}/mcp", required_scopes=["mcp"])
        server = MCPServer("bare", token_verifier=OneToken(), auth=settings)
    else:
        server = MCPServer("bare")
    server.tool()(ping)
    return server


def main(argv: list[str]) -> None:
    for name in ("mcp", "httpx2", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if argv and argv[0] in ("http", "http-auth"):
        import uvicorn

        port = int(argv[1])
        app = build(auth=argv[0] == "http-auth", port=port).streamable_http_app(stateless_http=True, host="127.0.0.1")
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", server_header=False)
        return
    build(auth=False).run()


if __name__ == "__main__":
    main(sys.argv[1:])
