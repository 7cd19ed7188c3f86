"""Figure 10: replicas on one PostgreSQL journal (issue 12), and what the database costs per call.

a. Cheap tool calls (``list_tasks``, one journal read each) per second over streamable HTTP with
   1, 2 and 3 replicas on one PostgreSQL, the clients spread evenly over the replicas.
b. Status waits: 6 s jobs submitted round-robin and each waited on through ANOTHER replica than
   the one that made it, with 1, 2 and 3 replicas: how long after each job's end its waiter heard
   it finished, and the upstream status GETs per job (one poller per job across replicas, so this
   must not grow with the replica count). At a load light enough that no configuration is short
   of CPU: a saturated single process polls late and so reads less, which says nothing of sharing.
c. The added latency of the PostgreSQL journal over SQLite per call: one stdio server on each,
   the same ``list_tasks`` call, driven in alternating blocks.

On a 2-CPU machine the load generator, the replicas, PostgreSQL and the simulator all share two
cores: more replicas cannot mean more calls per second here; the figure shows what they cost
and that the shared state stays right (no error, no extra upstream reads), not a cluster's scaling.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.call_overhead import interleaved, seed_into
from bench.common import Proc, Row, free_port, ours_env, ours_params, percentile, simulator, spawn, stdio_session
from bench.http_throughput import BENCH_TOKEN, hammer
from wan_mcp.core.journal import LOCAL_TENANT, SqliteJournal
from wan_mcp.server.principals import token_principal

CHEAP = ("list_tasks", {"limit": 5})
#: Long enough that every job is still running when its wait begins (submitting 240 takes ~3 s), so
#: the status GETs per job follow the poll schedule, not how far each job got before its wait.
JOB_SECONDS = 6.0


@contextlib.contextmanager
def _fleet(n: int, db_url: str, sim_url: str, root: Path) -> Iterator[list[Proc]]:
    """``n`` replicas of ``wan-mcp serve --transport http`` on one database and one output folder."""
    with contextlib.ExitStack() as stack:
        procs = []
        for i in range(n):
            port = free_port()
            data = root / f"replica-{i}"
            env = ours_env(
                sim_url,
                data,
                WAN_MCP_HTTP_TOKEN=BENCH_TOKEN,
                WAN_MCP_DATABASE_URL=db_url,
                WAN_MCP_OUTPUT_DIR=str(root / "videos"),
                WAN_MCP_POLL_FIRST_SECONDS="1",
                WAN_MCP_POLL_INTERVAL_SECONDS="1",
                WAN_MCP_UPSTREAM_RATE_BUDGET="200",
                WAN_MCP_POSTER_FRAMES="0",
            )
            args = [sys.executable, "-m", "wan_mcp", "serve", "--transport", "http", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            root.mkdir(parents=True, exist_ok=True)
            procs.append(stack.enter_context(spawn(args, env, url, root / f"replica-{i}.log", "/healthz")))
        yield procs


async def _seed(db_url: str, sim_url: str) -> None:
    from wan_mcp.core.journal.postgres import PostgresJournal

    async with await PostgresJournal.open(db_url) as journal:
        await seed_into(journal, sim_url, tenant=token_principal(BENCH_TOKEN))


async def _cheap_calls(procs: list[Proc], clients: int, seconds: float) -> float:
    """Calls per second of ``clients`` sessions spread over the replicas (any error result aborts)."""
    totals: list[tuple[int, int]] = []

    async def one(proc: Proc, share: int) -> None:
        totals.append(await hammer(proc.url + "/mcp", CHEAP[0], CHEAP[1], share, seconds))

    async with anyio.create_task_group() as tg:
        for i, proc in enumerate(procs):
            tg.start_soon(one, proc, clients // len(procs) + (i < clients % len(procs)))
    if any(errors for _, errors in totals):
        raise RuntimeError(f"error results under load: {totals}")
    return sum(calls for calls, _ in totals) / seconds


async def _waits(procs: list[Proc], jobs: int, sim: Any) -> tuple[list[float], float]:
    """Submit ``jobs`` round-robin, wait on each through the next replica.

    Returns how long after each job's end its waiter heard it finished (seconds; the job ends
    :data:`JOB_SECONDS` after its submission returned, at the latest), and the status GETs per job.
    """
    headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
    sim.clear_requests()

    @contextlib.asynccontextmanager
    async def client(proc: Proc) -> Any:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=90.0)) as http,
            Client(streamable_http_client(proc.url + "/mcp", http_client=http)) as c,
        ):
            yield c

    made: list[list[str]] = [[] for _ in procs]
    ends: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        # One at a time, round-robin: jobs start at the same pace whatever the replica count.
        clients = [await stack.enter_async_context(client(p)) for p in procs]
        for i in range(jobs):
            k = i % len(procs)
            r = await clients[k].call_tool("generate_video", {"prompt": f"bench wave {i}", "resolution": "720p"})
            if r.is_error:
                raise RuntimeError(f"generate_video failed: {r.content}")
            made[k].append(r.structured_content["task_id"])
            ends[made[k][-1]] = time.perf_counter() + JOB_SECONDS
    lags: list[float] = []

    async def wait_batch(through: Proc, ids: list[str]) -> None:
        async with client(through) as c:

            async def one(task_id: str) -> None:
                for _ in range(5):
                    args = {"task_id": task_id, "wait_seconds": 30, "download": False}
                    r = await c.call_tool("get_task_status", args)
                    if not r.is_error and r.structured_content["status"] == "completed":
                        lags.append(time.perf_counter() - ends[task_id])
                        return
                raise RuntimeError(f"{task_id} never completed: {r.content}")

            async with anyio.create_task_group() as tg:
                for task_id in ids:
                    tg.start_soon(one, task_id)

    async with anyio.create_task_group() as tg:
        for k, ids in enumerate(made):
            through = procs[(k + 1) % len(procs)]
            for start in range(0, len(ids), 25):  # 25 waits per session, as agents would share one
                tg.start_soon(wait_batch, through, ids[start : start + 25])
    gets = sum(1 for r in sim.requests() if r.get("endpoint") == "status")
    return lags, gets / jobs


async def _latency(db_url: str, sim_url: str, workdir: Path, calls: int, errlog: IO[str]) -> tuple[float, float]:
    """Median ms of one list_tasks call over stdio: on PostgreSQL, and on SQLite."""
    lite = workdir / "latency-sqlite"
    journal = await SqliteJournal.open(lite / "journal.sqlite3")
    try:
        await seed_into(journal, sim_url, tenant=LOCAL_TENANT)
    finally:
        await journal.close()
    pg_data = workdir / "latency-pg"
    from wan_mcp.core.journal.postgres import PostgresJournal

    async with await PostgresJournal.open(db_url) as pgj:
        await seed_into(pgj, sim_url, tenant=LOCAL_TENANT)
    async with (
        stdio_session(ours_params(ours_env(sim_url, pg_data, WAN_MCP_DATABASE_URL=db_url)), errlog) as on_pg,
        stdio_session(ours_params(ours_env(sim_url, lite)), errlog) as on_lite,
    ):
        pg_ms, lite_ms = await interleaved((on_pg, *CHEAP), (on_lite, *CHEAP), calls)
    return statistics.median(pg_ms), statistics.median(lite_ms)


async def measure(
    workdir: Path, errlog: IO[str], *, seconds: float, clients: int, jobs: int, calls: int
) -> tuple[list[Row], list[str]]:
    try:
        from tests.pg import PostgresServer

        server = PostgresServer()
    except (ImportError, FileNotFoundError) as missing:
        return [], [f"Figure 10 skipped: no PostgreSQL here ({missing})."]
    root = workdir / "replicas"
    (root / "sim-fast").mkdir(parents=True)
    rows: list[Row] = []
    cheap: dict[int, float] = {}
    waits: dict[int, tuple[list[float], float]] = {}
    with server, simulator(root / "sim-fast", job_seconds=JOB_SECONDS) as fast_sim:
        fast_sim.configure(balance=1e9)  # measuring, not spending: hundreds of jobs per replica count
        for n in (1, 2, 3):
            db = server.schema_url()
            await _seed(db, fast_sim.base_url)
            with _fleet(n, db, fast_sim.base_url, root / f"cheap-{n}") as procs:
                cheap[n] = await _cheap_calls(procs, clients, seconds)
            with _fleet(n, server.schema_url(), fast_sim.base_url, root / f"waits-{n}") as procs:
                waits[n] = await _waits(procs, jobs, fast_sim)
        pg_ms, lite_ms = await _latency(server.schema_url(), fast_sim.base_url, root, calls, errlog)
    for n in (1, 2, 3):
        rows.append(
            Row(
                "10",
                f"cheap calls (list_tasks), {n} replica(s), {clients} clients",
                cheap[n],
                "calls/s",
                cheap[1],
                "1 replica",
                "(report)",
            )
        )
    for n in (1, 2, 3):
        lag50, lag90 = percentile(waits[n][0], 50), percentile(waits[n][0], 90)
        rows.append(
            Row(
                "10",
                f"{n} replica(s), {jobs} jobs, each waited through the next replica: heard after its end, p50",
                lag50,
                "s",
                percentile(waits[1][0], 50),
                "1 replica p50",
                "(report)",
                note=f"p90 {lag90:.2f} s",
            )
        )
        rows.append(
            Row(
                "10",
                f"upstream status GETs per job, {n} replica(s)",
                waits[n][1],
                "GETs",
                waits[1][1],
                "1 replica",
                "<= 1.1x",
                waits[n][1] <= 1.1 * waits[1][1],
            )
        )
    rows.append(
        Row(
            "10",
            "list_tasks over stdio on PostgreSQL vs SQLite (median)",
            pg_ms,
            "ms",
            lite_ms,
            "SQLite journal",
            "(report)",
            note=f"+{pg_ms - lite_ms:.2f} ms per call",
        )
    )
    text = (
        "Replica detail: cheap calls/s "
        + ", ".join(f"{n} replica(s) {cheap[n]:.0f}" for n in (1, 2, 3))
        + "; completion heard after the job's end (p50/p90 s, GETs per job) "
        + ", ".join(
            f"{n}: {percentile(waits[n][0], 50):.2f}/{percentile(waits[n][0], 90):.2f} ({waits[n][1]:.2f})"
            for n in (1, 2, 3)
        )
        + f"; the PostgreSQL journal adds {pg_ms - lite_ms:.2f} ms to a list_tasks call over SQLite "
        f"({pg_ms:.2f} vs {lite_ms:.2f} ms median). All on one 2-CPU machine shared with the load generator, "
        "PostgreSQL and the simulator."
    )
    return rows, [text]
