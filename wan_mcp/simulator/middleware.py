"""The outermost ASGI layer: logs every gateway request and makes scheduled faults happen.

It sits outside Starlette so that a fault can replace, garble or swallow the response the
routes produced (``drop_response`` must create the task and *then* lose the answer), and so
that the log sees requests that never reach a route. Control endpoints (``/_sim/*``,
``/healthz``) are neither logged nor faulted: tests must be able to steer a simulator that is
busy failing.

Fault semantics, where the shared contract leaves room [I]:
- ``http_*``, ``reset`` and ``stall`` never reach the route: no task is created, no upload stored.
- ``delay`` sleeps first, then the route runs (a create lands after the delay).
- ``malformed_json`` / ``truncated_json`` run the route (a create *does* create the task) and
  then send a 200 whose body is not valid JSON; on ``file`` they garble the file bytes.
- the request body is drained before any fault answers, so clients are not hit by a broken
  pipe while still uploading; the fault they see is the one that was scheduled.
"""

from __future__ import annotations

import json
import logging
from typing import Final

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wan_mcp.simulator.connection import ConnectionRegistry
from wan_mcp.simulator.engine import Engine, LogRecord
from wan_mcp.simulator.faults import DEFAULT_RETRY_AFTER, DEFAULT_STALL_SECONDS, ENDPOINTS, Fault

logger = logging.getLogger(__name__)

DRAIN_LIMIT: Final = 64 * 1024 * 1024
BALANCE_PATHS: Final = ("/v1/user/balance", "/user/balance", "/v1/balance")
MALFORMED_BODY: Final = (
    b"<!DOCTYPE html><html><head><title>Gateway hiccup</title></head>"
    b"<body><h1>upstream returned an unexpected page</h1></body></html>"
)
_HTTP_FAULTS: Final = {
    429: ("rate_limit_error", "Too many requests, please try again later"),
    500: ("server_error", "Internal server error"),
    502: ("bad_gateway", "Bad gateway: the upstream provider did not answer"),
    503: ("service_unavailable", "Service temporarily unavailable, please retry later"),
}


def classify(path: str) -> str | None:
    """Endpoint name for the log and fault schedule; None for control paths."""
    if path == "/healthz" or path.startswith("/_sim/"):
        return None
    if path.rstrip("/") == "/v1/videos/generations":
        return "create"
    if path.startswith("/v1/videos/generations/"):
        return "status"
    if path == "/v1/uploads/images":
        return "upload_image"
    if path == "/v1/uploads/videos":
        return "upload_video"
    if path.startswith("/files/"):
        return "file"
    if path in BALANCE_PATHS:
        return "balance"
    return "other"


def format_retry_after(seconds: float) -> str:
    """Whole seconds as the RFC says; fractional values pass through so fast tests stay fast."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class _Captured:
    """A response the inner app produced, held back so a fault can decide its fate."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body.extend(message.get("body", b""))


class FaultMiddleware:
    def __init__(self, app: ASGIApp, engine: Engine, connections: ConnectionRegistry) -> None:
        self.app = app
        self.engine = engine
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = classify(scope["path"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        record = self.engine.log_request(scope["method"], scope["path"], endpoint)
        fault = self.engine.take_fault(endpoint) if endpoint in ENDPOINTS else None

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        if fault is None:
            await self.app(scope, receive, logged_send)
            return
        record.fault = fault.kind
        logger.info("fault %s on %s %s", fault.kind, scope["method"], scope["path"])
        await self._inject(fault, record, scope, receive, logged_send)

    async def _inject(self, fault: Fault, record: LogRecord, scope: Scope, receive: Receive, send: Send) -> None:
        kind = fault.kind
        if kind.startswith("http_"):
            await _drain(receive)
            await self._send_error(int(kind.removeprefix("http_")), fault, send)
        elif kind == "reset":
            await _drain(receive)
            await self._reset(scope, receive)
        elif kind == "stall":
            await _drain(receive)
            await self._sleep(fault.delay if fault.delay is not None else DEFAULT_STALL_SECONDS)
            await self._reset(scope, receive)
        elif kind == "delay":
            await self._sleep(fault.delay or 0.0)
            await self.app(scope, receive, send)
        else:  # malformed_json, truncated_json, drop_response: the route runs, its answer is spoiled
            captured = _Captured()
            await self.app(scope, receive, captured.send)
            if kind == "drop_response":
                await self._reset(scope, receive)
                return
            body = (
                MALFORMED_BODY if kind == "malformed_json" else bytes(captured.body[: max(1, len(captured.body) // 2)])
            )
            content_type = b"application/json" if record.endpoint != "file" else _header(captured, b"content-type")
            await _send_raw(send, 200, body, content_type)

    async def _send_error(self, status: int, fault: Fault, send: Send) -> None:
        err_type, message = _HTTP_FAULTS[status]
        headers: list[tuple[bytes, bytes]] = []
        retry_after = (
            fault.retry_after if fault.retry_after is not None else (DEFAULT_RETRY_AFTER if status == 429 else None)
        )
        if retry_after is not None:
            headers.append((b"retry-after", format_retry_after(retry_after).encode()))
        body = json.dumps({"error": {"code": status, "message": message, "type": err_type}}).encode()
        await _send_raw(send, status, body, b"application/json", headers)

    async def _reset(self, scope: Scope, receive: Receive) -> None:
        if not self.connections.reset(scope.get("client")):
            logger.debug("reset: connection already gone")
        # Wait for uvicorn to notice, so it does not answer "500: app returned without a response".
        with anyio.move_on_after(1.0):
            while (await receive())["type"] != "http.disconnect":
                pass

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the server shuts down so stop() is never held hostage."""
        deadline = anyio.current_time() + seconds
        while not self.engine.closing.is_set():
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            await anyio.sleep(min(0.05, remaining))


def _header(captured: _Captured, name: bytes) -> bytes:
    for key, value in captured.headers:
        if key.lower() == name:
            return value
    return b"application/octet-stream"


async def _drain(receive: Receive) -> None:
    total = 0
    while total <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_raw(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
