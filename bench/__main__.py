"""``python -m bench``: run every figure and print ONE table (Markdown), then the growth tables.

    python -m bench            # the full run (a few minutes)
    python -m bench --quick    # a smoke run (~3 minutes): fewer repetitions, calls and sizes
    python -m bench --only 1,5 # some figures only

Everything runs on loopback: a gateway simulator subprocess, our server and the bare SDK
server spawned like a host spawns them, driven by the official ``mcp`` client.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from bench import (
    call_overhead,
    cold_start,
    completions,
    demo_wall,
    http_throughput,
    journal_scale,
    poll_prediction,
    posters,
    rate_budget,
    replicas,
    upstream,
)
from bench.common import Row, render_table, simulator

FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="wan-mcp benchmark suite (loopback only).")
    p.add_argument("--quick", action="store_true", help="fast smoke run: fewer repetitions, calls and sizes")
    p.add_argument("--only", default=",".join(FIGURES), help="comma-separated figure numbers (default: all)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory (logs, journals)")
    return p


async def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Row], list[str]]:
    only = {f.strip() for f in args.only.split(",") if f.strip()}
    quick = bool(args.quick)
    rows: list[Row] = []
    extra: list[str] = []
    ctx: dict[str, float] = {}
    with (workdir / "servers.log").open("w") as errlog, simulator(workdir) as sim:
        if "1" in only:
            got, info = await cold_start.measure(sim.base_url, workdir, reps=3 if quick else 9, errlog=errlog)
            rows += got
            ctx.update(info)
            ours_rss, bare_rss = await cold_start.after_videos(sim, workdir, errlog)
            rows.append(Row("1", "idle RSS after 3 videos (downloaded, probed, posters)", ours_rss, "MiB", bare_rss,
                            "bare MCPServer", "<= 1.3x", ours_rss / bare_rss <= 1.3))  # fmt: skip
        if "2" in only or "3" in only:
            got, info, text = await call_overhead.measure(
                sim, workdir, calls=200 if quick else 1000, errlog=errlog, passthrough="3" in only
            )
            rows += got
            ctx.update(info)
            extra += text
        if "4" in only:
            got, text = await upstream.measure(sim, workdir, sizes=(10,) if quick else (10, 100), errlog=errlog)
            rows += got
            extra += text
        if "5" in only:
            got, text = await journal_scale.measure(
                workdir,
                sim.base_url,
                sizes=(1_000, 100_000) if quick else (1_000, 10_000, 100_000),
                calls=100 if quick else 500,
                errlog=errlog,
                bare_rss=ctx.get("bare_rss"),
            )
            rows += got
            extra += text
        if "6" in only:
            got, text = await http_throughput.measure(sim.base_url, workdir, seconds=2.0 if quick else 10.0, clients=50)
            rows += got
            extra += text
        if "7" in only:
            got, text = await rate_budget.measure(workdir, tasks=200 if quick else 1000, window=8.0 if quick else 24.0)
            rows += got
            extra += text
        if "8" in only:
            got, text = await poll_prediction.measure(workdir, jobs=50 if quick else 200)
            rows += got
            extra += text
        if "11" in only:
            got, text = await poll_prediction.measure_many(workdir, jobs=200 if quick else 1000)
            rows += got
            extra += text
        if "9" in only:
            got, text = await posters.measure(workdir, reps=3 if quick else 9)
            rows += got
            extra += text
        if "12" in only:
            got, text = await completions.measure(workdir, errlog, jobs=200 if quick else 1000)
            rows += got
            extra += text
        if "13" in only:
            got, text = await demo_wall.measure(workdir, reps=1 if quick else 3)
            rows += got
            extra += text
        if "10" in only:
            got, text = await replicas.measure(
                workdir,
                errlog,
                seconds=2.0 if quick else 6.0,
                clients=24,
                jobs=30 if quick else 60,
                calls=100 if quick else 400,
            )
            rows += got
            extra += text
    return rows, extra


def machine() -> str:
    import os

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) / 1024**2
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration):
        mem = 0.0
    return (
        f"{os.cpu_count()} CPU ({cpu}), {mem:.1f} GiB RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wan-mcp-bench-"))
    try:
        rows, extra = anyio.run(run, args, workdir)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"command: python -m bench {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"wall time: {time.monotonic() - started:.0f} s")
    print()
    print(render_table(rows))
    for block in extra:
        print()
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
