"""Limits that hold before a request is authenticated: slow headers, too many connections, too
many open SSE sessions for one token.

Why: on a shared machine (or behind a proxy) anyone can open connections to the port. 600
connections that sent their headers a byte at a time once made ``/healthz`` time out; an
unauthenticated client must not be able to hold the server's attention for long, and one token
must not be able to hold every SSE slot. The numbers are stated in the README.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HEADER_TIMEOUT_SECONDS",
    "MAX_CONNECTIONS",
    "MAX_SSE_SESSIONS",
    "MAX_SSE_SESSIONS_PER_TOKEN",
    "GuardedH11Protocol",
    "SseSessionLimit",
]

#: A client has this long from connecting to finishing its first request line and headers.
HEADER_TIMEOUT_SECONDS = 10.0
#: Open connections (and requests in flight) beyond which new requests get 503.
MAX_CONNECTIONS = 512
#: Open SSE sessions in all, and per bearer token.
MAX_SSE_SESSIONS = 128
MAX_SSE_SESSIONS_PER_TOKEN = 16


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for the first request's headers."""

    header_timeout = HEADER_TIMEOUT_SECONDS

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is None and not self.transport.is_closing():  # headers never completed
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)


class SseSessionLimit:
    """ASGI middleware: at most ``total`` open ``GET /sse`` streams, ``per_token`` per bearer token.

    Counted by the token's digest as presented; an invalid token is refused by the auth layer
    inside anyway. Over the limit: 429 with a plain explanation, before a session is created.
    """

    def __init__(
        self, app: ASGIApp, *, total: int = MAX_SSE_SESSIONS, per_token: int = MAX_SSE_SESSIONS_PER_TOKEN
    ) -> None:
        self._app = app
        self._total = total
        self._per_token = per_token
        self._open: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or not scope.get("path", "").endswith("/sse"):
            await self._app(scope, receive, send)
            return
        who = _token_digest(scope)
        if sum(self._open.values()) >= self._total or self._open.get(who, 0) >= self._per_token:
            await _too_many(send)
            return
        self._open[who] = self._open.get(who, 0) + 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._open[who] -= 1
            if not self._open[who]:
                del self._open[who]


def _token_digest(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return hashlib.sha256(value).hexdigest()[:16]
    return "-"


async def _too_many(send: Send) -> None:
    body = (
        b"too many open SSE sessions for this token (at most "
        + str(MAX_SSE_SESSIONS_PER_TOKEN).encode()
        + b"); close one, or use streamable HTTP at /mcp, which holds no session"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
