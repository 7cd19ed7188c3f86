"""Figure 12: a thousand jobs finishing within ten seconds (issue 15: posters that never choke).

The server is spawned like a host spawns it (stdio), the simulator is its own process (one
rendering per shape, so the simulator's own rendering is not what is measured), and the official
client creates ``jobs`` tasks and waits on each with ``get_task_status`` and a progress token;
once the server tracks them all, every job ends at one instant (the simulator's finish control),
and the server's polls (every 5 s) detect the ends within a few seconds.
The tracker's "completed" notification marks the moment the server *detected* the end; the result
(file downloaded, probed, poster attached) marks when the agent has it. Measured twice in the same
run, alternating: with poster frames (the default) and without (the baseline: download and probe
only), with the server's peak RSS sampled from /proc every 0.1 s. Targets: p50 <= 3 s after
detection, RSS < 300 MiB.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import IO, Any

import anyio

from bench.common import (
    Row,
    cpu_seconds,
    newest_child,
    ours_env,
    ours_params,
    percentile,
    rss_mb,
    simulator,
    stdio_session,
)


def _ok(result: Any) -> dict[str, Any]:
    if result.is_error:
        raise RuntimeError(" ".join(getattr(c, "text", "") for c in result.content))
    out: dict[str, Any] = result.structured_content
    return out


class _PeakRss:
    """Samples a process's RSS on a thread (the event loop is busy with a thousand calls)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(0.1)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _once(
    workdir: Path, errlog: IO[str], *, jobs: int, posters: bool
) -> tuple[list[float], float, float, tuple[float, float, float]]:
    """(seconds from detection to result per job, peak server RSS MiB, seconds the detections spanned,
    CPU seconds from the finish to the last result: server, simulator, this client)."""
    name = "posters" if posters else "plain"
    (workdir / name).mkdir(parents=True, exist_ok=True)
    with simulator(workdir / name, job_seconds=3600.0) as sim:
        sim.configure(render_by_shape=True, balance=1_000_000.0)
        env = ours_env(
            sim.base_url,
            workdir / f"{name}-data",
            WAN_MCP_POSTER_FRAMES="1" if posters else "0",
            WAN_MCP_POLL_FIRST_SECONDS="1",
            WAN_MCP_POLL_INTERVAL_SECONDS="5",  # every job's end is seen within ~6 s of the finish
            WAN_MCP_UPSTREAM_RATE_BUDGET="1000",
            WAN_MCP_MAX_WAIT_SECONDS="600",
        )
        after: list[float] = []
        detections: list[float] = []
        async with stdio_session(ours_params(env), errlog) as client:
            pid = newest_child("wan_mcp serve")
            gate = anyio.Semaphore(16)
            waiting = 0
            all_waiting = anyio.Event()

            async def one(i: int) -> None:
                nonlocal waiting
                async with gate:
                    made = _ok(await client.call_tool("generate_video", {"prompt": f"finish {i}", "duration": 5}))
                detected: list[float] = []
                first = True

                async def progress(value: float, total: float | None, message: str | None) -> None:
                    nonlocal waiting, first
                    if first:  # the server tracks this job: it counts as waiting
                        first = False
                        waiting += 1
                        if waiting == jobs:
                            all_waiting.set()
                    if not detected and message is not None and ": completed" in message:
                        detected.append(time.monotonic())

                args = {"task_id": made["task_id"], "wait_seconds": 600}
                view = _ok(await client.call_tool("get_task_status", args, progress_callback=progress))
                if view.get("status") != "completed" or not view.get("local_path") or not detected:
                    raise RuntimeError(f"job {i} did not finish as expected: {view}")
                detections.append(detected[0])
                after.append(time.monotonic() - detected[0])

            with _PeakRss(pid) as rss:
                async with anyio.create_task_group() as tg:
                    for i in range(jobs):
                        tg.start_soon(one, i)
                    with anyio.fail_after(600):
                        await all_waiting.wait()
                    cpu = (cpu_seconds(pid), cpu_seconds(sim.proc.pid), time.process_time())
                    await anyio.to_thread.run_sync(sim.finish_all)  # every job ends at this instant
            used = (cpu_seconds(pid) - cpu[0], cpu_seconds(sim.proc.pid) - cpu[1], time.process_time() - cpu[2])
    return after, rss.peak, max(detections) - min(detections), used


async def measure(workdir: Path, errlog: IO[str], *, jobs: int = 1000) -> tuple[list[Row], list[str]]:
    runs: dict[bool, tuple[list[float], float, float, tuple[float, float, float]]] = {}
    for posters in (False, True):  # baseline first: its file cache is cold exactly like ours
        runs[posters] = await _once(workdir, errlog, jobs=jobs, posters=posters)
    base, base_rss, base_span, base_cpu = runs[False]
    ours, ours_rss, span, cpu = runs[True]
    p50, p90 = percentile(ours, 50), percentile(ours, 90)
    b50, b90 = percentile(base, 50), percentile(base, 90)
    rows = [
        Row(
            "12",
            f"{jobs} jobs ending together: result after detection, p50",
            p50,
            "s",
            baseline=b50,
            baseline_name="no poster frames",
            target="<= 3 s",
            met=p50 <= 3.0,
        ),
        Row("12", "same, p90", p90, "s", baseline=b90, baseline_name="no poster frames", target="(report)"),
        Row(
            "12",
            "server peak RSS during them",
            ours_rss,
            "MiB",
            baseline=base_rss,
            baseline_name="no poster frames",
            target="< 300 MiB",
            met=ours_rss < 300,
        ),
    ]
    text = (
        f"Figure 12 detail: {jobs} jobs created 16 at a time over stdio and waited on, then all ended at one instant "
        f"(the simulator's finish control); the server detected the ends within "
        f"{span:.1f} s (baseline run {base_span:.1f} s). Result after detection p50/p90: with posters "
        f"{p50:.2f}/{p90:.2f} s, without {b50:.2f}/{b90:.2f} s; server peak RSS {ours_rss:.0f} vs {base_rss:.0f} MiB. "
        f"CPU seconds from the finish to the last result (server / "
        f"simulator / client): with posters {cpu[0]:.1f} / {cpu[1]:.1f} / {cpu[2]:.1f}, without {base_cpu[0]:.1f} / "
        f"{base_cpu[1]:.1f} / {base_cpu[2]:.1f}, on {os.cpu_count()} CPUs."
    )
    return rows, [text]
