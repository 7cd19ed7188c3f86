"""Load (issue 5): 1,000 live tasks tracked at once stay under the upstream rate budget, fairly.

Through the real tools (in-memory transport) against the simulator: 1,000 tasks are created
with ``generate_video`` (the jobs take far longer than the test), then 1,000 concurrent
``get_task_status(wait_seconds=...)`` calls each start a poller. The contract's cadence would
ask for 1,000 / 0.5 s = 2,000 status reads per second; the tracker's rate limiter must hold
the gateway to ``upstream_rate_budget`` by stretching every task's interval evenly, so
every task is still polled (fairness) and none starves.

The rate is measured from the simulator's request log, sampled every 0.25 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from wan_mcp.config import load_settings
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TASKS = 1000
BUDGET = 50.0  # status reads per second
WINDOW = 24.0  # seconds of waiting: about 1,200 polls at the budget, so every task gets at least one
SAMPLE = 0.25


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=3600, seed=5) as server:
        yield server


def _ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, " ".join(getattr(c, "text", "") for c in result.content)
    out: dict[str, Any] = result.structured_content
    return out


async def test_a_thousand_live_tasks_stay_under_the_rate_budget_and_all_get_polled(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    settings = load_settings(
        base_url=sim.base_url,
        api_key="sk-load-0123456789",
        data_dir=tmp_path / "data",
        output_dir=tmp_path / "videos",
        allowed_dirs=[tmp_path],
        allow_private_urls=["127.0.0.1"],
        poll_first_seconds=0.1,
        poll_interval_seconds=0.5,
        upstream_rate_budget=BUDGET,
        max_wait_seconds=60,
    )
    async with Client(build_server(settings)) as client:
        ids: list[str] = []
        limiter = anyio.Semaphore(16)

        async def create(i: int) -> None:
            async with limiter:
                args = {"prompt": f"load task {i}", "resolution": "720p"}
                ids.append(_ok(await client.call_tool("generate_video", args))["task_id"])

        async with anyio.create_task_group() as tg:
            for i in range(TASKS):
                tg.start_soon(create, i)
        assert len(set(ids)) == TASKS and sim.count("create") == TASKS and sim.count("status") == 0

        samples: list[tuple[float, int]] = []
        answers: list[dict[str, Any]] = []

        async def wait(task_id: str) -> None:
            args = {"task_id": task_id, "wait_seconds": WINDOW, "download": False}
            answers.append(_ok(await client.call_tool("get_task_status", args)))

        async def sample(stop: anyio.Event) -> None:
            while not stop.is_set():
                samples.append((anyio.current_time(), sim.count("status")))
                await anyio.sleep(SAMPLE)

        stop = anyio.Event()
        async with anyio.create_task_group() as outer:
            outer.start_soon(sample, stop)
            async with anyio.create_task_group() as tg:
                for task_id in ids:
                    tg.start_soon(wait, task_id)
            stop.set()
        samples.append((anyio.current_time(), sim.count("status")))

    # Every call answered, without error, with its own task still running.
    assert len(answers) == TASKS and {a["task_id"] for a in answers} == set(ids)
    assert all(a["status"] in ("queued", "in_progress") for a in answers)

    # Under budget: over the whole window, and over every 2 s stretch (a burst would show here).
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    average = (c1 - c0) / (t1 - t0)
    step = int(2.0 / SAMPLE)
    peak = max(
        (samples[i + step][1] - samples[i][1]) / (samples[i + step][0] - samples[i][0])
        for i in range(len(samples) - step)
    )
    print(f"\n{c1} status GETs in {t1 - t0:.1f}s: average {average:.1f}/s, peak 2s window {peak:.1f}/s, "
          f"budget {BUDGET:g}/s")
    assert average <= BUDGET * 1.05, average
    assert peak <= BUDGET + 2, peak  # at most one request over the budget per 2 s, plus log jitter

    # Fairness: round robin. Almost nobody's second poll comes before everybody's first (so on
    # an unloaded machine every one of the 1,000 tasks is polled within the window), and no
    # task is polled far more often than another. Stated on the order of the requests, not on
    # wall time, so a CI machine busy with other tests slows the round down without breaking
    # it. "Almost": on a starved machine the 1,000 wait calls take longer than one poll
    # interval to all start, so the first pollers can come round again before the last ones
    # join the queue (seen: 8 to 21 of 1,000 with the whole suite running on 4 workers on 2
    # CPUs); a starving (LIFO, or unlimited-then-throttled) scheduler repeats hundreds.
    order = [entry.path.rsplit("/", 1)[1] for entry in sim.requests("status")]
    first_round = order[: min(TASKS, len(order))]
    repeats = len(first_round) - len(set(first_round))
    assert repeats <= len(first_round) // 10, f"{repeats} tasks were polled twice before others were polled once"
    assert set(first_round) <= set(ids)
    polled: dict[str, int] = {}
    for task_id in order:
        polled[task_id] = polled.get(task_id, 0) + 1
    print(f"{len(polled)} of {TASKS} tasks polled; polls per task: min {min(polled.values())}, "
          f"max {max(polled.values())}")
    assert max(polled.values()) - min(polled.values()) <= 1 if len(polled) == TASKS else max(polled.values()) == 1
