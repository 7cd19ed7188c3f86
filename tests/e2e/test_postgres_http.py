"""A real server process on the PostgreSQL journal, over streamable HTTP: it works, and /readyz tells
a load balancer when its database stops answering (while /healthz, the process itself, stays up)."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import Dirs, connect, server_env, start_http_server
from tests.helpers import ok
from tests.pg import PostgresServer
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
TOKEN = f"tok-pg-{secrets.token_hex(16)}"


async def test_a_server_on_postgres_serves_and_readyz_follows_the_database(
    sim: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    try:
        own_db = PostgresServer()  # its own server, to stop it under the running wan-mcp
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    dirs.inputs.mkdir(parents=True)
    with own_db:
        env = server_env(sim, dirs, WAN_MCP_HTTP_TOKEN=TOKEN, WAN_MCP_DATABASE_URL=own_db.schema_url())
        server = start_http_server(env, "http", e2e_logs)
        try:
            async with connect(server, TOKEN) as client:
                made = ok(await client.call_tool("generate_video", {"prompt": "a kite", "resolution": "720p"}))
                done = ok(await client.call_tool("get_task_status", {"task_id": made["task_id"], "wait_seconds": 30}))
            assert done["status"] == "completed" and Path(done["local_path"]).is_file()
            assert httpx2.get(server.base + "/readyz", timeout=10).json() == {"ok": True}
            own_db.__exit__(None, None, None)  # the database goes away
            gone = httpx2.get(server.base + "/readyz", timeout=10)
            assert gone.status_code == 503 and gone.json() == {"ok": False}
            assert httpx2.get(server.base + "/healthz", timeout=5).status_code == 200
        finally:
            server.stop()
