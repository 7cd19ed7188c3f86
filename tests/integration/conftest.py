"""Integration fixtures: the anyio backend and a fresh loopback simulator per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wan_mcp.simulator.harness import SimulatorServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A simulator on a free loopback port, any Bearer key accepted, 0.3 s jobs."""
    with SimulatorServer(job_seconds=0.3, seed=0) as sim:
        yield sim
