"""What many tests need, in one place: reading tool results, simulator-backed settings, and a
gateway on a virtual clock (the simulator's own engine and routes, reached in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from pydantic import SecretStr

from wan_mcp.config import Settings, load_settings
from wan_mcp.core.clock import VirtualClock
from wan_mcp.gateway.client import GatewayClient, RetryPolicy
from wan_mcp.simulator.app import build_app
from wan_mcp.simulator.engine import Engine
from wan_mcp.simulator.harness import SimulatorServer


def text(result: Any) -> str:
    """Every text block of a tool result, joined."""
    return " ".join(getattr(c, "text", "") for c in result.content)


def ok(result: Any) -> dict[str, Any]:
    """The structured content of a successful tool result (fails the test with the text otherwise)."""
    assert not result.is_error, text(result)
    out: dict[str, Any] = result.structured_content
    return out


def error(result: Any) -> dict[str, Any]:
    """The structured content of an error result (fails the test if the call succeeded)."""
    assert result.is_error, text(result)
    out: dict[str, Any] = result.structured_content or {}
    return out


def files_of(root: Path, pattern: str = "*") -> dict[Path, bytes]:
    """Every file under ``root`` matching ``pattern``, read while a live server may change them.

    A server renames finished downloads into place and, on the last journal connection's close,
    folds the SQLite WAL into the main file and deletes it: a file listed may be gone when read.
    Its bytes are then in another file, so the whole listing is read again.
    """
    for _ in range(50):
        try:
            return {p: p.read_bytes() for p in sorted(root.rglob(pattern)) if p.is_file()}
        except FileNotFoundError:
            continue
    raise AssertionError(f"the files under {root} kept vanishing while being read")


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


VIRTUAL_KEY = "sk-virtual-0123456789abcdef"
VIRTUAL_BASE = "http://gateway.invalid"


@dataclass
class VirtualGateway:
    """The simulator's engine on a :class:`VirtualClock`, served in-process (no socket, no thread)."""

    clock: VirtualClock
    engine: Engine
    client: GatewayClient

    def status_times(self) -> list[float]:
        """Virtual times at which status requests reached the gateway."""
        return [r.at for r in self.engine.requests("status")]


@asynccontextmanager
async def virtual_gateway(
    *, job_seconds: float = 60.0, retry: RetryPolicy | None = None
) -> AsyncIterator[VirtualGateway]:
    clock = VirtualClock()
    engine = Engine(api_keys={VIRTUAL_KEY}, job_seconds=job_seconds, clock=clock.monotonic, wall_clock=clock.time)
    engine.base_url = VIRTUAL_BASE
    transport = httpx2.ASGITransport(app=build_app(engine))
    async with httpx2.AsyncClient(transport=transport, base_url=VIRTUAL_BASE) as http:
        client = GatewayClient(
            http,
            base_url=VIRTUAL_BASE,
            api_key=SecretStr(VIRTUAL_KEY),
            retry=retry or RetryPolicy(attempts=1, total_seconds=1.0),
            sleep=clock.sleep,
            clock=clock.monotonic,
        )
        yield VirtualGateway(clock, engine, client)
