"""Run the simulator: in-process for tests (:class:`SimulatorServer`) or as ``wan-mcp simulator``.

Tests need a *real* server (real sockets, real resets, real timeouts) that starts in
milliseconds, reports the port it actually got, and stops promptly even while a ``stall``
fault is holding a request open. So the server binds its own socket (port 0 -> free port)
before uvicorn starts, runs uvicorn on a private event loop in a daemon-free background
thread, and on stop wakes every stalled request (``engine.closing``) before asking uvicorn to
exit; nothing outlives :meth:`SimulatorServer.stop`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import anyio
import uvicorn

from wan_mcp.simulator.app import build_app
from wan_mcp.simulator.connection import ConnectionRegistry
from wan_mcp.simulator.engine import Engine, RequestLogEntry
from wan_mcp.simulator.faults import ENDPOINTS, KINDS, Fault

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_TIMEOUT_SECONDS = 5.0


class _Server(uvicorn.Server):
    """uvicorn.Server that also wakes stalled requests when asked to exit."""

    def __init__(self, config: uvicorn.Config, engine: Engine, *, own_signals: bool) -> None:
        super().__init__(config)
        self._engine = engine
        self._own_signals = own_signals

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._engine.closing.set()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Embedded servers must not steal the host process's Ctrl-C (pytest's, for one).
        if self._own_signals:
            with super().capture_signals():
                yield
        else:
            yield


def _config(engine: Engine, host: str, port: int) -> uvicorn.Config:
    registry = ConnectionRegistry()
    return uvicorn.Config(
        build_app(engine, registry),
        host=host,
        port=port,
        http=registry.protocol_class(),
        ws="none",
        lifespan="off",
        log_config=None,  # never touch the host's logging; uvicorn's loggers propagate to root
        access_log=False,
        timeout_graceful_shutdown=2,
    )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SimulatorServer:
    """A simulated ToAPIs gateway on a loopback port; see docs/SIMULATOR_API.md.

    Use ``with SimulatorServer(...) as sim:`` from sync code (background thread), or
    ``async with SimulatorServer(...).running() as sim:`` inside a running asyncio loop.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        job_seconds: float = 0.3,
        seed: int = 0,
        balance: float = 100.0,
        *,
        url_ttl_seconds: int = 86_400,
        faults: Iterable[Fault | dict[str, Any]] = (),
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(f"refusing to bind {host!r}: the simulator is loopback-only unless allow_remote=True")
        self.host = host
        self._requested_port = port
        self.engine = Engine(
            api_keys=api_keys,
            job_seconds=job_seconds,
            seed=seed,
            balance=balance,
            url_ttl_seconds=url_ttl_seconds,
        )
        for fault in faults:
            spec = vars(fault) if isinstance(fault, Fault) else dict(fault)
            self.engine.add_fault(spec.pop("endpoint"), spec.pop("kind"), **spec)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = 0

    # --- lifecycle (thread) ---------------------------------------------------------------------

    def start(self) -> SimulatorServer:
        if self._server is not None:
            raise RuntimeError("simulator already running")
        sock = self._bind()
        server = self._server = _Server(_config(self.engine, self.host, self.port), self.engine, own_signals=False)
        self._thread = threading.Thread(target=self._run, args=(server, sock), name="wan-mcp-simulator")
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("simulator failed to start") from self._error
            time.sleep(0.005)
        logger.info("simulator listening on %s", self.base_url)
        return self

    def _run(self, server: _Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced by start(); a thread must not die silently
            self._error = exc
            logger.exception("simulator server crashed")
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving and join the thread; stalled requests are reset, not waited for."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.engine.close()
        server.should_exit = True
        if thread is not None:
            thread.join(SHUTDOWN_TIMEOUT_SECONDS)
            if thread.is_alive():
                server.force_exit = True
                thread.join(SHUTDOWN_TIMEOUT_SECONDS)
        self._server = self._thread = None
        self.engine.closing.clear()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- lifecycle (inside an existing asyncio loop) ----------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SimulatorServer]:
        """Serve on the caller's event loop (asyncio backend only) for the duration of the block."""
        if self._server is not None:
            raise RuntimeError("simulator already running")
        sock = self._bind()
        server = self._server = _Server(_config(self.engine, self.host, self.port), self.engine, own_signals=False)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(server.serve, [sock])
                with anyio.fail_after(STARTUP_TIMEOUT_SECONDS):
                    while not server.started:  # noqa: ASYNC110 (uvicorn offers no startup event)
                        await anyio.sleep(0.005)
                try:
                    yield self
                finally:
                    self.engine.closing.set()
                    server.should_exit = True
        finally:
            sock.close()
            self._server = None
            self.engine.closing.clear()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host.strip("[]") else socket.AF_INET
        # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it Nagle + delayed ACK add ~40 ms to every keep-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host.strip("[]"), self._requested_port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.engine.base_url = self.base_url
        return sock

    # --- conveniences (thin wrappers over the engine) ---------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host.strip("[]") else self.host
        return f"http://{host}:{self.port}"

    def requests(self, endpoint: str | None = None) -> list[RequestLogEntry]:
        return self.engine.requests(endpoint)

    def count(self, endpoint: str | None = None) -> int:
        return self.engine.count(endpoint)

    def tasks(self) -> list[dict[str, Any]]:
        return self.engine.tasks(self.base_url)

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        probability: float = 1.0,
    ) -> Fault:
        return self.engine.add_fault(
            endpoint, kind, times=times, retry_after=retry_after, delay=delay, probability=probability
        )

    def clear_faults(self) -> None:
        self.engine.clear_faults()

    def clear_requests(self) -> None:
        self.engine.clear_requests()

    def prerender(self, task_id: str) -> None:
        """Render a task's MP4 now (blocking), so a later download never waits on the render."""
        self.engine.render_video(self.engine.video_task(f"{task_id}.mp4"))

    def configure(self, **changes: Any) -> None:
        self.engine.configure(**changes)

    def clear_tasks(self) -> None:
        """Addition: forget all tasks, for module-scoped servers whose tests count ``tasks()``."""
        self.engine.clear_tasks()

    def reset(self) -> None:
        """Addition: config, faults, request log, tasks and uploads back to their initial state."""
        self.engine.reset()


# --- CLI ----------------------------------------------------------------------------------------------


def _fault_arg(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ENDPOINTS or parts[1] not in KINDS:
        raise argparse.ArgumentTypeError(
            f"expected ENDPOINT:KIND[:TIMES]; ENDPOINT in {','.join(ENDPOINTS)}, KIND in {','.join(KINDS)}"
        )
    try:
        times = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError("TIMES must be an integer (-1 = until cleared)") from None
    return {"endpoint": parts[0], "kind": parts[1], "times": times}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wan-mcp simulator",
        description="Offline ToAPIs video gateway (Wan 2.6) for demos and tests: real HTTP, real MP4 files.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless --allow-remote)")
    parser.add_argument("--port", type=int, default=8787, help="TCP port; 0 picks a free one")
    parser.add_argument("--job-seconds", type=float, default=4.0, help="wall time from create to completed")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted Bearer key (repeatable); default: any",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for probabilistic faults and unseeded task seeds (ids are always unique)",
    )
    parser.add_argument("--balance", type=float, default=100.0, help="account balance; 0 makes creates answer 402")
    parser.add_argument("--url-ttl-seconds", type=int, default=86_400, help="result URL lifetime")
    parser.add_argument(
        "--fault",
        action="append",
        type=_fault_arg,
        default=[],
        metavar="ENDPOINT:KIND[:TIMES]",
        help="schedule a fault",
    )
    parser.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``wan-mcp simulator``: serve until Ctrl-C (exit 0). Logs go to stderr only."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.allow_remote and not is_loopback_host(args.host):
        logger.error("refusing to listen on %s: pass --allow-remote to expose the simulator beyond loopback", args.host)
        return 2
    engine = Engine(
        api_keys=args.api_keys,
        job_seconds=args.job_seconds,
        seed=args.seed,
        balance=args.balance,
        url_ttl_seconds=args.url_ttl_seconds,
    )
    try:
        for fault in args.fault:
            engine.add_fault(fault["endpoint"], fault["kind"], times=fault["times"])
    except ValueError as exc:
        logger.error("bad --fault: %s", exc)
        return 2
    server = _Server(_config(engine, args.host, args.port), engine, own_signals=True)
    logger.info(
        "wan-mcp simulator: job_seconds=%s, keys=%s; control API under /_sim/ (loopback only)",
        args.job_seconds,
        "any" if args.api_keys is None else len(args.api_keys),
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the captured SIGINT after shutdown
        server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
