"""``wan-mcp demo``: the main job on the embedded default, exactly as an agent would run it.

Starts the gateway simulator on a free loopback port, launches the real server as a
stdio subprocess pointed at it, and drives it with the official MCP client: upload a
generated image, run text-, image- and reference-to-video (each quoted), wait with progress
bars on stderr, download the results, join them into a short film, and print a table and the
day's spend. Exits 0 only if all four MP4s are valid (codec, pixel size and duration checked
with PyAV).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

DEMO_KEY = "sk-demo-0123456789abcdef"
EXPECTED = {"t2v": (1280, 720), "i2v": (720, 1280), "r2v": (960, 960), "film": (1280, 720)}
#: Seconds of each result: three 5 s clips, and the film of all three.
DURATIONS = {"t2v": 5.0, "i2v": 5.0, "r2v": 5.0, "film": 15.0}


@dataclass
class Row:
    mode: str
    task_id: str
    seconds: float
    path: str
    width: int
    height: int
    duration: float
    ok: bool
    problem: str = ""
    quote_usd: float = 0.0


def _make_image(path: Path) -> None:
    """A portrait picture (so i2v shows that orientation follows the image)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (720, 1280), (18, 24, 48))
    draw = ImageDraw.Draw(img)
    for i in range(0, 1280, 8):
        draw.line([(0, i), (720, i)], fill=(18 + i // 16, 40 + i // 20, 110 + i // 12))
    draw.ellipse([200, 380, 520, 700], fill=(250, 200, 60))
    draw.rectangle([0, 1000, 720, 1280], fill=(30, 90, 50))
    img.save(path, "PNG")


class ProgressBar:
    def __init__(self, label: str) -> None:
        self.label = label
        self.last = -1

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        pct = int(progress if total is None else 100 * progress / total)
        if pct == self.last:
            return
        self.last = pct
        filled = pct * 30 // 100
        line = f"  {self.label:4} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%  {message or ''}"[:110]
        # Redraw in place on a terminal; one line per update when stderr is a file or pipe.
        sys.stderr.write(f"\r{line}" if sys.stderr.isatty() else f"{line}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\n")


def _structured(result: Any) -> dict[str, Any]:
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(text)
    data: dict[str, Any] = result.structured_content
    return data


async def _wait_done(client: Client, label: str, task_id: str) -> dict[str, Any]:
    bar = ProgressBar(label)
    try:
        for _ in range(20):
            status = _structured(
                await client.call_tool(
                    "get_task_status", {"task_id": task_id, "wait_seconds": 30}, progress_callback=bar
                )
            )
            if status["status"] in ("completed", "failed", "rejected"):
                await bar(100, 100, status["status"])
                return status
    finally:
        bar.done()
    raise RuntimeError(f"task {task_id} did not finish")


def _check(mode: str, status: dict[str, Any], started: float, submitted: dict[str, Any]) -> Row:
    from wan_mcp.core.media import probe_video

    path = status.get("local_path") or ""
    row = Row(mode, status["task_id"], time.monotonic() - started, path, 0, 0, 0.0, False)
    row.quote_usd = float((submitted.get("quote") or {}).get("usd", 0))
    if status["status"] != "completed" or not path:
        row.problem = f"status {status['status']}: {status.get('error')}"
        return row
    info = probe_video(Path(path))
    if info is None:
        row.problem = "not a readable MP4 (is PyAV installed? pip install 'wan-mcp[media]')"
        return row
    row.width, row.height, row.duration = info.width, info.height, info.duration
    want = EXPECTED[mode]
    seconds = DURATIONS[mode]
    if info.codec != "h264" or (info.width, info.height) != want or abs(info.duration - seconds) > 0.6:
        row.problem = (
            f"expected h264 {want[0]}x{want[1]} {seconds:g}s, "
            f"got {info.codec} {info.width}x{info.height} {info.duration:.1f}s"
        )
        return row
    row.ok = True
    return row


async def _drive(out: Path, base_url: str) -> tuple[list[Row], str]:
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    image = inputs / "portrait.png"
    _make_image(image)
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")},
        "WAN_MCP_BASE_URL": base_url,
        "WAN_MCP_API_KEY": DEMO_KEY,
        "WAN_MCP_DATA_DIR": str(out / "data"),
        "WAN_MCP_OUTPUT_DIR": str(out / "videos"),
        "WAN_MCP_ALLOWED_DIRS": str(inputs),
        "WAN_MCP_ALLOW_PRIVATE_URLS": "127.0.0.1",
        # Simulated jobs take seconds, not minutes: poll at a matching pace.
        "WAN_MCP_POLL_FIRST_SECONDS": "0.5",
        "WAN_MCP_POLL_INTERVAL_SECONDS": "0.25",
        "WAN_MCP_LOG_LEVEL": "WARNING",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve"], env=env)
    rows: list[Row] = []
    async with Client(params) as client:
        tools = await client.list_tools()
        print(f"server up: {', '.join(t.name for t in tools.tools)}", file=sys.stderr)

        upload = _structured(await client.call_tool("upload_image", {"path": str(image)}))
        print(
            f"uploaded {image.name} -> {upload['url']} ({upload['width']}x{upload['height']})",
            file=sys.stderr,
        )

        started = time.monotonic()
        t2v = _structured(
            await client.call_tool(
                "generate_video",
                {
                    "prompt": (
                        "A paper boat drifting down a rainy street at dusk, gentle camera follow, soft rain sound"
                    ),
                    "resolution": "720p",
                    "duration": 5,
                    "seed": 7,
                },
            )
        )
        i2v = _structured(
            await client.call_tool(
                "generate_video",
                {
                    "prompt": "The sun slowly rises and the hills begin to glow",
                    "image": upload["url"],
                    "resolution": "720p",
                    "duration": 5,
                },
            )
        )
        for label, job in (("t2v", t2v), ("i2v", i2v)):
            print(f"submitted {label} {job['task_id']}: {_cost(job)}", file=sys.stderr)
        t2v_done = await _wait_done(client, "t2v", t2v["task_id"])
        rows.append(_check("t2v", t2v_done, started, t2v))
        i2v_done = await _wait_done(client, "i2v", i2v["task_id"])
        rows.append(_check("i2v", i2v_done, started, i2v))

        started = time.monotonic()
        ref = t2v_done.get("local_path")
        r2v = _structured(
            await client.call_tool(
                "generate_video",
                {
                    "prompt": "character1 sails across a calm lake under a pastel sky",
                    "reference_videos": [ref] if ref else [],
                    "aspect_ratio": "1:1",
                    "resolution": "720p",
                    "duration": 5,
                },
            )
        )
        print(f"submitted r2v {r2v['task_id']} (reference: the t2v result): {_cost(r2v)}", file=sys.stderr)
        r2v_done = await _wait_done(client, "r2v", r2v["task_id"])
        rows.append(_check("r2v", r2v_done, started, r2v))

        started = time.monotonic()
        film = _structured(
            await client.call_tool(
                "join_videos",
                {"task_ids": [t2v_done["task_id"], i2v_done["task_id"], r2v_done["task_id"]]},
            )
        )
        print(f"joined the three clips into the film {film['task_id']} (local, no cost)", file=sys.stderr)
        rows.append(_check("film", film, started, {}))

        listed = _structured(await client.call_tool("list_tasks", {"limit": 5}))
        print(f"list_tasks shows {len(listed['tasks'])} task(s) in the journal", file=sys.stderr)
        usage = await client.call_tool("get_usage", {})
        _structured(usage)
        spending = " ".join(getattr(c, "text", "") for c in usage.content)
    return rows, spending


def _cost(job: dict[str, Any]) -> str:
    quote = job.get("quote") or {}
    spent = job.get("spent_today_usd", 0)
    return f"about USD {quote.get('usd', 0):g} ({quote.get('basis', 'no quote')}); spent today USD {spent:g}"


def _table(rows: list[Row]) -> str:
    head = ("mode", "task id", "seconds", "quote (USD, est.)", "file", "resolution", "duration")
    body = [
        (
            r.mode,
            r.task_id,
            f"{r.seconds:.1f}",
            f"{r.quote_usd:g}",
            r.path or "-",
            f"{r.width}x{r.height}",
            f"{r.duration:.1f}s",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body)
    return "\n".join(lines)


def run_demo(out: str = "wan-mcp-demo", job_seconds: float = 3.0) -> int:
    from wan_mcp.simulator.harness import SimulatorServer

    # A fresh run folder (journal included) each time: a second run must really run, not be
    # answered from the first run's journal as a duplicate request.
    out_dir = Path(out).expanduser().resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("wan_mcp.simulator", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"wan-mcp demo: simulator + real stdio server + MCP client; files under {out_dir}", file=sys.stderr)
    with SimulatorServer(job_seconds=job_seconds, api_keys={DEMO_KEY}, seed=secrets.randbits(32)) as sim:
        sim.configure(render_on_create=True)  # each MP4 is ready before its job ends: no download waits
        print(f"simulated gateway at {sim.base_url}", file=sys.stderr)
        rows, spending = anyio.run(_drive, out_dir, sim.base_url)
        creates = sim.count(endpoint="create")
    print(_table(rows))
    print(spending)
    for r in rows:
        if not r.ok:
            print(f"FAILED {r.mode}: {r.problem}", file=sys.stderr)
    ok = all(r.ok for r in rows) and len(rows) == 4
    print(json.dumps({"ok": ok, "upstream_creates": creates}), file=sys.stderr)
    return 0 if ok else 1
