"""Figure 13: the README's demo, from launch to exit (issue 15: under 8 s on this machine).

``wan-mcp demo`` exactly as a newcomer runs it (a fresh process each time, its own simulator,
3 s simulated jobs). Its floor is the simulated job time on the longest path: the
reference-to-video job needs the text-to-video job's file, so two jobs run one after the other
(2 x 3 s). Timed alternately, in the same run: the default (the real server in the demo's
process, one cold start) and ``--stdio`` (the server as a subprocess, as desktop hosts run it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from bench.common import Row, median

#: The demo's simulated seconds per job (its default) and the jobs on its longest path.
JOB_SECONDS = 3.0
CHAINED_JOBS = 2


async def _once(workdir: Path, extra: list[str]) -> float:
    started = time.monotonic()
    proc = await anyio.run_process(
        [sys.executable, "-m", "wan_mcp", "demo", "--out", str(workdir / "demo"), *extra], check=False
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"wan-mcp demo {' '.join(extra)} failed: {proc.stderr.decode()[-2000:]}")
    return elapsed


async def measure(workdir: Path, reps: int) -> tuple[list[Row], list[str]]:
    walls: dict[str, list[float]] = {"in-process": [], "stdio": []}
    for _ in range(reps):
        walls["in-process"].append(await _once(workdir, []))
        walls["stdio"].append(await _once(workdir, ["--stdio"]))
    floor = JOB_SECONDS * CHAINED_JOBS
    ours, stdio = median(walls["in-process"]), median(walls["stdio"])
    rows = [
        Row("13", "`wan-mcp demo` wall, launch to exit (median)", ours, "s", floor,
            "simulated job time on the longest path", "< 8 s", ours < 8.0),
        Row("13", "`wan-mcp demo --stdio` (server as a subprocess)", stdio, "s", floor,
            "simulated job time on the longest path"),
    ]  # fmt: skip
    text = [
        "**13. The demo.** Each run (s): "
        + "; ".join(f"{name} " + ", ".join(f"{w:.2f}" for w in runs) for name, runs in walls.items())
    ]
    return rows, text
