"""Bounded work for bounded input (issue 9, "Media"), measured on the real server process.

Six agents' uploads at once, each a small PNG that declares ~39 megapixels, once took the server
to 6.2 GB: now one image is decoded at a time, non-JPEG images above 40 MP are refused
from their header, and large JPEGs decode at reduced scale. The peak RSS of the server process
(VmHWM) is the outcome checked, with the issue's 500 MB target as the bound.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import anyio
import pytest
from mcp import Client
from PIL import Image

from tests.e2e.conftest import Dirs, server_env, tapped_stdio_params
from tests.helpers import ok, text
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _png_data_url(side: int, shade: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 90, 160)).save(buf, "PNG")
    assert len(buf.getvalue()) < 400_000
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def test_six_parallel_large_uploads_stay_under_500_mib(fresh_sim: SimulatorServer, tmp_path: Path) -> None:
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    dirs.inputs.mkdir()
    params, tap = tapped_stdio_params(server_env(fresh_sim, dirs), tmp_path / "tap")
    images = [_png_data_url(6200, 20 * i) for i in range(6)]  # 38.4 MP each
    bomb = _png_data_url(9000, 7)  # 81 MP: refused from its header
    results: list[dict[str, object]] = []
    async with Client(params) as client:

        async def upload(data: str) -> None:
            results.append(ok(await client.call_tool("upload_image", {"data": data})))

        async with anyio.create_task_group() as tg:
            for data in images:
                tg.start_soon(upload, data)
        refused = await client.call_tool("upload_image", {"data": bomb})
        peak = _peak_rss_mib(tap.pid_value())
    assert len(results) == 6 and all(r["width"] == 2000 for r in results)
    assert refused.is_error and "megapixels" in text(refused)
    print(f"server peak RSS for six parallel 38 MP uploads: {peak:.0f} MiB")
    assert peak < 500, peak
