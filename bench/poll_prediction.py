"""Figure 8: how soon a finished job is seen, plain schedule vs polling at the predicted completion.

On a virtual clock (so the figure is the same on any machine): the simulator's own engine and
routes reached in-process, the real tracker and journal, default timing (first poll 5 s, then
10 s, +-20 % jitter). For each progress curve, jobs of 20-120 s (seeded) each get one waiter;
we record the virtual time from the upstream completion to the waiter seeing it, and the status
reads per task. Targets (issue 15): p50 <= 1.5 s and p90 <= 3 s, reads <= 1.1x the plain schedule.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from pathlib import Path

import anyio
import httpx2
from pydantic import SecretStr

from bench.common import Row
from wan_mcp.core.clock import VirtualClock
from wan_mcp.core.journal import SqliteJournal
from wan_mcp.core.tracker import PollTiming, TaskTracker
from wan_mcp.gateway.client import GatewayClient, RetryPolicy
from wan_mcp.simulator.app import build_app
from wan_mcp.simulator.engine import PROGRESS_CURVES, Engine

KEY = "sk-bench-predict-0123456789"
BASE = "http://gateway.invalid"


async def _run(workdir: Path, *, curve: str, timing: PollTiming, jobs: list[float]) -> tuple[list[float], float]:
    clock = VirtualClock()
    engine = Engine(api_keys={KEY}, clock=clock.monotonic, wall_clock=clock.time)
    engine.base_url = BASE
    engine.configure(progress_curve=curve)
    transport = httpx2.ASGITransport(app=build_app(engine))
    delays: list[float] = []
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
        client = GatewayClient(
            http, base_url=BASE, api_key=SecretStr(KEY), retry=RetryPolicy(attempts=1, total_seconds=1.0),
            sleep=clock.sleep, clock=clock.monotonic,
        )  # fmt: skip
        journal = await SqliteJournal.open(workdir / f"{curve}-{timing.predict}.sqlite3", clock=clock.time)
        try:
            async with (
                TaskTracker(
                    client, journal, timing=timing, rate_budget=1000.0, rng=random.Random(3), clock=clock
                ) as tracker,
                anyio.create_task_group() as tg,
            ):
                done = 0

                async def one(i: int, seconds: float) -> None:
                    nonlocal done
                    engine.configure(job_seconds=seconds)
                    bid = f"wanmcp_bench_{i}"
                    payload = {"model": "wan2.6", "prompt": f"job {i}", "resolution": "720p", "duration": 5}
                    await journal.record_submission(
                        business_id=bid, model="wan2.6", mode="t2v", payload=payload, fingerprint=bid
                    )
                    task = await client.create_task(payload, bid)
                    finished_at = clock.monotonic() + seconds
                    record = await journal.attach_task(bid, task_id=task.id, status="queued")
                    seen: list[float] = []

                    async def on_update(rec: object) -> None:
                        if getattr(rec, "status", "") == "completed" and not seen:
                            seen.append(clock.monotonic())

                    await tracker.wait(record, within=10_000, on_update=on_update)
                    delays.append(seen[0] - finished_at)
                    done += 1

                for i, seconds in enumerate(jobs):
                    tg.start_soon(one, i, seconds)
                    await clock.advance(1.0)  # a submission a second
                await clock.run_until(lambda: done == len(jobs), limit=100_000)
        finally:
            await journal.close()
    return delays, tracker.upstream_polls / len(jobs)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def measure(workdir: Path, *, jobs: int = 200) -> tuple[list[Row], list[str]]:
    rng = random.Random(15)
    durations = [rng.uniform(20, 120) for _ in range(jobs)]
    plain = PollTiming(predict=False)
    predicting = replace(plain, predict=True)
    rows: list[Row] = []
    lines = ["Figure 8 detail (virtual clock): completion seen after upstream completion, s",
             "| curve | plain p50 / p90 | predicting p50 / p90 | reads per task plain / predicting |",
             "|---|---|---|---|"]  # fmt: skip
    for curve in PROGRESS_CURVES:
        base_delays, base_reads = await _run(workdir, curve=curve, timing=plain, jobs=durations)
        delays, reads = await _run(workdir, curve=curve, timing=predicting, jobs=durations)
        p50, p90 = _p(delays, 50), _p(delays, 90)
        b50, b90 = _p(base_delays, 50), _p(base_delays, 90)
        lines.append(f"| {curve} | {b50:.2f} / {b90:.2f} | {p50:.2f} / {p90:.2f} | {base_reads:.2f} / {reads:.2f} |")
        rows.append(Row("8", f"completion seen p50 ({curve})", p50, "s", baseline=b50, baseline_name="plain schedule",
                        target="<= 1.5 s", met=p50 <= 1.5))  # fmt: skip
        rows.append(Row("8", f"completion seen p90 ({curve})", p90, "s", baseline=b90, baseline_name="plain schedule",
                        target="<= 3 s", met=p90 <= 3.0))  # fmt: skip
        rows.append(Row("8", f"status reads per task ({curve})", reads, "reads", baseline=base_reads,
                        baseline_name="plain schedule", target="<= 1.1x", met=reads <= 1.1 * base_reads))  # fmt: skip
    return rows, ["\n".join(lines)]
