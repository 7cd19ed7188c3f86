"""Figure 4: upstream requests per completed task vs the minimum the polling advice implies.

The contract advises a first status poll ~5 s after submitting, then one every ~10 s. Scaled
down (job 3 s, first poll 0.5 s, interval 1 s) a job of duration D needs at least
1 create + (ceil((D - first) / interval) + 1) polls + 1 download. Each task is driven the
way an agent drives it: ``generate_video`` (returns at once), then
``get_task_status(wait_seconds=30)`` until completed (the MP4 is downloaded then). N tasks
run concurrently over one stdio session; the simulator counts every request it receives.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import IO

import anyio
from mcp import Client

from bench.common import Row, Simulator, ours_env, ours_params, stdio_session

JOB_SECONDS = 3.0
FIRST = 0.5
INTERVAL = 1.0


def minimum_requests(job: float, first: float, interval: float) -> int:
    polls = math.ceil((job - first) / interval) + 1
    return 1 + polls + 1


async def one_task(client: Client, n: int, run: int, retries: list[int]) -> None:
    r = await client.call_tool("generate_video", {"prompt": f"bench task {run}-{n}: a lighthouse at dusk"})
    if r.is_error or r.structured_content is None:
        raise RuntimeError(f"generate_video failed: {r.content}")
    task_id = r.structured_content["task_id"]
    for _ in range(20):
        s = await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 30})
        if s.is_error or s.structured_content is None:
            text = str(s.content)
            if "get_task_status again" in text:  # e.g. the download timed out: retry like an agent would
                retries[0] += 1
                continue
            raise RuntimeError(f"get_task_status failed: {text}")
        if s.structured_content.get("status") == "completed":
            if not s.structured_content.get("local_path"):
                raise RuntimeError(f"completed without a download: {s.structured_content}")
            return
    raise RuntimeError(f"task {task_id} did not complete")


async def measure(
    sim: Simulator, workdir: Path, *, sizes: tuple[int, ...], errlog: IO[str]
) -> tuple[list[Row], list[str]]:
    minimum = minimum_requests(JOB_SECONDS, FIRST, INTERVAL)
    env = ours_env(
        sim.base_url,
        workdir / "upstream-data",
        WAN_MCP_POLL_FIRST_SECONDS=str(FIRST),
        WAN_MCP_POLL_INTERVAL_SECONDS=str(INTERVAL),
        WAN_MCP_UPSTREAM_RATE_BUDGET="1000",  # the budget is figure-independent; see the load tests
        WAN_MCP_POSTER_FRAMES="false",
    )
    rows: list[Row] = []
    lines = [
        f"Upstream requests per completed task (job {JOB_SECONDS:g} s, first poll {FIRST:g} s, interval "
        f"{INTERVAL:g} s; minimum {minimum} = 1 create + {minimum - 2} polls + 1 download):",
        "",
        "| concurrent tasks | creates | status GETs | downloads | per task | ratio to minimum | retried calls "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sim.configure(job_seconds=JOB_SECONDS)
    try:
        async with stdio_session(ours_params(env), errlog) as client:
            for run, n in enumerate(sizes):
                sim.clear_requests()
                retries = [0]
                t0 = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(one_task, client, i, run, retries)
                wall = time.perf_counter() - t0
                creates, polls, files = sim.count("create"), sim.count("status"), sim.count("file")
                per_task = (creates + polls + files) / n
                ratio = per_task / minimum
                lines.append(
                    f"| {n} | {creates} | {polls} | {files} | {per_task:.2f} | {ratio:.2f}x | {retries[0]} "
                    f"| {wall:.1f} |"
                )
                rows.append(
                    Row(
                        "4",
                        f"upstream requests per completed task, {n} concurrent",
                        per_task,
                        "req",
                        minimum,
                        "contract minimum",
                        "<= 1.1x",
                        ratio <= 1.1,
                    )
                )
    finally:
        sim.configure(job_seconds=3600)
    return rows, ["\n".join(lines)]
