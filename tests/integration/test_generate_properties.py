"""Property test at the tool boundary: generated arguments thrown at `generate_video`.

Every call is either accepted and sent to the gateway exactly once (or recognised as a
duplicate of a call moments ago and sent zero times), or rejected with a message naming a
field, and nothing is created upstream. The generators and the contract oracle are the
ones the request-level property test uses; here the real server, the real client and the
simulator (counting creates) sit in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, event, given, settings
from mcp import Client

from tests.unit.test_request_properties import ARGUMENTS, any_arguments, assert_gateway_accepts, valid_arguments
from wan_mcp.config import load_settings
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

KEY = "sk-prop-SECRET-0123456789abcdef"


class ToolHarness:
    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: Client, sim: SimulatorServer) -> None:
        self.portal, self.client, self.sim = portal, client, sim

    def call(self, args: dict[str, Any]) -> Any:
        return self.portal.call(self.client.call_tool, "generate_video", args)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolHarness]:
    tmp: Path = tmp_path_factory.mktemp("props")
    (tmp / "in").mkdir()
    with SimulatorServer(job_seconds=30, api_keys={KEY}) as sim:
        settings_ = load_settings(
            base_url=sim.base_url, api_key=KEY, data_dir=tmp / "data", output_dir=tmp / "videos",
            allowed_dirs=[tmp / "in"], allow_private_urls=["127.0.0.1"], retry_total_seconds=5,
        )  # fmt: skip
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(Client(build_server(settings_))) as client,
        ):
            yield ToolHarness(portal, client, sim)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=any_arguments())
def test_generate_video_either_sends_once_or_explains_and_sends_nothing(
    harness: ToolHarness, case: tuple[dict[str, Any], set[str]]
) -> None:
    check_one_call(harness, case[0])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=valid_arguments())
def test_valid_requests_reach_the_gateway_exactly_once(harness: ToolHarness, args: dict[str, Any]) -> None:
    """Requests the contract allows are sent, unless their media fails the file boundary: a local file
    outside the allowed folders, or data: bytes that are no real image (the generators' stand-ins)."""
    accepted = check_one_call(harness, args)
    local_source = any(
        isinstance(v, str) and not v.startswith(("http://", "https://"))
        for v in [args.get("image"), *(args.get("reference_videos") or [])]
    )
    assert accepted or local_source, f"a valid request with no local file was rejected: {args}"


def check_one_call(harness: ToolHarness, args: dict[str, Any]) -> bool:
    before = harness.sim.count(endpoint="create")
    result = harness.call(args)
    created = harness.sim.count(endpoint="create") - before
    if result.is_error:
        event("rejected")
        text = result.content[0].text
        assert created == 0, f"rejected but created upstream: {text}"
        named = [name for name in (*ARGUMENTS, *args) if f"field '{name}'" in text or f"field '{name}[" in text]
        assert named, f"rejection names no field: {text}"
        assert "Next:" in text, text
        return False
    data = result.structured_content
    if data.get("deduplicated"):
        event("deduplicated")
        assert created == 0
    else:
        event("accepted")
        assert created == 1
    assert_gateway_accepts(data["sent"])
    assert data["mode"] in ("t2v", "i2v", "r2v")
    return True
