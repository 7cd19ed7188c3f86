"""A loopback relay for the conformance runner, which sends no Authorization header: it adds the
bearer token ``wan-mcp serve`` always requires, and passes everything else (and every answer,
streamed) through unchanged. Usage: ``python bearer_proxy.py UPSTREAM TOKEN PORT``."""

from __future__ import annotations

import sys

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM, TOKEN, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOP = {"host", "content-length", "authorization", "connection", "transfer-encoding"}
client = httpx2.AsyncClient(timeout=None)


async def relay(request: Request) -> StreamingResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    headers["authorization"] = f"Bearer {TOKEN}"
    url = UPSTREAM + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    upstream = await client.send(
        client.build_request(request.method, url, headers=headers, content=await request.body()), stream=True
    )
    kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
    return StreamingResponse(
        upstream.aiter_raw(), status_code=upstream.status_code, headers=kept, background=BackgroundTask(upstream.aclose)
    )


app = Starlette(routes=[Route("/{path:path}", relay, methods=["GET", "POST", "DELETE"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
