"""Figure 1: process spawn -> ``tools/list`` answered over stdio, and idle RSS, vs the bare SDK server.

Ours and the floor alternate (bare, ours, bare, ours...) so drift in the machine hits both;
the first pair is a discarded warm-up (page cache, ``.pyc`` files). Idle RSS is read from
``/proc`` right after ``tools/list`` plus a short settle, with our lifespan fully open
(journal, HTTP client, tracker).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO

import anyio
from mcp import StdioServerParameters

from bench.common import (
    Row,
    Simulator,
    bare_params,
    median,
    newest_child,
    ours_env,
    ours_params,
    rss_mb,
    stdio_session,
)

SETTLE_SECONDS = 0.3


async def one_start(params: StdioServerParameters, errlog: IO[str], marker: str) -> tuple[float, float]:
    """Seconds from spawn to the tools/list answer, and the server's RSS (MiB) once idle."""
    t0 = time.perf_counter()
    async with stdio_session(params, errlog) as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - t0
        if not tools.tools:
            raise RuntimeError("tools/list came back empty")
        await anyio.sleep(SETTLE_SECONDS)
        rss = rss_mb(newest_child(marker))
    return elapsed, rss


async def measure(sim_url: str, workdir: Path, reps: int, errlog: IO[str]) -> tuple[list[Row], dict[str, float]]:
    data = workdir / "cold-start-data"
    ours = ours_params(ours_env(sim_url, data))
    bare = bare_params()
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    rss: dict[str, list[float]] = {"ours": [], "bare": []}
    for rep in range(reps + 1):
        for name, params, marker in (("bare", bare, "bare_server.py"), ("ours", ours, "wan_mcp serve")):
            elapsed, mem = await one_start(params, errlog, marker)
            if rep > 0:  # the first round warms the page cache
                times[name].append(elapsed)
                rss[name].append(mem)
    ours_t, bare_t = median(times["ours"]), median(times["bare"])
    ours_m, bare_m = median(rss["ours"]), median(rss["bare"])
    rows = [
        Row(
            "1",
            f"cold start: spawn -> tools/list (median of {reps})",
            ours_t,
            "s",
            bare_t,
            "bare MCPServer",
            "<= 1.10x",
            ours_t / bare_t <= 1.10,
        ),
        Row(
            "1", "idle RSS after tools/list", ours_m, "MiB", bare_m, "bare MCPServer", "<= 1.2x", ours_m / bare_m <= 1.2
        ),
    ]
    return rows, {"bare_rss": bare_m, "bare_start": bare_t}


async def after_videos(sim: Simulator, workdir: Path, errlog: IO[str], *, videos: int = 3) -> tuple[float, float]:
    """Our server's RSS (MiB) once idle after ``videos`` finished videos were downloaded, probed and
    given posters (issue 15: it once grew to 1.7-1.9x the floor as PyAV stayed loaded), and the bare
    server's idle RSS measured right after it in the same run."""
    sim.configure(job_seconds=1.0)
    try:
        async with stdio_session(ours_params(ours_env(sim.base_url, workdir / "after-videos-data")), errlog) as client:
            for i in range(videos):
                made = (await client.call_tool("generate_video", {"prompt": f"idle memory {i}"})).structured_content
                assert made is not None
                view: dict[str, object] = {}
                for _ in range(20):
                    args = {"task_id": made["task_id"], "wait_seconds": 30}
                    view = (await client.call_tool("get_task_status", args)).structured_content or {}
                    if view.get("status") == "completed" and view.get("local_path"):
                        break
                if not view.get("local_path"):
                    raise RuntimeError(f"video {i} did not finish: {view}")
            await anyio.sleep(1.0)  # idle: the last answer sent, nothing running
            ours = rss_mb(newest_child("wan_mcp serve"))
    finally:
        sim.configure(job_seconds=3600)
    _, bare = await one_start(bare_params(), errlog, "bare_server.py")
    return ours, bare
