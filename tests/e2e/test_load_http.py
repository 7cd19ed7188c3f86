"""Load over streamable HTTP (issue 5): 200 concurrent waits on the same 10 tasks.

The real ``wan-mcp serve --transport http`` process on a free loopback port, the official
client, the simulator upstream. 200 ``get_task_status(wait_seconds=...)`` calls (20 per
task, over 4 client connections pools) all wait at once: every call must be answered
without error, the upstream must see about one status read per task per poll interval
(singleflight: one poller per task, however many waiters), and the server's memory must
stay bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import TOKENS, Dirs, HttpServer, server_env, start_http_server
from tests.helpers import ok as _ok
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TASKS = 10
CALLS = 200
JOB_SECONDS = 4.0
INTERVAL = 0.5


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@asynccontextmanager
async def _client(server: HttpServer) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    limits = httpx2.Limits(max_connections=CALLS, max_keepalive_connections=CALLS)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0), limits=limits) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        yield client


async def test_200_concurrent_waits_on_10_tasks_share_one_poller_each(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    fresh_sim.clear_tasks()
    fresh_sim.configure(job_seconds=JOB_SECONDS)
    env = server_env(
        fresh_sim,
        dirs,
        WAN_MCP_HTTP_TOKEN=TOKENS[0],
        WAN_MCP_TENANT_RATE_PER_MINUTE="0",  # 200 waiters of one principal: no per-tenant rate here
        WAN_MCP_POLL_FIRST_SECONDS="0.2",
        WAN_MCP_POLL_INTERVAL_SECONDS=str(INTERVAL),
        WAN_MCP_UPSTREAM_RATE_BUDGET="50",
        WAN_MCP_LOG_LEVEL="INFO",
    )
    server = start_http_server(env, "http", dirs.root / "logs")
    try:
        async with _client(server) as client:
            ids = [
                _ok(await client.call_tool("generate_video", {"prompt": f"crowd {i}", "resolution": "720p"}))["task_id"]
                for i in range(TASKS)
            ]
            _ok(await client.call_tool("list_tasks", {}))  # warm every code path before measuring
        fresh_sim.clear_requests()
        rss_before = _rss_kib(server.proc.pid)
        answers: list[dict[str, Any]] = []

        async def one_pool(calls: list[str]) -> None:
            async with _client(server) as client, anyio.create_task_group() as tg:
                for task_id in calls:
                    tg.start_soon(wait, client, task_id)

        async def wait(client: Client, task_id: str) -> None:
            args = {"task_id": task_id, "wait_seconds": 30, "download": False}
            answers.append(_ok(await client.call_tool("get_task_status", args)))

        calls = [ids[i % TASKS] for i in range(CALLS)]
        async with anyio.create_task_group() as tg:
            for pool in range(4):
                tg.start_soon(one_pool, calls[pool::4])
        rss_after = _rss_kib(server.proc.pid)
        assert server.proc.poll() is None
    finally:
        server.stop()

    assert len(answers) == CALLS and all(a["status"] == "completed" for a in answers)
    assert sorted(a["task_id"] for a in answers) == sorted(calls)
    reads = fresh_sim.requests("status")
    per_task = {task_id: sum(1 for r in reads if r.path.endswith("/" + task_id)) for task_id in ids}
    bound = JOB_SECONDS / INTERVAL + 2
    growth_mib = (rss_after - rss_before) / 1024
    print(
        f"\n{CALLS} waits on {TASKS} tasks: {len(reads)} upstream status GETs "
        f"(per task {min(per_task.values())}..{max(per_task.values())}, bound {bound:g}); "
        f"RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB"
    )
    # Singleflight: about one read per task per interval, not one per waiter per interval.
    assert all(1 <= n <= bound for n in per_task.values()), per_task
    assert len(reads) <= TASKS * bound
    assert growth_mib < 100, growth_mib
