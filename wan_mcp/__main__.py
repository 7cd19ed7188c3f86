"""Lets ``python -m wan_mcp`` behave exactly like the ``wan-mcp`` console script."""

from wan_mcp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
