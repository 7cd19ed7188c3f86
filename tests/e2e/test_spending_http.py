"""Budgets and the duplicate guard over streamable HTTP (issue 10), with two server processes
sharing one data dir (two replicas, or two host windows): the guarantees are the journal's,
so they hold across sessions AND processes, not only inside one event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import TOKENS, Dirs, HttpServer, server_env, start_http_server
from tests.helpers import error, ok
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio

CHEAP = {"prompt": "a lantern in the fog", "resolution": "720p", "duration": 5}  # USD 0.50 estimated


@pytest.fixture
def replicas(fresh_sim: SimulatorServer, dirs: Dirs, e2e_logs: Path) -> Iterator[tuple[HttpServer, HttpServer]]:
    fresh_sim.clear_tasks()
    fresh_sim.configure(job_seconds=600)  # nothing finishes: the test is about submissions only
    env = server_env(fresh_sim, dirs, WAN_MCP_HTTP_TOKEN=TOKENS[0], WAN_MCP_BUDGET_DAILY_USD="3")
    a = start_http_server(env, "http", e2e_logs)
    try:
        b = start_http_server(env, "http", e2e_logs)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()
        fresh_sim.configure(job_seconds=1.0)


@asynccontextmanager
async def _session(server: HttpServer) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        yield client


async def test_twenty_concurrent_calls_never_reserve_past_the_budget(
    fresh_sim: SimulatorServer, replicas: tuple[HttpServer, HttpServer]
) -> None:
    made: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []

    async def session(server: HttpServer, seeds: range) -> None:
        async with _session(server) as client:

            async def call(seed: int) -> None:
                result = await client.call_tool("generate_video", {**CHEAP, "seed": seed})
                (refused.append(error(result)) if result.is_error else made.append(ok(result)))

            async with anyio.create_task_group() as tg:
                for seed in seeds:
                    tg.start_soon(call, seed)

    async with anyio.create_task_group() as tg:
        for i in range(4):  # 4 sessions x 5 calls, two sessions on each process
            tg.start_soon(session, replicas[i % 2], range(i * 5, i * 5 + 5))
    # USD 3.00 / USD 0.50 = exactly 6 tasks, whatever the interleaving; the rest refused, unsent.
    assert fresh_sim.count(endpoint="create") == 6 == len(made)
    assert len(refused) == 14 and {r["error"]["code"] for r in refused} == {"budget_exceeded"}
    assert all(r["spent_usd"] <= 3.0 and r["limit_usd"] == 3.0 for r in refused)


async def test_five_identical_calls_from_five_sessions_make_one_task(
    fresh_sim: SimulatorServer, replicas: tuple[HttpServer, HttpServer]
) -> None:
    answers: list[dict[str, Any]] = []

    async def one(server: HttpServer) -> None:
        async with _session(server) as client:
            answers.append(ok(await client.call_tool("generate_video", CHEAP)))

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(one, replicas[i % 2])
    assert fresh_sim.count(endpoint="create") == 1
    (created,) = [t["id"] for t in fresh_sim.tasks()]
    # Each answer is that one task: by the gateway's id, or (if the other process's POST was still
    # in flight) by our business id for the same journal row, which get_task_status resolves.
    async with _session(replicas[0]) as client:
        for answer in answers:
            status = ok(await client.call_tool("get_task_status", {"task_id": answer["task_id"], "download": False}))
            assert status["task_id"] == created
    assert sum(not a.get("deduplicated") for a in answers) == 1
