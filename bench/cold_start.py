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

from bench.common import Row, bare_params, median, newest_child, ours_env, ours_params, rss_mb, stdio_session

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
