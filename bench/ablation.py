"""Where figure 6's extra CPU per call goes: ``python -m bench.ablation`` (about 30 s; not in the main run).

One process, the official client on the SDK's in-memory transport, client + server CPU per call
(median of 3 blocks of 2,000 calls), for five tools:

- ``ping`` on a bare ``MCPServer``;
- the same ``ping`` on an ``MCPServer`` with our middleware (``Lifecycle``), MCP Tasks, MCP Apps and
  subscriptions: what the plumbing costs;
- ``ping`` on our real server (lifespan, journal, tracker, our six tools registered);
- a tool returning ``get_task_status``'s very answer as a ready ``CallToolResult`` (no output schema):
  what a result of that size costs;
- ``get_task_status`` itself on a finished task (``download=false``, the figure's call).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import CallToolResult

from bench.call_overhead import DONE_ID, seed_finished
from wan_mcp.config import settings_from_values
from wan_mcp.server.app import build_server, quiet_third_party_loggers
from wan_mcp.server.lifecycle import Lifecycle
from wan_mcp.server.mcp_tasks import TasksExtension
from wan_mcp.server.player import apps_extension

KEY = "sk-bench-local-0123456789abcdef"
CALLS = 2_000


def _with_ping(server: MCPServer[Any]) -> MCPServer[Any]:
    @server.tool()
    async def ping() -> str:
        """Answer pong."""
        return "pong"

    return server


async def _per_call(client: Client, tool: str, args: dict[str, Any]) -> float:
    for _ in range(200):  # warm: schemas listed, validators compiled, caches filled
        await client.call_tool(tool, args)
    started = time.process_time()
    for _ in range(CALLS):
        await client.call_tool(tool, args)
    return (time.process_time() - started) / CALLS * 1e6


async def measure() -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="wan-mcp-ablation-"))
    await seed_finished(data, "http://127.0.0.1:9")  # a finished row; download=false never fetches it
    settings = settings_from_values(base_url="http://127.0.0.1:9", api_key=KEY, data_dir=data)
    quiet_third_party_loggers()
    answer: list[CallToolResult] = []
    ours = _with_ping(build_server(settings))

    @ours.tool()
    async def same_answer(ctx: Context[Any, Any]) -> CallToolResult:
        """get_task_status's answer, ready made."""
        return answer[0]

    plumbed = _with_ping(
        MCPServer(
            "plumbed",
            middleware=[Lifecycle()],
            extensions=[TasksExtension(), apps_extension(settings)],
            subscriptions=InMemorySubscriptionBus(),
        )
    )
    status = ("get_task_status", {"task_id": DONE_ID, "download": False})
    runs: dict[str, list[float]] = {}
    async with (
        Client(_with_ping(MCPServer("bare"))) as bare,
        Client(plumbed) as plumbing,
        Client(ours) as client,
    ):
        got = await client.call_tool(*status)
        answer.append(CallToolResult(content=got.content, structured_content=got.structured_content))
        cases = {
            "ping, bare MCPServer": (bare, "ping", {}),
            "ping, MCPServer + our middleware, Tasks, Apps, subscriptions": (plumbing, "ping", {}),
            "ping, our server": (client, "ping", {}),
            "get_task_status's answer, ready made (no output schema)": (client, "same_answer", {}),
            "get_task_status, finished task, download=false": (client, *status),
        }
        for _ in range(3):  # alternating blocks, so drift hits every case alike
            for name, (who, tool, args) in cases.items():
                runs.setdefault(name, []).append(await _per_call(who, tool, args))
    return {name: statistics.median(values) for name, values in runs.items()}


def main() -> int:
    for name, micros in anyio.run(measure).items():
        print(f"{micros:7.0f} us  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
