"""Closing a client's TCP connection without an HTTP response, from inside an ASGI app.

ASGI deliberately hides the socket, and uvicorn answers 500 when an app raises or returns
without responding, so "the gateway vanished mid-request" cannot be expressed in plain ASGI.
We subclass uvicorn's h11 protocol (``Config(http=<class>)`` is uvicorn's public hook) to
remember each connection's transport under its peer address, which is also the ASGI
``scope["client"]``. A reset sets ``SO_LINGER`` to zero before aborting, so the kernel sends
RST: clients see a genuine connection reset (``ReadError``) or a "server disconnected"
protocol error, never an HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

Peer = tuple[str, int]


class ConnectionRegistry:
    """Peer address -> live transport, for one server (touched only on its event loop)."""

    def __init__(self) -> None:
        self._transports: dict[Peer, asyncio.Transport] = {}

    def protocol_class(self) -> type[H11Protocol]:
        """An h11 protocol class bound to this registry, for ``uvicorn.Config(http=...)``."""
        registry = self

        class TrackedH11Protocol(H11Protocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                if self.client is not None:
                    registry._transports[(self.client[0], self.client[1])] = transport

            def connection_lost(self, exc: Exception | None) -> None:
                if self.client is not None:
                    registry._transports.pop((self.client[0], self.client[1]), None)
                super().connection_lost(exc)

        return TrackedH11Protocol

    def reset(self, client: Any) -> bool:
        """Abort the connection of ASGI ``scope["client"]`` with a TCP RST; False if it is gone."""
        if not client:
            return False
        transport = self._transports.pop((str(client[0]), int(client[1])), None)
        if transport is None or transport.is_closing():
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:  # already torn down by the peer; abort() below still closes our side
                logger.debug("could not set SO_LINGER before reset", exc_info=True)
        transport.abort()
        return True
