"""Figure 5: ``list_tasks`` latency and server RSS as the journal grows (1k / 10k / 100k rows).

Set-up creates the journal through ``SqliteJournal.open`` (schema, migrations, pragmas) and
then bulk-inserts rows in one transaction on the journal's own connection (the per-row API
commits with ``synchronous=FULL``, i.e. one fsync per row; far too slow for 100k rows and
not what is being measured). Measurement goes through the real server over stdio
(``list_tasks``, default limit 20) and through the journal API directly.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import IO

import anyio

from bench.common import Row, newest_child, ours_env, ours_params, percentile, rss_mb, stdio_session, timed_calls
from wan_mcp.core.journal import SqliteJournal
from wan_mcp.core.journal import schema as journal_schema

STATUSES = ("completed",) * 8 + ("failed", "in_progress")


async def fill(path: Path, rows: int) -> float:
    """Create a journal with ``rows`` task rows; returns the seconds it took."""
    t0 = time.perf_counter()
    journal = await SqliteJournal.open(path)
    payload = json.dumps(
        {
            "model": "wan2.6",
            "prompt": "a red fox trotting through fresh snow at dawn, cinematic",
            "duration": 5,
            "resolution": "720p",
            "aspect_ratio": "16:9",
        },
        separators=(",", ":"),
    )
    now = time.time() - rows
    batch = [
        (
            f"wanmcp_bench_{i:08d}",
            f"video_bench_{i:08d}",
            "wan2.6",
            "t2v",
            STATUSES[i % len(STATUSES)],
            100 if STATUSES[i % len(STATUSES)] == "completed" else 40,
            payload,
            f"fp{i:08d}",
            now + i,
            now + i,
            f"https://files.example.com/{i}.mp4",
            int(now + i + 86_400),
            None,
            None,
            None,
            None,
            None,
            750_000,
            "bench",
            None,
            "local",
            0,
        )
        for i in range(rows)
    ]
    placeholders = ", ".join("?" * len(journal_schema._TASK_COLUMNS.split(",")))
    sql = f"INSERT INTO tasks ({journal_schema._TASK_COLUMNS}) VALUES ({placeholders})"

    def bulk(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")

    await journal._call(bulk)
    await journal.close()
    return time.perf_counter() - t0


async def api_list_p50(path: Path, calls: int) -> float:
    journal = await SqliteJournal.open(path)
    try:
        for _ in range(20):
            await journal.list(limit=20)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            got = await journal.list(limit=20)
            out.append((time.perf_counter() - t0) * 1000)
            assert len(got) == 20
        return percentile(out, 50)
    finally:
        await journal.close()


async def measure(
    workdir: Path,
    sim_url: str,
    *,
    sizes: tuple[int, ...],
    calls: int,
    errlog: IO[str],
    bare_rss: float | None,
) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    lines = [
        "Journal scale (list_tasks, default limit 20; p50 over stdio and through the journal API):",
        "",
        "| rows | fill s | journal file MB | list_tasks p50 ms (stdio) | p99 ms | journal.list p50 ms | "
        "get_task_status p50 ms | server RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first_p50: float | None = None
    for size in sizes:
        data = workdir / f"journal-{size}"
        path = data / "journal.sqlite3"
        fill_s = await fill(path, size)
        api_p50 = await api_list_p50(path, calls)
        async with stdio_session(ours_params(ours_env(sim_url, data)), errlog) as client:
            ms = await timed_calls(client, "list_tasks", {}, n=calls)
            status_ms = await timed_calls(
                client,
                "get_task_status",
                {"task_id": f"video_bench_{size // 2 - size // 2 % 10:08d}", "download": False},
                n=max(50, calls // 5),
            )
            await anyio.sleep(0.2)
            rss = rss_mb(newest_child("wan_mcp serve"))
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        first_p50 = first_p50 if first_p50 is not None else p50
        mb = path.stat().st_size / 1e6
        lines.append(
            f"| {size:,} | {fill_s:.1f} | {mb:.1f} | {p50:.2f} | {p99:.2f} | {api_p50:.3f} | "
            f"{percentile(status_ms, 50):.2f} | {rss:.1f} |"
        )
        if size == max(sizes):
            rows.append(
                Row(
                    "5",
                    f"list_tasks p50 over stdio, {size:,} rows",
                    p50,
                    "ms",
                    first_p50,
                    f"at {min(sizes):,} rows",
                    "< 5 ms",
                    p50 < 5.0,
                )
            )
            rows.append(
                Row(
                    "5",
                    f"server RSS with {size:,} rows",
                    rss,
                    "MiB",
                    bare_rss,
                    "bare MCPServer idle" if bare_rss else "",
                    "< 150 MB",
                    rss * 1.048576 < 150,
                )
            )
    return rows, ["\n".join(lines)]
