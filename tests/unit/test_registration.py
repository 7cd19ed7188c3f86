"""Pins the SDK behaviour that ``server/registration.py`` relies on.

``make_tool`` sets three attributes of the SDK's ``Tool``/``FuncMetadata`` (the argument
model, the output model/schema, the published parameters). If an SDK upgrade renames or
stops honouring one of them, a test here fails and names it.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

from wan_mcp.server.registration import make_tool

pytestmark = pytest.mark.anyio


class Echo(BaseModel):
    received: dict[str, Any]


async def echo(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text="ok")], structured_content={"received": arguments})


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
OUT = {"type": "object", "properties": {"received": {"type": "object"}}, "required": ["received"]}


def _server() -> MCPServer[Any]:
    tool = make_tool(
        echo,
        name="echo",
        title="Echo",
        description="Echo the arguments.",
        annotations=ToolAnnotations(read_only_hint=True),
        input_schema=SCHEMA,
        output_schema=OUT,
        output_model=Echo,
    )
    return MCPServer("pin", tools=[tool])


async def test_the_published_schemas_are_exactly_ours() -> None:
    async with Client(_server()) as client:
        (tool,) = (await client.list_tools()).tools
    assert tool.input_schema == SCHEMA and tool.output_schema == OUT and tool.title == "Echo"


async def test_the_handler_receives_the_raw_arguments_unvalidated_and_whole() -> None:
    # Neither the SDK nor pydantic may coerce, drop or reject anything: that is our checker's job.
    sent = {"a": "not an integer", "unknown": [1, {"x": None}], "wait_for_previous": True}
    async with Client(_server()) as client:
        result = await client.call_tool("echo", sent)
    assert not result.is_error
    assert result.structured_content == {"received": sent}


async def test_an_error_result_is_passed_through_with_its_structured_content() -> None:
    async def fails(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
        return CallToolResult(
            content=[TextContent(type="text", text="[x] bad.")],
            structured_content={"error": {"code": "x"}},
            is_error=True,
        )

    tool = make_tool(fails, name="fails", title="F", description="F.", annotations=ToolAnnotations(),
                     input_schema=SCHEMA, output_schema=OUT, output_model=Echo)  # fmt: skip
    async with Client(MCPServer("pin", tools=[tool])) as client:
        result = await client.call_tool("fails", {})
    assert result.is_error and result.structured_content == {"error": {"code": "x"}}  # not validated against OUT


async def test_serve_listen_replaces_the_sdks_listen_handler_and_ours_still_serves_plain_kinds() -> None:
    """serve_listen reaches MCPServer's lowlevel server (one private attribute): pin that it takes effect,
    and that a listen without taskIds is still the SDK's own (acknowledged, then closed by the client)."""
    from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler

    from wan_mcp.server.registration import serve_listen

    bus = InMemorySubscriptionBus()
    server = MCPServer("pin", subscriptions=bus)
    seen: list[str] = []

    class Spy(ListenHandler):
        async def __call__(self, ctx: Any, params: Any) -> Any:
            seen.append("ours")
            return await super().__call__(ctx, params)

    serve_listen(server, Spy(bus))
    async with Client(server) as client, client.listen(tools_list_changed=True) as sub:
        assert sub.honored.tools_list_changed is True
    assert seen == ["ours"]
