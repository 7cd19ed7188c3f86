"""Smoke test against the REAL ToAPIs gateway. Skipped unless WAN_MCP_REAL_API_KEY is set.

The only test that leaves loopback, and only when asked to. By default it makes one cheap
authenticated call (balance). With WAN_MCP_REAL_SPEND=1 it also generates one 720p 5 s
text-to-video (billed) through the real server and checks the MP4.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from pydantic import SecretStr

from wan_mcp.config import load_settings
from wan_mcp.core.media import probe_video
from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client

REAL_KEY = os.environ.get("WAN_MCP_REAL_API_KEY", "")
REAL_BASE = os.environ.get("WAN_MCP_REAL_BASE_URL", "https://toapis.com")
SPEND = os.environ.get("WAN_MCP_REAL_SPEND") == "1"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.real_gateway,
    pytest.mark.skipif(not REAL_KEY, reason="set WAN_MCP_REAL_API_KEY to run against the real gateway"),
]


async def test_real_gateway_accepts_the_key(tmp_path: Path) -> None:
    settings = load_settings(base_url=REAL_BASE, api_key=REAL_KEY, data_dir=tmp_path)
    async with make_http_client(settings) as http:
        client = GatewayClient(http, base_url=REAL_BASE, api_key=SecretStr(REAL_KEY), retry=RetryPolicy())
        balance = await client.get_balance()
    assert balance.unlimited or balance.remain_balance is not None


@pytest.mark.skipif(not SPEND, reason="set WAN_MCP_REAL_SPEND=1 to spend credits on one 720p 5 s video")
async def test_real_text_to_video_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"WAN_MCP_API_KEY": REAL_KEY, "WAN_MCP_BASE_URL": REAL_BASE, "WAN_MCP_DATA_DIR": str(tmp_path)})
    params = StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve"], env=env)
    async with Client(params) as client:
        task = await client.call_tool("generate_video", {"prompt": "a paper boat on a pond", "resolution": "720p"})
        assert not task.is_error, task.content[0].text  # type: ignore[union-attr]
        task_id = task.structured_content["task_id"]  # type: ignore[index]
        for _ in range(40):  # up to ~30 min
            status = await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 45})
            data = status.structured_content or {}
            if data.get("status") in ("completed", "failed"):
                break
    assert data["status"] == "completed", data
    info = probe_video(Path(data["local_path"]))
    assert info is not None and info.codec == "h264" and (info.width, info.height) == (1280, 720)
