"""Load, as outcomes: 100 live tasks waited on at once are all answered, each with its own task.

The rate and fairness figures at 1,000 tasks are measured by ``python -m bench --only 7``
(a measurement, not a gate); the rules behind them (spacing, turn order) are tested on a
virtual clock in ``test_tracker_timing.py``. Nothing here depends on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import ok, simulator_settings
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "sk-load-0123456789"
TASKS = 100


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=3600, seed=5, api_keys={KEY}) as server:
        yield server


async def test_a_hundred_live_tasks_waited_on_at_once_are_all_answered(sim: SimulatorServer, tmp_path: Path) -> None:
    settings = simulator_settings(
        sim, tmp_path, key=KEY, poll_interval_seconds=0.5, upstream_rate_budget=50.0, budget_daily_usd=0
    )
    async with Client(build_server(settings)) as client:
        ids: list[str] = []
        limiter = anyio.Semaphore(16)

        async def create(i: int) -> None:
            async with limiter:
                ids.append(
                    ok(await client.call_tool("generate_video", {"prompt": f"load {i}", "resolution": "720p"}))[
                        "task_id"
                    ]
                )

        async with anyio.create_task_group() as tg:
            for i in range(TASKS):
                tg.start_soon(create, i)
        assert len(set(ids)) == TASKS and sim.count("create") == TASKS

        answers: list[dict[str, Any]] = []

        async def wait(task_id: str) -> None:
            args = {"task_id": task_id, "wait_seconds": 2, "download": False}
            answers.append(ok(await client.call_tool("get_task_status", args)))

        async with anyio.create_task_group() as tg:
            for task_id in ids:
                tg.start_soon(wait, task_id)
        listed = ok(await client.call_tool("list_tasks", {"limit": 100}))["tasks"]

    # Every call answered, without error, with its own task, still running; the journal has them all.
    assert sorted(a["task_id"] for a in answers) == sorted(ids)
    assert all(a["status"] in ("queued", "in_progress") for a in answers)
    assert {t["task_id"] for t in listed} == set(ids)
    assert sim.count("create") == TASKS  # waiting never re-submits
