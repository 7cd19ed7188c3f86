"""Safe by default (issue 9, "Files"): with no configuration, the server reads pictures from one
inbox folder it creates, plus its own output folder, and nothing else of the user's home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from tests.helpers import ok, text
from wan_mcp.config import load_settings
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-safe-0123456789abcdef"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=600, api_keys={KEY}) as server:
        yield server


async def test_the_default_reads_only_the_inbox_it_creates(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_PICTURES_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    passport = home / "Documents" / "passport.jpg"
    Image.new("RGB", (800, 600), (1, 2, 3)).save(passport)
    settings = load_settings(base_url=sim.base_url, api_key=KEY, allow_private_urls=["127.0.0.1"])
    inbox = settings.resolved_inbox_dir
    assert not inbox.exists() and inbox.is_relative_to(home)
    async with Client(build_server(settings)) as client:
        assert inbox.is_dir()  # made on first run
        refused = await client.call_tool("upload_image", {"path": str(passport)})
        assert refused.is_error and str(inbox) in text(refused), text(refused)
        Image.new("RGB", (800, 600), (200, 100, 0)).save(inbox / "cat.png")
        assert ok(await client.call_tool("upload_image", {"path": str(inbox / "cat.png")}))["url"]
        assert client.instructions is not None and str(inbox) in client.instructions  # the agent is told where
    assert sim.count(endpoint="upload_image") == 1
