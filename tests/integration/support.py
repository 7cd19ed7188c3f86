"""Settings for a server under test, pointed at a simulator on loopback (shared by integration tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wan_mcp.config import Settings, load_settings
from wan_mcp.simulator.harness import SimulatorServer


def simulator_settings(sim: SimulatorServer, tmp: Path, *, key: str, **overrides: Any) -> Settings:
    """Data, videos and the one readable folder (``tmp/in``) under ``tmp``; fast polling; loopback allowed."""
    (tmp / "in").mkdir(exist_ok=True)
    return load_settings(
        **{
            "base_url": sim.base_url,
            "api_key": key,
            "data_dir": tmp / "data",
            "output_dir": tmp / "videos",
            "allowed_dirs": [tmp / "in"],
            "allow_private_urls": ["127.0.0.1"],
            "poll_first_seconds": 0.1,
            "poll_interval_seconds": 0.2,
            **overrides,
        }
    )
