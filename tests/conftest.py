"""Shared fixtures: the anyio backend, and isolation from the developer's own settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's WAN_MCP_* env or config file."""
    for name in list(os.environ):
        if name.startswith("WAN_MCP_"):
            monkeypatch.delenv(name, raising=False)
