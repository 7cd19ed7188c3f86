"""The inline player (MCP App) in a real browser: headless Chromium from the distribution's packages,
driven by Playwright through its executable path.

The host is a small page built with the official host side (``AppBridge``, ``ui/src/test-host.js``):
it renders the player page the real server serves (``ui://wan-mcp/player.html``) in a sandboxed
iframe and relays the player's tool calls and resource reads to this test, where the official MCP
client talks to the real ``wan-mcp serve`` process (stdio) on the simulator. The test sees progress
move, the video element play (its ``currentTime`` advances), the text result intact, and "New take"
make exactly one more ``generate_video`` call. A screenshot is kept with the e2e logs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.e2e.conftest import Dirs, server_env, stdio_params
from tests.helpers import ok, text
from wan_mcp.server.player import PLAYER_URI
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "ui"
KEY = "sk-player-browser-0123456789"
REQUEST = {"prompt": "a lighthouse beam sweeping over a stormy sea", "resolution": "720p", "duration": 5}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium: install the distribution's chromium package (.ci/run does)")


def _host_script(folder: Path) -> Path:
    """The host page's script, built from ui/src/test-host.js with the pinned packages (``npm ci`` in ui/
    first) into this test's own folder (tests running side by side never share the file)."""
    if not (UI / "node_modules" / "@modelcontextprotocol" / "ext-apps").is_dir() or not shutil.which("node"):
        pytest.skip("ui/ packages not installed: run `npm ci` in ui/ (.ci/run does)")
    out = folder / "test-host.js"
    subprocess.run(["node", "build.mjs", "--host", str(out)], cwd=UI, check=True, capture_output=True, timeout=120)
    return out


def _dump(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("source", ["gateway-url", "saved-file"])
async def test_the_player_follows_the_job_plays_the_video_and_makes_one_new_take(
    tmp_path: Path, e2e_logs: Path, source: str
) -> None:
    """``saved-file``: the gateway's URL expires within the minute (it lives 30 s here: long enough for
    the server to save the file, too short for the player to start on it), so the player reads the
    saved MP4 through ``video://`` (resources/read, a blob) instead. (A 1 s life once raced the
    server's own download on a loaded machine: no file, nothing to play.)"""
    from playwright.async_api import async_playwright

    chromium = _chromium()
    host_js = _host_script(tmp_path).read_text()
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    dirs.inputs.mkdir()
    with SimulatorServer(job_seconds=4.0, api_keys={KEY}) as sim:
        sim.configure(render_on_create=True, url_ttl_seconds=30 if source == "saved-file" else 86_400)
        env = server_env(sim, dirs, WAN_MCP_API_KEY=KEY, WAN_MCP_LOG_LEVEL="WARNING")
        async with Client(stdio_params(env)) as client, async_playwright() as pw:
            html = (await client.read_resource(PLAYER_URI)).contents[0].text  # type: ignore[union-attr]
            first = await client.call_tool("generate_video", REQUEST)
            made = ok(first)
            assert made["status"] in ("queued", "in_progress") and made["task_id"] in text(first)

            async def call_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                return _dump(await client.call_tool(name, arguments))

            reads: list[str] = []

            async def read_resource(uri: str) -> dict[str, Any]:
                reads.append(uri)
                return _dump(await client.read_resource(uri))

            browser = await pw.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )
            try:
                page = await browser.new_page(viewport={"width": 700, "height": 640})
                await page.expose_function("hostCallTool", call_tool)
                await page.expose_function("hostReadResource", read_resource)
                await page.set_content("<!doctype html><html><body></body></html>")
                await page.add_script_tag(content=host_js)
                await page.evaluate(
                    "([html, args, result]) => startHost(html, args, result)", [html, REQUEST, _dump(first)]
                )
                view = page.frame_locator("#view")
                frame = next(f for f in page.frames if f != page.main_frame)

                # Progress moves while the job runs (each answer of get_task_status redraws it).
                seen: list[str] = []
                with anyio.fail_after(60):
                    while "completed" not in (status := await view.locator("#status").inner_text()):
                        if status not in seen:
                            seen.append(status)
                        await anyio.sleep(0.1)
                assert any("%" in s for s in seen), seen

                # The video plays inline: its clock advances.
                with anyio.fail_after(60):
                    while await frame.evaluate("document.getElementById('video').currentTime") < 0.5:
                        await anyio.sleep(0.1)
                blob_reads = [u for u in reads if u.startswith("video://")]
                assert blob_reads == ([f"video://{made['task_id']}"] if source == "saved-file" else []), reads
                shot = e2e_logs / f"player-{source}.png"
                await page.screenshot(path=str(shot))
                print(f"\nplayer screenshot: {shot}")

                # "New take": the same request with a new seed, through the host's tool call: one job more.
                creates = sim.count(endpoint="create")
                before = list(await page.evaluate("window.calls"))
                await view.locator("#take").click()
                with anyio.fail_after(30):
                    while sim.count(endpoint="create") == creates:
                        await anyio.sleep(0.1)
                await anyio.sleep(1.0)  # (a second call would have come by now)
                after = list(await page.evaluate("window.calls"))
                assert after[len(before) :].count("generate_video") == 1, after
                assert sim.count(endpoint="create") == creates + 1
            finally:
                await browser.close()
