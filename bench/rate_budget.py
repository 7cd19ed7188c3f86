"""Figure 7: 1,000 live tasks against the upstream rate budget (moved here from the test suite).

Through the real tools (in-memory transport) against an in-process simulator: 1,000 tasks are
created with ``generate_video`` (the jobs take far longer than the run), then 1,000 concurrent
``get_task_status(wait_seconds=...)`` calls each start a poller. The contract's cadence would
ask for 1,000 / 0.5 s = 2,000 status reads per second; the tracker's rate limiter must hold the
gateway to the budget by stretching every task's interval evenly (round robin).

This measures; it does not gate. The rules themselves (spacing, turn order) are tested on a
virtual clock in ``tests/integration/test_tracker_timing.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench.common import Row
from wan_mcp.config import load_settings
from wan_mcp.server.app import build_server, quiet_third_party_loggers
from wan_mcp.simulator.harness import SimulatorServer

KEY = "sk-bench-rate-0123456789"


def _ok(result: Any) -> dict[str, Any]:
    if result.is_error:
        raise RuntimeError(" ".join(getattr(c, "text", "") for c in result.content))
    out: dict[str, Any] = result.structured_content
    return out


async def measure(
    workdir: Path, *, tasks: int = 1000, budget: float = 50.0, window: float = 24.0
) -> tuple[list[Row], list[str]]:
    samples: list[tuple[float, int]] = []
    quiet_third_party_loggers()  # 1,000 INFO lines per second of HTTP requests would drown the table
    with SimulatorServer(job_seconds=3600, seed=5, api_keys={KEY}) as sim:
        settings = load_settings(
            base_url=sim.base_url,
            api_key=KEY,
            data_dir=workdir / "rate-data",
            output_dir=workdir / "rate-videos",
            allowed_dirs=[workdir],
            allow_private_urls=["127.0.0.1"],
            poll_first_seconds=0.1,
            poll_interval_seconds=0.5,
            upstream_rate_budget=budget,
            budget_daily_usd=0,  # 1,000 simulated jobs: measuring, not spending
            max_wait_seconds=window + 30,
        )
        async with Client(build_server(settings)) as client:
            ids: list[str] = []
            limiter = anyio.Semaphore(16)

            async def create(i: int) -> None:
                async with limiter:
                    args = {"prompt": f"rate task {i}", "resolution": "720p"}
                    ids.append(_ok(await client.call_tool("generate_video", args))["task_id"])

            async with anyio.create_task_group() as tg:
                for i in range(tasks):
                    tg.start_soon(create, i)

            async def wait(task_id: str) -> None:
                args = {"task_id": task_id, "wait_seconds": window, "download": False}
                _ok(await client.call_tool("get_task_status", args))

            async def sample(stop: anyio.Event) -> None:
                while not stop.is_set():
                    samples.append((anyio.current_time(), sim.count("status")))
                    await anyio.sleep(0.25)

            stop = anyio.Event()
            async with anyio.create_task_group() as outer:
                outer.start_soon(sample, stop)
                async with anyio.create_task_group() as tg:
                    for task_id in ids:
                        tg.start_soon(wait, task_id)
                stop.set()
            samples.append((anyio.current_time(), sim.count("status")))
            order = [entry.path.rsplit("/", 1)[1] for entry in sim.requests("status")]
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    average = (c1 - c0) / (t1 - t0)
    step = 8  # 2 s of 0.25 s samples
    peak = max(
        (samples[i + step][1] - samples[i][1]) / (samples[i + step][0] - samples[i][0])
        for i in range(len(samples) - step)
    )
    first_round = order[: min(tasks, len(order))]
    repeats = len(first_round) - len(set(first_round))
    polled: dict[str, int] = {}
    for task_id in order:
        polled[task_id] = polled.get(task_id, 0) + 1
    rows = [
        Row(
            "7",
            f"status GETs/s, {tasks} live tasks",
            average,
            "/s",
            budget,
            "budget",
            "<= 1.05x",
            average <= budget * 1.05,
        ),
        Row("7", "peak over any 2 s", peak, "/s", budget, "budget", "<= budget + 2", peak <= budget + 2),
        Row("7", "second polls before all first polls", float(repeats), "", None, "", "<= 10%", repeats <= tasks // 10),
    ]
    text = [
        f"Figure 7: {c1} status GETs in {t1 - t0:.1f} s; {len(polled)} of {tasks} tasks polled; "
        f"polls per task min {min(polled.values())}, max {max(polled.values())}."
    ]
    return rows, text
