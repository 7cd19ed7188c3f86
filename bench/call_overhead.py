"""Figures 2 and 3: per-call latency over stdio.

2. ``get_task_status`` on a finished task (answered from the journal) vs the bare server's
   trivial tool, p50/p99 over N sequential calls. Both sessions stay open and are driven in
   alternating blocks, so machine noise hits both alike.
3. ``get_task_status(wait_seconds=0)`` on a live task (one upstream GET per call) vs a raw
   ``httpx2`` GET of the same simulator URL plus the trivial-tool round trip. The server
   runs with ``WAN_MCP_POLL_FIRST_SECONDS=0.001`` so the tracker's ``min_refresh`` (which is
   ``min(2 s, poll_first)``) never reuses a recent poll; a second server with the default
   timing shows what an agent polling in a tight loop actually costs (mostly no GET at all).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

import httpx2
from mcp import Client

from bench.common import (
    KEY,
    Row,
    Simulator,
    bare_params,
    ours_env,
    ours_params,
    percentile,
    stdio_session,
    timed_calls,
)
from wan_mcp.core.journal import LOCAL_TENANT, Observation, SqliteJournal, TaskJournal

DONE_ID = "bench_done_0001"
BLOCK = 100


async def seed_finished(data: Path, sim_url: str, *, tenant: str = LOCAL_TENANT) -> None:
    """A completed task of ``tenant`` in the data dir's journal (URL known, not downloaded): a pure journal hit."""
    journal = await SqliteJournal.open(data / "journal.sqlite3")
    try:
        await seed_into(journal, sim_url, tenant=tenant)
    finally:
        await journal.close()


async def seed_into(journal: TaskJournal, sim_url: str, *, tenant: str = LOCAL_TENANT) -> None:
    """:func:`seed_finished` on any journal (the replica figure seeds PostgreSQL)."""
    business = "wanmcp_bench_done"
    await journal.record_submission(
        business_id=business,
        model="wan2.6",
        mode="t2v",
        payload={"model": "wan2.6", "prompt": "a fox in the snow", "duration": 5},
        fingerprint="bench-done",
        tenant=tenant,
    )
    await journal.attach_task(business, task_id=DONE_ID, status="queued")
    await journal.observe(
        DONE_ID,
        Observation(
            status="completed",
            progress=100,
            video_url=f"{sim_url}/files/{DONE_ID}.mp4",
            expires_at=int(time.time()) + 86_400,
        ),
    )


async def interleaved(
    a: tuple[Client, str, dict[str, Any]], b: tuple[Client, str, dict[str, Any]], n: int
) -> tuple[list[float], list[float]]:
    """n timed calls on each side, in alternating blocks of BLOCK."""
    out_a: list[float] = []
    out_b: list[float] = []
    warm = 30
    while len(out_a) < n:
        k = min(BLOCK, n - len(out_a))
        out_a += await timed_calls(*a, n=k, warmup=warm)
        out_b += await timed_calls(*b, n=k, warmup=warm)
        warm = 2
    return out_a, out_b


async def raw_gets(url: str, n: int, warmup: int = 5) -> list[float]:
    """n timed GETs on one keep-alive connection, like the server's own pooled client."""
    out: list[float] = []
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        for i in range(n + warmup):
            t0 = time.perf_counter()
            r = await http.get(url)
            dt = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            if i >= warmup:
                out.append(dt)
    return out


async def create_task(client: Client, prompt: str, wait: float) -> dict[str, Any]:
    r = await client.call_tool("generate_video", {"prompt": prompt, "wait_seconds": wait})
    if r.is_error or r.structured_content is None:
        raise RuntimeError(f"generate_video failed: {r.content}")
    return r.structured_content


async def measure(
    sim: Simulator, workdir: Path, *, calls: int, errlog: IO[str], passthrough: bool
) -> tuple[list[Row], dict[str, float], list[str]]:
    data = workdir / "calls-data"
    await seed_finished(data, sim.base_url)
    env = ours_env(sim.base_url, data, WAN_MCP_POLL_FIRST_SECONDS="0.001", WAN_MCP_POLL_INTERVAL_SECONDS="0.5")
    rows: list[Row] = []
    info: dict[str, float] = {}
    notes: list[str] = []
    async with stdio_session(ours_params(env), errlog) as ours, stdio_session(bare_params(), errlog) as bare:
        hit = (ours, "get_task_status", {"task_id": DONE_ID, "download": False})
        ping = (bare, "ping", {})
        ours_ms, bare_ms = await interleaved(hit, ping, calls)
        o50, b50 = percentile(ours_ms, 50), percentile(bare_ms, 50)
        o99, b99 = percentile(ours_ms, 99), percentile(bare_ms, 99)
        info["trivial_p50_ms"] = b50
        rows.append(
            Row(
                "2",
                f"call overhead p50, finished task (journal hit), {calls} calls",
                o50,
                "ms",
                b50,
                "trivial tool",
                "<= 1.3x",
                o50 / b50 <= 1.3,
            )
        )
        rows.append(Row("2", "call overhead p99, same calls", o99, "ms", b99, "trivial tool", "(report)"))

        # The same finished task once downloaded: every call also probes the file and
        # attaches a poster frame (what an agent gets by default).
        sim.configure(job_seconds=0.3)
        done = await create_task(ours, "a heron at dawn, bench file", wait=30)
        sim.configure(job_seconds=3600)
        if done.get("status") != "completed":
            raise RuntimeError(f"the file task did not complete: {done}")
        with_file = (ours, "get_task_status", {"task_id": done["task_id"]})
        file_ms, bare2_ms = await interleaved(with_file, ping, max(100, calls // 5))
        f50, b250 = percentile(file_ms, 50), percentile(bare2_ms, 50)
        rows.append(
            Row(
                "2",
                "finished + downloaded task (probe + poster frame each call)",
                f50,
                "ms",
                b250,
                "trivial tool",
                "(report)",
            )
        )

        if passthrough:
            live = await create_task(ours, "a slow glacier, bench live task", wait=0)
            task_id = str(live["task_id"])
            url = f"{sim.base_url}/v1/videos/generations/{task_id}"
            live_args = {"task_id": task_id, "wait_seconds": 0}
            raw: list[float] = []
            live_ms: list[float] = []
            triv: list[float] = []
            gets = 0
            while len(live_ms) < calls:  # alternating blocks: raw GET, ours, trivial tool
                k = min(BLOCK, calls - len(live_ms))
                raw += await raw_gets(url, k)
                sim.clear_requests()
                live_ms += await timed_calls(ours, "get_task_status", live_args, n=k, warmup=2)
                gets += sim.count("status")
                triv += await timed_calls(bare, "ping", {}, n=k, warmup=2)
            per_call = gets / (len(live_ms) + 2 * ((calls + BLOCK - 1) // BLOCK))
            l50, r50, t50 = percentile(live_ms, 50), percentile(raw, 50), percentile(triv, 50)
            added = l50 - (r50 + t50)
            rows.append(
                Row(
                    "3",
                    f"pass-through p50: live task, wait 0 ({per_call:.2f} GET/call)",
                    l50,
                    "ms",
                    r50 + t50,
                    "raw GET + trivial tool",
                    "< 1 ms added",
                    added < 1.0,
                    note=f"added {added:+.2f} ms",
                )
            )
            info["passthrough_added_ms"] = added
            notes.append(
                "Pass-through detail (p50, ms): raw httpx2 GET of the status URL "
                f"{r50:.3f}; trivial tool over stdio {t50:.3f}; ours (GET + journal read + write) {l50:.3f}; "
                f"added {added:+.3f}; upstream GETs per call {per_call:.2f}."
            )
    if passthrough:
        # Default timing: min_refresh = 2 s, so a tight polling loop is served from the last poll.
        env_default = ours_env(sim.base_url, data)
        async with stdio_session(ours_params(env_default), errlog) as ours_default:
            sim.clear_requests()
            n = max(100, calls // 5)
            t0 = time.perf_counter()
            default_ms = await timed_calls(
                ours_default, "get_task_status", {"task_id": task_id, "wait_seconds": 0}, n=n
            )
            span = time.perf_counter() - t0
            gets = sim.count("status")
        d50 = percentile(default_ms, 50)
        rows.append(
            Row(
                "3",
                f"live task, default timing ({gets} GETs in {n + 20} calls over {span:.1f} s)",
                d50,
                "ms",
                b50,
                "trivial tool",
                "(report)",
            )
        )
    return rows, info, notes
