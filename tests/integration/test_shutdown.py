"""Graceful stop, in process: Lifecycle.begin_shutdown() ends waits early with a normal answer.

The real signal paths (uvicorn SIGTERM/SIGINT, stdio SIGTERM) are driven end to end in
tests/e2e/test_http.py and tests/e2e/test_security.py; this checks the mechanism itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import text as _text
from wan_mcp.config import load_settings
from wan_mcp.server.app import build_server
from wan_mcp.server.lifecycle import Lifecycle
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-shutdown-0123456789abcdef"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=120.0, api_keys={KEY}) as server:
        yield server


async def test_begin_shutdown_answers_waits_in_flight_and_later_waits_at_once(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    settings = load_settings(
        base_url=sim.base_url,
        api_key=KEY,
        data_dir=tmp_path / "data",
        output_dir=tmp_path / "videos",
        allowed_dirs=[tmp_path],
        allow_private_urls=["127.0.0.1"],
        poll_first_seconds=0.1,
        poll_interval_seconds=0.2,
    )
    lifecycle = Lifecycle()
    results: list[Any] = []
    async with Client(build_server(settings, lifecycle=lifecycle)) as client:
        task = await client.call_tool("generate_video", {"prompt": "a slow tide", "resolution": "720p"})
        task_id = task.structured_content["task_id"]
        assert lifecycle.in_flight == 0

        async def waiter() -> None:
            results.append(await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 30}))

        # Outcomes, not durations: the job outlasts the 30 s waits, so an answer that is still
        # "queued"/"in_progress" can only come from the shutdown (fail_after is a hang guard).
        with anyio.fail_after(25):
            async with anyio.create_task_group() as tg:
                for _ in range(2):  # two waiters on one task: both are answered
                    tg.start_soon(waiter)
                while lifecycle.in_flight < 2:
                    await anyio.sleep(0.01)
                lifecycle.begin_shutdown()
            assert await lifecycle.drain(5.0, settle=0)
        for result in results:
            assert not result.is_error, _text(result)
            assert result.structured_content["status"] in ("queued", "in_progress")
            assert f"get_task_status(task_id='{task_id}'" in _text(result)

        with anyio.fail_after(25):
            later = await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 30})
        assert not later.is_error and later.structured_content["status"] in ("queued", "in_progress")
    assert lifecycle.closed
    assert sim.count(endpoint="create") == 1


async def test_drain_gives_up_after_its_timeout() -> None:
    lifecycle = Lifecycle()
    lifecycle.in_flight = 1  # a request that never finishes
    assert not await lifecycle.drain(0.2)


async def test_drain_and_wait_closed_wake_on_the_change() -> None:
    lifecycle = Lifecycle()
    lifecycle.in_flight = 1
    outcomes: list[bool] = []

    async def drain() -> None:
        outcomes.append(await lifecycle.drain(60, settle=0))

    async def closed() -> None:
        outcomes.append(await lifecycle.wait_closed(60))

    with anyio.fail_after(30):  # a hang guard only: the events end both waits
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            tg.start_soon(closed)
            await anyio.wait_all_tasks_blocked()
            assert outcomes == []
            lifecycle.in_flight = 0
            lifecycle._changed()  # what the middleware does when a request ends
            lifecycle.mark_closed(True)
    assert outcomes == [True, True]
