"""wan-mcp benchmark suite: ``python -m bench`` (see BENCHMARKS.md). Not part of the installed package."""
