"""Shared plumbing: the result table, statistics, process helpers, the simulator subprocess.

Everything talks to loopback only. Servers are spawned the way a host spawns them
(``python -m wan_mcp serve`` over stdio, or ``--transport http``) and driven by the
official ``mcp`` client, so a figure includes exactly what an agent would pay.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

HERE = Path(__file__).resolve().parent
BARE_SERVER = HERE / "bare_server.py"
KEY = "sk-bench-local-0123456789abcdef"


# --- the table -------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: our absolute value, the baseline measured in the same run, and the target."""

    figure: str
    metric: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    #: a ratio other than ours/baseline (e.g. 'added ms' figures); None = ours/baseline
    ratio: float | None = None

    def ratio_value(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("", "x"):
        text = f"{value:.2f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{text} {unit}".strip() if unit not in ("", "x") else text


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table (also readable as plain text): one row per measured figure."""
    head = ["#", "metric", "ours", "baseline (same run)", "ratio", "target", "met"]
    lines = [head]
    for r in rows:
        base = "-" if r.baseline is None else f"{fmt(r.baseline, r.unit)} {r.baseline_name}".strip()
        ratio = r.ratio_value()
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        metric = r.metric + (f" ({r.note})" if r.note else "")
        lines.append(
            [r.figure, metric, fmt(r.ours, r.unit), base, "-" if ratio is None else f"{ratio:.2f}x", r.target, met]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# --- statistics --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("empty sample")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --- processes -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def newest_child(marker: str) -> int:
    """The pid of our most recent child process whose command line contains ``marker``."""
    me = os.getpid()
    found: list[tuple[float, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[1]) == me and marker in cmdline:
            found.append((float(stat[19]), int(entry.name)))
    if not found:
        raise RuntimeError(f"no child process matching {marker!r}")
    return max(found)[1]


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def ours_env(sim_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update(
        {
            "WAN_MCP_BASE_URL": sim_url,
            "WAN_MCP_API_KEY": KEY,
            "WAN_MCP_DATA_DIR": str(data_dir),
            "WAN_MCP_OUTPUT_DIR": str(data_dir / "videos"),
            "WAN_MCP_ALLOWED_DIRS": str(data_dir),
            "WAN_MCP_ALLOW_PRIVATE_URLS": "127.0.0.1",
            "WAN_MCP_LOG_LEVEL": "WARNING",
            # Measuring, not spending: the simulated jobs cost nothing real, so no budget applies.
            "WAN_MCP_BUDGET_DAILY_USD": "0",
            # One client driving thousands of calls: no per-tenant call rate.
            "WAN_MCP_TENANT_RATE_PER_MINUTE": "0",
        }
    )
    env.update(extra)
    return env


def ours_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve"], env=env)


def bare_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(BARE_SERVER)], env=base_env())


@asynccontextmanager
async def stdio_session(params: StdioServerParameters, errlog: IO[str]) -> AsyncIterator[Client]:
    """The official client over stdio, the server's stderr going to ``errlog`` (not the table)."""
    async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=120) as client:
        yield client


async def timed_calls(client: Client, tool: str, args: dict[str, Any], n: int, warmup: int = 20) -> list[float]:
    """Latencies (ms) of ``n`` sequential calls after ``warmup`` untimed ones; any error result aborts."""
    for _ in range(warmup):
        result = await client.call_tool(tool, args)
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content}")
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = await client.call_tool(tool, args)
        out.append((time.perf_counter() - t0) * 1000)
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content}")
    return out


@dataclass
class Proc:
    """A server we spawned ourselves (HTTP transports, the simulator); stopped by its own pid."""

    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def spawn(args: list[str], env: dict[str, str], url: str, log: Path, ready_path: str | None) -> Iterator[Proc]:
    """Start a loopback HTTP server; wait (bounded) until ``url + ready_path`` answers, or the port accepts."""
    with log.open("wb") as sink:
        popen = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc = Proc(popen, url, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"{args} exited with {popen.returncode}: {log.read_text()[-2000:]}")
            try:
                if ready_path is None:  # just accepting connections
                    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
                    socket.create_connection((host, int(port)), timeout=1.0).close()
                else:
                    httpx2.get(url + ready_path, timeout=1.0)
                break
            except (httpx2.HTTPError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.stop()


@dataclass
class Simulator:
    """The gateway simulator as a separate process, driven through its loopback control API."""

    proc: Proc
    http: httpx2.Client = field(default_factory=lambda: httpx2.Client(timeout=30))

    @property
    def base_url(self) -> str:
        return self.proc.url

    def configure(self, **kw: Any) -> None:
        self.http.post(f"{self.base_url}/_sim/config", json=kw).raise_for_status()

    def clear_requests(self) -> None:
        self.http.delete(f"{self.base_url}/_sim/requests").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = self.http.get(f"{self.base_url}/_sim/requests").json()
        return got

    def finish_all(self) -> int:
        """End every running job now (the simulator's control API)."""
        finished: int = self.http.post(f"{self.base_url}/_sim/tasks/finish").json()["finished"]
        return finished

    def count(self, endpoint: str) -> int:
        return sum(1 for r in self.requests() if r.get("endpoint") == endpoint)


@contextlib.contextmanager
def simulator(workdir: Path, job_seconds: float = 3600.0) -> Iterator[Simulator]:
    port = free_port()
    args = [sys.executable, "-m", "wan_mcp", "simulator", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--job-seconds", str(job_seconds), "--log-level", "warning"]
    with spawn(args, base_env(), f"http://127.0.0.1:{port}", workdir / "simulator.log", "/healthz") as proc:
        sim = Simulator(proc)
        try:
            yield sim
        finally:
            sim.http.close()
