"""What the inline player reads from the server: its ui:// page, and a task's saved MP4 as a blob."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mcp import Client, MCPError

from tests.helpers import ok, simulator_settings
from wan_mcp.server.app import build_server
from wan_mcp.server.player import PLAYER_URI
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-player-resources-0123456789"


async def test_the_player_page_is_linked_from_the_task_tools_and_served_self_contained(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as sim:
        async with Client(build_server(simulator_settings(sim, tmp_path, key=KEY))) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            page = (await client.read_resource(PLAYER_URI)).contents[0]
    linked = {name for name, t in tools.items() if (t.meta or {}).get("ui", {}).get("resourceUri") == PLAYER_URI}
    assert linked == {"generate_video", "get_task_status"}
    assert page.mime_type == "text/html;profile=mcp-app"
    html = page.text  # type: ignore[union-attr]
    assert '<script type="module">' in html and 'src="http' not in html  # one file: no script to fetch
    assert sim.base_url in page.meta["ui"]["csp"]["resourceDomains"]  # type: ignore[index]


async def test_a_saved_video_is_read_whole_and_nothing_else_is(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=30.0, api_keys={KEY}) as sim:
        async with Client(build_server(simulator_settings(sim, tmp_path, key=KEY, budget_daily_usd=0))) as client:
            running = ok(await client.call_tool("generate_video", {"prompt": "a kite", "resolution": "720p"}))
            with pytest.raises(MCPError, match="no saved video yet"):
                await client.read_resource(f"video://{running['task_id']}")
            with pytest.raises(MCPError, match="among your tasks"):
                await client.read_resource("video://video_NEVERMADE")
            sim.engine.finish_tasks_now()
            done = ok(await client.call_tool("get_task_status", {"task_id": running["task_id"], "wait_seconds": 30}))
            blob = (await client.read_resource(f"video://{running['task_id']}")).contents[0]
    assert blob.mime_type == "video/mp4"
    assert base64.b64decode(blob.blob) == Path(done["local_path"]).read_bytes()  # type: ignore[union-attr]
