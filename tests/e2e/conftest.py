"""The real server process, spawned over stdio, driven by the official MCP client.

Upstream is the simulator on loopback; nothing here talks to any other address.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import StdioServerParameters

from wan_mcp.simulator.harness import SimulatorServer

KEY = "sk-e2e-SECRET-0123456789abcdef"


@dataclass(frozen=True)
class Dirs:
    root: Path
    inputs: Path
    data: Path
    videos: Path


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as server:
        yield server


@pytest.fixture
def fresh_sim(sim: SimulatorServer) -> SimulatorServer:
    sim.clear_faults()
    sim.clear_requests()
    sim.configure(
        status_style="queued", complete_without_url=False, fail_prompts_containing=None, job_seconds=1.0
    )
    return sim


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    d = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    d.inputs.mkdir()
    return d


def server_env(sim: SimulatorServer, dirs: Dirs, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(
        {
            "WAN_MCP_BASE_URL": sim.base_url,
            "WAN_MCP_API_KEY": KEY,
            "WAN_MCP_DATA_DIR": str(dirs.data),
            "WAN_MCP_OUTPUT_DIR": str(dirs.videos),
            "WAN_MCP_ALLOWED_DIRS": str(dirs.inputs),
            "WAN_MCP_ALLOW_PRIVATE_URLS": "127.0.0.1",
            "WAN_MCP_POLL_FIRST_SECONDS": "0.2",
            "WAN_MCP_POLL_INTERVAL_SECONDS": "0.3",
            "WAN_MCP_LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


def stdio_params(env: dict[str, str], pidfile: Path | None = None) -> StdioServerParameters:
    if pidfile is None:
        return StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve"], env=env)
    # Through a shell that records its pid and then becomes the server, so a test can kill -9 it.
    script = f'echo $$ > "{pidfile}"; exec "{sys.executable}" -m wan_mcp serve'
    return StdioServerParameters(command="/bin/sh", args=["-c", script], env=env)
