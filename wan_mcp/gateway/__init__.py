"""The boundary to the upstream HTTP API (ToAPIs today; the Protocol leaves room for DashScope).

Never imports ``wan_mcp.core``, ``wan_mcp.server``, ``wan_mcp.simulator`` or ``mcp``:
everything above depends on this package, not the other way round.
"""

from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client
from wan_mcp.gateway.provider import VideoProvider
from wan_mcp.gateway.wire import (
    NO_RESULT_URL,
    Balance,
    GatewayTask,
    TaskState,
    UploadedFile,
    classify_failure,
)

__all__ = [
    "NO_RESULT_URL",
    "Balance",
    "GatewayClient",
    "GatewayTask",
    "RetryPolicy",
    "TaskState",
    "UploadedFile",
    "VideoProvider",
    "classify_failure",
    "make_http_client",
]
