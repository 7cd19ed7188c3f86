"""Figure 6: tool calls per second over streamable HTTP with 50 concurrent clients.

Ours (``wan-mcp serve --transport http``, stateless) answering ``get_task_status`` on a
finished task (a journal hit) vs the bare ``MCPServer`` (also stateless streamable HTTP,
uvicorn at log level warning, like ours) answering its trivial tool. Each client is the
official ``mcp.Client`` on its own connection, calling in a loop for a fixed time after a
warm-up. On a 2-CPU machine the load generator (this process) competes with the server
for the CPUs, so the server's own CPU time per call (from ``/proc``) is reported too:
it does not depend on how fast the client side is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.call_overhead import DONE_ID, seed_finished
from bench.common import BARE_SERVER, Row, base_env, cpu_seconds, free_port, ours_env, rss_mb, spawn
from wan_mcp.server.principals import token_principal

BENCH_TOKEN = "bench-token-0123456789abcdef0123456789abcdef"


async def hammer(url: str, tool: str, args: dict[str, Any], clients: int, seconds: float) -> tuple[int, int]:
    """Run ``clients`` concurrent sessions for ``seconds``; returns (calls answered, errors)."""
    done = [0, 0]
    measuring = [False]
    stop_at = [0.0]

    async def one() -> None:
        headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}  # ours requires it; the bare server ignores it
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            while True:
                r = await client.call_tool(tool, args)
                if time.monotonic() >= stop_at[0] and measuring[0]:
                    return
                if measuring[0]:
                    done[1 if r.is_error else 0] += 1

    async with anyio.create_task_group() as tg:
        stop_at[0] = time.monotonic() + 3600
        for _ in range(clients):
            tg.start_soon(one)
        await anyio.sleep(1.0)  # warm-up: connections, sessions, caches
        measuring[0] = True
        stop_at[0] = time.monotonic() + seconds
    return done[0], done[1]


async def run_one(
    name: str,
    args: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    tool: str,
    targs: dict[str, Any],
    clients: int,
    seconds: float,
) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}"
    with spawn(args, env, url, log, None) as proc:
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        calls, errors = await hammer(url + "/mcp", tool, targs, clients, seconds)
        wall = time.perf_counter() - t0 - 1.0
        cpu = cpu_seconds(proc.pid) - cpu0
        rss = rss_mb(proc.pid)
    if errors:
        raise RuntimeError(f"{name}: {errors} error results under load (see {log})")
    return {"rps": calls / seconds, "cpu_ms_per_call": cpu * 1000 / max(1, calls), "rss": rss, "wall": wall}


async def measure(sim_url: str, workdir: Path, *, seconds: float, clients: int) -> tuple[list[Row], list[str]]:
    data = workdir / "http-data"
    await seed_finished(data, sim_url, tenant=token_principal(BENCH_TOKEN))  # the HTTP client's own task
    ours_port, bare_port = free_port(), free_port()
    ours_args = [sys.executable, "-m", "wan_mcp", "serve", "--transport", "http", "--port", str(ours_port)]
    bare_args = [sys.executable, str(BARE_SERVER), "http", str(bare_port)]
    bare = await run_one(
        "bare", bare_args, base_env(), bare_port, workdir / "bare-http.log", "ping", {}, clients, seconds
    )
    ours = await run_one(
        "ours",
        ours_args,
        ours_env(sim_url, data, WAN_MCP_HTTP_TOKEN=BENCH_TOKEN),
        ours_port,
        workdir / "ours-http.log",
        "get_task_status",
        {"task_id": DONE_ID, "download": False},
        clients,
        seconds,
    )
    ratio = ours["rps"] / bare["rps"]
    rows = [
        Row(
            "6",
            f"HTTP throughput, {clients} concurrent clients, {seconds:g} s",
            ours["rps"],
            "calls/s",
            bare["rps"],
            "bare MCPServer",
            ">= 0.8x",
            ratio >= 0.8,
        ),
        Row(
            "6",
            "server CPU per call under that load",
            ours["cpu_ms_per_call"],
            "ms",
            bare["cpu_ms_per_call"],
            "bare MCPServer",
            "(report)",
        ),
    ]
    text = (
        f"HTTP load detail: ours {ours['rps']:.0f} calls/s, {ours['cpu_ms_per_call']:.2f} ms server CPU/call, "
        f"RSS {ours['rss']:.0f} MiB; bare {bare['rps']:.0f} calls/s, {bare['cpu_ms_per_call']:.2f} ms CPU/call, "
        f"RSS {bare['rss']:.0f} MiB; no error results."
    )
    return rows, [text]
