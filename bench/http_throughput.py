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
from collections.abc import Callable
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


async def hammer(
    url: str,
    tool: str,
    args: dict[str, Any],
    clients: int,
    seconds: float,
    window: Callable[[bool], None] | None = None,
) -> tuple[int, int]:
    """Run ``clients`` concurrent sessions for ``seconds``; returns (calls answered, errors).
    ``window`` is told when the measured window opens (True) and closes (False), after the warm-up."""
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
        await anyio.sleep(1.0)  # warm-up: connections, sessions, tools/list, caches
        if window is not None:
            window(True)
        measuring[0] = True
        stop_at[0] = time.monotonic() + seconds
        await anyio.sleep(seconds)
        if window is not None:
            window(False)
    return done[0], done[1]


async def interleaved(
    servers: dict[str, tuple[str, int, str, dict[str, Any]]], *, clients: int, seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """Blocks of ``seconds / rounds`` against each server in turn (A B A B ...), from the same client
    process: drift in the machine (or in this load generator) hits both alike. Per server: calls/s
    over its measured blocks, and its own CPU and this load generator's per call over the same
    windows (from /proc; the warm-up, with its sessions and tools/list, is not in them)."""
    block = seconds / rounds
    totals = {name: [0, 0.0, 0.0, 0] for name in servers}  # calls, server CPU s, client CPU s, errors
    for _ in range(rounds):
        for name, (url, pid, tool, args) in servers.items():
            marks: list[tuple[float, float]] = []

            def window(_opening: bool, pid: int = pid, marks: list[tuple[float, float]] = marks) -> None:
                marks.append((cpu_seconds(pid), time.process_time()))

            calls, errors = await hammer(url, tool, args, clients, block, window)
            (cpu0, mine0), (cpu1, mine1) = marks
            totals[name][0] += calls
            totals[name][1] += cpu1 - cpu0
            totals[name][2] += mine1 - mine0
            totals[name][3] += errors
    out: dict[str, dict[str, float]] = {}
    for name, (calls, cpu, mine, errors) in totals.items():
        if errors:
            raise RuntimeError(f"{name}: {errors} error results under load")
        out[name] = {
            "rps": calls / seconds,
            "cpu_ms_per_call": cpu * 1000 / max(1, calls),
            "client_ms_per_call": mine * 1000 / max(1, calls),
        }
    return out


async def measure(sim_url: str, workdir: Path, *, seconds: float, clients: int) -> tuple[list[Row], list[str]]:
    data = workdir / "http-data"
    await seed_finished(data, sim_url, tenant=token_principal(BENCH_TOKEN))  # the HTTP client's own task
    ours_port, bare_port, auth_port = free_port(), free_port(), free_port()
    ours_args = [sys.executable, "-m", "wan_mcp", "serve", "--transport", "http", "--port", str(ours_port)]
    bare_args = [sys.executable, str(BARE_SERVER), "http", str(bare_port)]
    auth_args = [sys.executable, str(BARE_SERVER), "http-auth", str(auth_port)]
    ours_url, bare_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{bare_port}"
    auth_url = f"http://127.0.0.1:{auth_port}"
    with (
        spawn(bare_args, base_env(), bare_url, workdir / "bare-http.log", None) as bare_proc,
        spawn(auth_args, {**base_env(), "BARE_TOKEN": BENCH_TOKEN}, auth_url, workdir / "auth-http.log",
              None) as auth_proc,
        spawn(ours_args, ours_env(sim_url, data, WAN_MCP_HTTP_TOKEN=BENCH_TOKEN), ours_url,
              workdir / "ours-http.log", None) as ours_proc,
    ):  # fmt: skip
        got = await interleaved(
            {
                "bare": (bare_url + "/mcp", bare_proc.pid, "ping", {}),
                "bare+auth": (auth_url + "/mcp", auth_proc.pid, "ping", {}),
                "ours": (ours_url + "/mcp", ours_proc.pid, "get_task_status", {"task_id": DONE_ID, "download": False}),
            },
            clients=clients,
            seconds=seconds,
            rounds=4,
        )
        bare, authed, ours = got["bare"], got["bare+auth"], got["ours"]
        bare["rss"], ours["rss"] = rss_mb(bare_proc.pid), rss_mb(ours_proc.pid)
    ratio = ours["rps"] / bare["rps"]
    rows = [
        Row(
            "6",
            f"HTTP throughput, {clients} concurrent clients, {seconds:g} s each, interleaved A B A B",
            ours["rps"],
            "calls/s",
            bare["rps"],
            "bare MCPServer",
            ">= 0.9x",
            ratio >= 0.9,
        ),
        Row(
            "6",
            "  the same against the bare server behind the SDK's bearer auth (ours always authenticates)",
            ours["rps"],
            "calls/s",
            authed["rps"],
            "bare MCPServer + bearer auth",
            "(report)",
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
        f"RSS {bare['rss']:.0f} MiB; bare behind bearer auth {authed['rps']:.0f} calls/s, "
        f"{authed['cpu_ms_per_call']:.2f} ms CPU/call; 4 blocks each, alternating; no error results. CPU is "
        f"counted over the measured windows only (no warm-up). The load generator (same machine) spent "
        f"{ours['client_ms_per_call']:.2f} ms CPU per call on ours, {authed['client_ms_per_call']:.2f} on bare "
        f"behind auth, {bare['client_ms_per_call']:.2f} on bare."
    )
    return rows, [text]
