"""``wan-mcp demo``: the main job on the embedded default, exactly as an agent would run it.

Starts the gateway simulator on a free loopback port and the real server, and drives it with the
official MCP client: upload a generated image, run text-, image- and reference-to-video (each
quoted), wait with progress bars on stderr, download the results, join them into a short film,
and print a table and the day's spend. Exits 0 only if all four MP4s are valid (codec, pixel size
and duration checked with PyAV).

The server is built in this process by default (the client reaches it through the SDK's in-memory
transport: one interpreter start instead of two, ~0.6 s of an 8 s demo); ``--stdio`` spawns it as
a subprocess over stdio, as desktop hosts do. Either way its settings are the demo's alone, never
the user's ``WAN_MCP_*`` environment or config file.
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
from typing import TYPE_CHECKING, Any

import anyio
from mcp import Client, StdioServerParameters

if TYPE_CHECKING:
    from mcp.server import MCPServer

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


def _check(mode: str, status: dict[str, Any], seconds: float, submitted: dict[str, Any]) -> Row:
    from wan_mcp.core.media import probe_video

    path = status.get("local_path") or ""
    row = Row(mode, status["task_id"], seconds, path, 0, 0, 0.0, False)
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
    long = DURATIONS[mode]
    if info.codec != "h264" or (info.width, info.height) != want or abs(info.duration - long) > 0.6:
        row.problem = (
            f"expected h264 {want[0]}x{want[1]} {long:g}s, "
            f"got {info.codec} {info.width}x{info.height} {info.duration:.1f}s"
        )
        return row
    row.ok = True
    return row


def _target(out: Path, inputs: Path, base_url: str, stdio: bool) -> MCPServer[Any] | StdioServerParameters:
    """What the official client connects to: the real server, built here (one cold start for the
    whole demo), or spawned as a stdio subprocess exactly as a desktop host does (``--stdio``)."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": DEMO_KEY,
        "data_dir": out / "data",
        "output_dir": out / "videos",
        "allowed_dirs": [inputs],
        "allow_private_urls": ["127.0.0.1"],
        # Simulated jobs take seconds, not minutes: poll at a matching pace.
        "poll_first_seconds": 0.5,
        "poll_interval_seconds": 0.1,
    }
    if stdio:
        keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep} | {"WAN_MCP_LOG_LEVEL": "WARNING"}
        for name, value in values.items():
            text = os.pathsep.join(map(str, value)) if name == "allowed_dirs" else value
            env["WAN_MCP_" + name.upper()] = ",".join(text) if isinstance(text, list) else str(text)
        return StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve"], env=env)
    from wan_mcp.config import settings_from_values
    from wan_mcp.server.app import build_server, quiet_third_party_loggers

    # Blind to the user's WAN_MCP_* settings (their key, budgets, tenants), as the subprocess is.
    server = build_server(settings_from_values(**values))
    quiet_third_party_loggers()
    logging.getLogger("wan_mcp").setLevel(logging.WARNING)
    return server


async def _drive(out: Path, base_url: str, stdio: bool) -> tuple[list[Row], str]:
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    image = inputs / "portrait.png"
    _make_image(image)
    rows: list[Row] = []
    async with Client(_target(out, inputs, base_url, stdio)) as client:
        tools = await client.list_tools()
        print(f"server up: {', '.join(t.name for t in tools.tools)}", file=sys.stderr)

        # The t2v goes first: the r2v waits for its file, so it is the longest path.
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
        upload = _structured(await client.call_tool("upload_image", {"path": str(image)}))
        print(
            f"uploaded {image.name} -> {upload['url']} ({upload['width']}x{upload['height']})",
            file=sys.stderr,
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
        t2v_seconds = time.monotonic() - started

        # The r2v needs only the t2v's file: submit it now, and check the i2v while it runs.
        r2v_started = time.monotonic()
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
        rows.append(_check("t2v", t2v_done, t2v_seconds, t2v))
        i2v_done = await _wait_done(client, "i2v", i2v["task_id"])
        rows.append(_check("i2v", i2v_done, time.monotonic() - started, i2v))
        r2v_done = await _wait_done(client, "r2v", r2v["task_id"])
        rows.append(_check("r2v", r2v_done, time.monotonic() - r2v_started, r2v))

        started = time.monotonic()
        film = _structured(
            await client.call_tool(
                "join_videos",
                {"task_ids": [t2v_done["task_id"], i2v_done["task_id"], r2v_done["task_id"]]},
            )
        )
        print(f"joined the three clips into the film {film['task_id']} (local, no cost)", file=sys.stderr)
        rows.append(_check("film", film, time.monotonic() - started, {}))

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


def run_demo(out: str = "wan-mcp-demo", job_seconds: float = 3.0, stdio: bool = False) -> int:
    from wan_mcp.simulator.harness import SimulatorServer

    # A fresh run folder (journal included) each time: a second run must really run, not be
    # answered from the first run's journal as a duplicate request.
    out_dir = Path(out).expanduser().resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("wan_mcp.simulator", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    how = "a stdio subprocess" if stdio else "in this process"
    print(
        f"wan-mcp demo: simulator + the real server ({how}) + the official MCP client; files in {out_dir}",
        file=sys.stderr,
    )
    with SimulatorServer(job_seconds=job_seconds, api_keys={DEMO_KEY}, seed=secrets.randbits(32)) as sim:
        sim.configure(render_on_create=True)  # each MP4 is ready before its job ends: no download waits
        print(f"simulated gateway at {sim.base_url}", file=sys.stderr)
        rows, spending = anyio.run(_drive, out_dir, sim.base_url, stdio)
        creates = sim.count(endpoint="create")
    print(_table(rows))
    print(spending)
    for r in rows:
        if not r.ok:
            print(f"FAILED {r.mode}: {r.problem}", file=sys.stderr)
    ok = all(r.ok for r in rows) and len(rows) == 4
    print(json.dumps({"ok": ok, "upstream_creates": creates}), file=sys.stderr)
    return 0 if ok else 1
