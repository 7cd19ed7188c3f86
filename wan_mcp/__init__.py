"""wan-mcp: an MCP server for Wan 2.6 video generation through the ToAPIs gateway."""

__version__ = "0.1.0"
