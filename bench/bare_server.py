"""The SDK floor: a bare ``MCPServer`` with one trivial tool, nothing of ours.

Run as a script so nothing from ``wan_mcp`` (or ``bench``) is imported::

    python bench/bare_server.py                 # stdio
    python bench/bare_server.py http PORT       # streamable HTTP on 127.0.0.1:PORT (stateless, like ours)

The only deviation from the SDK's hello-world is that the ``mcp`` loggers are set to
WARNING, as ``wan-mcp`` does: the comparison is about request handling, not log lines.
"""

from __future__ import annotations

import logging
import sys

from mcp.server import MCPServer

mcp = MCPServer("bare")


@mcp.tool()
async def ping() -> str:
    """Answer pong."""
    return "pong"


def main(argv: list[str]) -> None:
    for name in ("mcp", "httpx2", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if argv and argv[0] == "http":
        import uvicorn

        port = int(argv[1])
        app = mcp.streamable_http_app(stateless_http=True, host="127.0.0.1")
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", server_header=False)
        return
    mcp.run()


if __name__ == "__main__":
    main(sys.argv[1:])
