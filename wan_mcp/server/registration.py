"""The one adapter onto the SDK's tool internals.

Why: our tools receive the raw argument object (so every mistake is worded by
:mod:`wan_mcp.core.arguments`, not by a pydantic dump) and publish hand-made compact schemas
(every byte of tools/list sits in the agent's context). ``MCPServer`` has no public switch
for either, so :func:`make_tool` sets three attributes of the SDK's ``Tool`` and its
``FuncMetadata``. ``tests/unit/test_registration.py`` pins exactly the SDK behaviour relied
on here; if an SDK upgrade breaks it, that test says which attribute moved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import UnionType
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.types import CallToolResult, InputRequiredResult, SubscriptionsListenRequestParams, ToolAnnotations
from pydantic import BaseModel, ConfigDict

__all__ = ["ToolFn", "make_tool", "serve_listen"]

#: A tool handler: the raw argument object and the request context in, a complete result out
#: (or, on MCP 2026-07-28, a request for the user's input after which the client retries).
ToolFn = Callable[[dict[str, Any], Context[Any, Any]], Awaitable[CallToolResult | InputRequiredResult]]


class _RawArguments(ArgModelBase):
    """Accepts any argument object and hands it over whole, so validation is ours."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"arguments": dict(self.model_extra or {})}


def make_tool(
    fn: ToolFn,
    *,
    name: str,
    title: str,
    description: str,
    annotations: ToolAnnotations,
    input_schema: dict[str, Any],
    output_schema: dict[str, Any],
    output_model: type[BaseModel] | UnionType,
    meta: dict[str, Any] | None = None,
) -> Tool:
    """An SDK ``Tool`` that calls ``fn(arguments, ctx)`` with the arguments exactly as sent.

    ``output_model`` validates every successful result's structured content (the SDK runs it
    through a ``TypeAdapter``), so a union of models serves a tool with two answer shapes.
    """
    tool = Tool.from_function(
        fn,
        name=name,
        title=title,
        description=description,
        annotations=annotations,
        structured_output=False,
        meta=meta,
    )
    tool.fn_metadata.arg_model = _RawArguments
    tool.fn_metadata.output_model = output_model
    tool.fn_metadata.output_schema = output_schema
    tool.parameters = input_schema
    return tool


def serve_listen(server: MCPServer[Any], handler: Any) -> None:
    """Serve ``subscriptions/listen`` with ``handler`` (a subclass of the SDK's ``ListenHandler``).

    ``MCPServer`` builds its own handler with no hook for extension filters (the tasks extension's
    ``taskIds``); the lowlevel server's public ``add_request_handler`` replaces it, reached through the
    one private attribute this module depends on.
    """
    server._lowlevel_server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, handler)
