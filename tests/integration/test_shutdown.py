"""Graceful stop, in process: Lifecycle.begin_shutdown() ends waits early with a normal answer.

The real signal paths (uvicorn SIGTERM/SIGINT, stdio SIGTERM) are driven end to end in
tests/e2e/test_http.py and tests/e2e/test_security.py; this checks the mechanism itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from wan_mcp.config import load_settings
from wan_mcp.server.app import Lifecycle, build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-shutdown-0123456789abcdef"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=3.0, api_keys={KEY}) as server:
        yield server


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


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

        async with anyio.create_task_group() as tg:
            for _ in range(2):  # two waiters on one task: both are answered
                tg.start_soon(waiter)
            await anyio.sleep(0.5)
            assert lifecycle.in_flight == 2
            started = time.monotonic()
            lifecycle.begin_shutdown()
        assert time.monotonic() - started < 0.5
        assert await lifecycle.drain(1.0, settle=0)
        for result in results:
            assert not result.is_error, _text(result)
            assert result.structured_content["status"] in ("queued", "in_progress")
            assert f"get_task_status(task_id='{task_id}'" in _text(result)

        started = time.monotonic()
        later = await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 30})
        assert time.monotonic() - started < 0.5 and not later.is_error
    assert lifecycle.closed
    assert sim.count(endpoint="create") == 1


async def test_drain_gives_up_after_its_timeout() -> None:
    lifecycle = Lifecycle()
    lifecycle.in_flight = 1  # a request that never finishes
    started = time.monotonic()
    assert not await lifecycle.drain(0.2)
    assert time.monotonic() - started < 0.5
