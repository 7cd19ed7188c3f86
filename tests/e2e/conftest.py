"""The real server process, spawned over stdio, driven by the official MCP client.

Upstream is the simulator on loopback; nothing here talks to any other address.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClientExtension
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from wan_mcp.simulator.harness import SimulatorServer

KEY = "sk-e2e-SECRET-0123456789abcdef"


@dataclass(frozen=True)
class Dirs:
    root: Path
    inputs: Path
    data: Path
    videos: Path


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as server:
        yield server


@pytest.fixture
def fresh_sim(sim: SimulatorServer) -> SimulatorServer:
    sim.clear_faults()
    sim.clear_requests()
    sim.configure(status_style="queued", complete_without_url=False, fail_prompts_containing=None, job_seconds=1.0)
    return sim


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    d = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    d.inputs.mkdir()
    return d


def server_env(sim: SimulatorServer, dirs: Dirs, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(
        {
            "WAN_MCP_BASE_URL": sim.base_url,
            "WAN_MCP_API_KEY": KEY,
            "WAN_MCP_DATA_DIR": str(dirs.data),
            "WAN_MCP_OUTPUT_DIR": str(dirs.videos),
            "WAN_MCP_ALLOWED_DIRS": str(dirs.inputs),
            "WAN_MCP_ALLOW_PRIVATE_URLS": "127.0.0.1",
            "WAN_MCP_POLL_FIRST_SECONDS": "0.2",
            "WAN_MCP_POLL_INTERVAL_SECONDS": "0.3",
            "WAN_MCP_LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


def stdio_params(env: dict[str, str], pidfile: Path | None = None) -> StdioServerParameters:
    if pidfile is None:
        return StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve"], env=env)
    # Through a shell that records its pid and then becomes the server, so a test can kill -9 it.
    script = f'echo $$ > "{pidfile}"; exec "{sys.executable}" -m wan_mcp serve'
    return StdioServerParameters(command="/bin/sh", args=["-c", script], env=env)


# --- HTTP transports and secret-leak checks (issue 4) ---------------------------------------

#: Recognisable secrets: the leak tests assert these strings appear nowhere we write.
LEAK_KEY = f"sk-LEAKCHECK-{secrets.token_hex(12)}"
LEAK_WRONG_KEY = f"sk-LEAKCHECK-wrong-{secrets.token_hex(12)}"
TOKENS = (f"tok-LEAKCHECK-{secrets.token_hex(16)}", f"tok2-LEAKCHECK-{secrets.token_hex(16)}")
SECRETS = (LEAK_KEY, LEAK_WRONG_KEY, *TOKENS)
TAP = Path(__file__).with_name("stdio_tap.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class HttpServer:
    """A real `wan-mcp serve --transport http|sse` process, its logs on disk."""

    proc: subprocess.Popen[bytes]
    transport: str
    port: int
    data: Path
    stdout: Path
    stderr: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + ("/mcp" if self.transport == "http" else "/sse")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def start_http_server(
    env: dict[str, str],
    transport: str,
    logs: Path,
    *,
    host: str = "127.0.0.1",
    timeout: float = 20,
    port: int | None = None,
) -> HttpServer:
    port = port or free_port()
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{transport}-{port}.stdout", logs / f"{transport}-{port}.stderr"
    with out.open("wb") as out_f, err.open("wb") as err_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wan_mcp", "serve", "--transport", transport, "--host", host, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
        )
    server = HttpServer(proc, transport, port, Path(env["WAN_MCP_DATA_DIR"]), out, err)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.logs()}")
        try:
            if httpx2.get(f"{server.base}/healthz", timeout=0.5).status_code == 200:
                return server
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not answer /healthz within {timeout} s:\n{server.logs()}")


@pytest.fixture(scope="session")
def e2e_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every server process of this session writes stdout/stderr (scanned by the leak tests)."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def leak_sim() -> Iterator[SimulatorServer]:
    """A simulator that accepts only LEAK_KEY (so LEAK_WRONG_KEY gets a real 401)."""
    with SimulatorServer(job_seconds=1.0, api_keys={LEAK_KEY}) as server:
        yield server


@pytest.fixture
def leak_fresh(leak_sim: SimulatorServer) -> Iterator[SimulatorServer]:
    leak_sim.clear_faults()
    leak_sim.clear_requests()
    leak_sim.configure(status_style="queued", fail_prompts_containing=None, job_seconds=1.0)
    yield leak_sim
    leak_sim.configure(job_seconds=1.0)


def http_env(sim: SimulatorServer, root: Path, **extra: str) -> dict[str, str]:
    """Env for an HTTP server under ``root``: LEAK_KEY upstream, both TOKENS, DEBUG logs."""
    dirs = Dirs(root, root / "inputs", root / "data", root / "videos")
    dirs.inputs.mkdir(parents=True, exist_ok=True)
    # The flows shared with stdio name local files: these loopback servers allow it explicitly
    # (the default refusal is tested in test_http.py).
    env = server_env(
        sim, dirs, WAN_MCP_API_KEY=LEAK_KEY, WAN_MCP_HTTP_TOKEN=",".join(TOKENS), WAN_MCP_ALLOW_REMOTE_PATHS="1"
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def http_server(
    leak_sim: SimulatorServer, e2e_logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpServer]:
    """Streamable HTTP on a free loopback port, token required; shared by the session."""
    server = start_http_server(http_env(leak_sim, tmp_path_factory.mktemp("http")), "http", e2e_logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sse_server(
    leak_sim: SimulatorServer, e2e_logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpServer]:
    """The SSE transport on a free loopback port, token required; shared by the session."""
    server = start_http_server(http_env(leak_sim, tmp_path_factory.mktemp("sse")), "sse", e2e_logs)
    yield server
    server.stop()


@asynccontextmanager
async def connect(
    server: HttpServer,
    token: str | None = TOKENS[0],
    *,
    headers: dict[str, str] | None = None,
    extensions: Sequence[ClientExtension] = (),
) -> AsyncIterator[Client]:
    """The official client over the server's transport, with a bearer token (and any other headers)."""
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    if server.transport == "http":
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
            Client(streamable_http_client(server.url, http_client=http), extensions=extensions) as client,
        ):
            yield client
    else:
        async with Client(sse_client(server.url, headers=headers, timeout=30.0), extensions=extensions) as client:
            yield client


@dataclass(frozen=True)
class Tap:
    """Files a tapped stdio server writes: its stdout copy, stderr, pid and exit status."""

    out: Path
    err: Path
    pid: Path
    rc: Path

    def pid_value(self) -> int:
        return int(self.pid.read_text())

    def returncode(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while not self.rc.exists() or not self.rc.read_text():
            if time.monotonic() > deadline:
                raise AssertionError("the stdio server did not exit")
            time.sleep(0.05)
        return int(self.rc.read_text())


def tapped_stdio_params(env: dict[str, str], folder: Path) -> tuple[StdioServerParameters, Tap]:
    """stdio server params through stdio_tap.py: stdout recorded, stderr to a file, pid and rc known."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("stdio-*.stdout")))
    tap = Tap(*(folder / f"stdio-{n}.{ext}" for ext in ("stdout", "stderr", "pid", "rc")))
    args = [str(TAP), str(tap.out), str(tap.err), str(tap.pid), str(tap.rc), "--"]
    args += [sys.executable, "-m", "wan_mcp", "serve"]
    return StdioServerParameters(command=sys.executable, args=args, env=env), tap
