"""A hostile gateway for tests: a raw HTTP/1.1 server on loopback that answers whatever bytes,
at whatever pace, a test asks for (a 400-digit number, 100,000 nested arrays, a body that never
ends, a byte every few seconds). The simulator models the contract; this models an upstream that
breaks it. Runs on the test's own event loop (asyncio), so no thread and no cleanup race.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

#: A route answers by writing to the stream itself: status line, headers, body, at its own pace.
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def json_answer(body: bytes | object, status: int = 200) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        writer.write(raw)
        await writer.drain()

    return answer


def endless_answer(chunk: bytes = b" " * 65536, pause: float = 0.0) -> Answer:
    """200 with a chunked body that never ends (or drips ``chunk`` every ``pause`` seconds)."""

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n{\r\n" % 1)
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            await asyncio.sleep(pause)

    return answer


@dataclass
class Hostile:
    """Routes by (method, path prefix); every request is logged as (method, path)."""

    routes: dict[tuple[str, str], Answer] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    sent_bytes: int = 0
    base_url: str = ""

    def route(self, method: str, prefix: str, answer: Answer) -> None:
        self.routes[(method, prefix)] = answer

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path = head.split(b" ", 2)[:2]
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (int(v) for k, _, v in (ln.partition(":") for ln in lines) if k.lower() == "content-length"), 0
            )
            if length:
                await reader.readexactly(length)
            self.requests.append((method.decode(), path.decode()))
            answer = next(
                (a for (m, p), a in self.routes.items() if m == method.decode() and path.decode().startswith(p)),
                json_answer({"error": {"message": "no route", "type": "not_found_error"}}, 404),
            )
            counted = _Counting(writer, self)
            await answer(counted)  # type: ignore[arg-type]
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _Counting:
    """A StreamWriter stand-in that counts what reached the socket."""

    def __init__(self, writer: asyncio.StreamWriter, owner: Hostile) -> None:
        self._writer = writer
        self._owner = owner

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("the client went away")
        self._owner.sent_bytes += len(data)
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()


@asynccontextmanager
async def hostile_gateway() -> AsyncIterator[Hostile]:
    hostile = Hostile()
    server = await asyncio.start_server(hostile._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hostile.base_url = f"http://127.0.0.1:{port}"
    try:
        yield hostile
    finally:
        server.close()
        for task in [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("Hostile._handle")]:
            task.cancel()
