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
from functools import partial
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


async def _run(
    workdir: Path,
    *,
    curve: str,
    timing: PollTiming,
    jobs: list[float],
    rate_budget: float = 1000.0,
    every: float = 1.0,
    name: str = "",
) -> tuple[list[float], float]:
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
        journal = await SqliteJournal.open(workdir / f"{name}{curve}-{timing.predict}.sqlite3", clock=clock.time)
        try:
            async with (
                TaskTracker(
                    client, journal, timing=timing, rate_budget=rate_budget, rng=random.Random(3), clock=clock
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
                    await clock.advance(every)  # submissions spread evenly
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


async def measure_many(workdir: Path, *, jobs: int = 1000, rate: float = 10.0) -> tuple[list[Row], list[str]]:
    """Figure 11: ``jobs`` live tasks (1-5 min each, the contract's typical time, submitted at ``rate``
    per second so all are live together) against a budget of ``rate`` status reads per second.
    The budget allows each task a read every ``jobs / rate`` seconds, far apart from its interval,
    so the order the budget serves them in decides how late a finished job is seen: first come
    first served (before issue 15, the baseline) vs the earliest predicted completion first."""
    rng = random.Random(11)
    durations = [rng.uniform(60, 300) for _ in range(jobs)]
    plain = PollTiming(predict=False)
    rows: list[Row] = []
    lines = [f"Figure 11 detail (virtual clock): {jobs} live tasks, {rate:g} status reads/s, completion seen after "
             "upstream completion, s", "| curve | first come p50 / p90 / p99 | predicted first p50 / p90 / p99 | "
             "reads per task first come / predicted |", "|---|---|---|---|"]  # fmt: skip
    for curve in ("linear", "queue_heavy"):
        run = partial(_run, workdir, curve=curve, jobs=durations, rate_budget=rate, every=1.0 / rate, name="many-")
        base, base_reads = await run(timing=plain)
        ours, reads = await run(timing=replace(plain, predict=True))
        b = [_p(base, q) for q in (50, 90, 99)]
        o = [_p(ours, q) for q in (50, 90, 99)]
        lines.append(f"| {curve} | {b[0]:.1f} / {b[1]:.1f} / {b[2]:.1f} | {o[0]:.1f} / {o[1]:.1f} / {o[2]:.1f} | "
                     f"{base_reads:.2f} / {reads:.2f} |")  # fmt: skip
        rows.append(Row("11", f"{jobs} live tasks at {rate:g} reads/s: completion seen p50 ({curve})", o[0], "s",
                        baseline=b[0], baseline_name="first come first served", target="<= 0.5x",
                        met=o[0] <= 0.5 * b[0]))  # fmt: skip
        rows.append(Row("11", f"same, p99 ({curve}): no task starves", o[2], "s", baseline=b[2],
                        baseline_name="first come first served", target="(report)"))  # fmt: skip
    return rows, ["\n".join(lines)]
