"""The four tools through the official client (in-memory), against the simulator over loopback.

In-memory keeps these fast; the same flows over real stdio/HTTP live in tests/e2e.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import ok as data
from tests.helpers import simulator_settings, text
from wan_mcp.config import Settings, load_settings
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-int-SECRET-0123456789abcdef"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=0.6, api_keys={KEY}) as server:
        yield server


@pytest.fixture
def fresh(sim: SimulatorServer) -> SimulatorServer:
    sim.clear_faults()
    sim.clear_requests()
    sim.configure(
        job_seconds=0.6,
        status_style="queued",
        create_envelope="task",
        complete_without_url=False,
        fail_prompts_containing=None,
    )
    return sim


def make_settings(sim: SimulatorServer, tmp: Path, **kw: Any) -> Settings:
    return simulator_settings(sim, tmp, key=KEY, **{"retry_total_seconds": 5, **kw})


@pytest.fixture
async def client(fresh: SimulatorServer, tmp_path: Path) -> AsyncIterator[Client]:
    async with Client(build_server(make_settings(fresh, tmp_path))) as c:
        yield c


async def test_generate_with_wait_returns_the_downloaded_video(client: Client, fresh: SimulatorServer) -> None:
    result = await client.call_tool(
        "generate_video", {"prompt": "a lighthouse", "resolution": "720p", "wait_seconds": 20}
    )
    done = data(result)
    assert done["status"] == "completed" and Path(done["local_path"]).is_file()
    assert done["width"] == 1280 and done["height"] == 720 and done["has_audio"] is True
    kinds = [c.type for c in result.content]
    assert kinds[0] == "text" and "resource_link" in kinds
    assert fresh.count(endpoint="create") == 1


async def test_identical_calls_are_deduplicated(client: Client, fresh: SimulatorServer) -> None:
    args = {"prompt": "the same thing twice", "resolution": "720p", "seed": 3}
    first = data(await client.call_tool("generate_video", args))
    second = data(await client.call_tool("generate_video", args))
    assert second["task_id"] == first["task_id"] and second["deduplicated"] is True
    third = data(await client.call_tool("generate_video", {**args, "seed": 4}))
    assert third["task_id"] != first["task_id"]
    assert fresh.count(endpoint="create") == 2


async def test_many_waiters_share_one_poller(client: Client, fresh: SimulatorServer) -> None:
    fresh.configure(job_seconds=2.0)
    task = data(await client.call_tool("generate_video", {"prompt": "crowd", "resolution": "720p"}))
    results: list[dict[str, Any]] = []

    async def waiter() -> None:
        results.append(
            data(
                await client.call_tool(
                    "get_task_status", {"task_id": task["task_id"], "wait_seconds": 20, "download": False}
                )
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(waiter)
    assert all(r["status"] == "completed" for r in results) and len(results) == 20
    # 2 s job, ~0.2 s interval: about ten polls for everyone, not two hundred.
    assert fresh.count(endpoint="status") <= 20, fresh.count(endpoint="status")


async def test_dropped_create_response_is_reconciled_to_the_one_task(client: Client, fresh: SimulatorServer) -> None:
    before = {t["id"] for t in fresh.tasks()}
    fresh.add_fault("create", "drop_response")
    task = data(await client.call_tool("generate_video", {"prompt": "lost reply", "resolution": "720p"}))
    created = [t["id"] for t in fresh.tasks() if t["id"] not in before]
    assert created == [task["task_id"]] and fresh.count(endpoint="create") == 1


async def test_ambiguous_create_failure_keeps_an_unconfirmed_row_and_never_reposts(
    client: Client, fresh: SimulatorServer
) -> None:
    before = len(fresh.tasks())
    fresh.add_fault("create", "http_502")
    result = await client.call_tool("generate_video", {"prompt": "gateway hiccup", "resolution": "720p"})
    assert result.is_error
    msg = text(result)
    assert "submission_unconfirmed" in msg and "task_id=wanmcp_" in msg and "do NOT resubmit" in msg
    assert fresh.count(endpoint="create") == 1 and len(fresh.tasks()) == before
    listed = data(await client.call_tool("list_tasks", {"status": "unconfirmed"}))
    assert len(listed["tasks"]) == 1


async def test_payment_error_is_not_retried_and_says_what_to_do(client: Client, fresh: SimulatorServer) -> None:
    fresh.configure(balance=0)
    try:
        result = await client.call_tool("generate_video", {"prompt": "no money", "resolution": "720p"})
    finally:
        fresh.configure(balance=100)
    assert result.is_error and "[payment]" in text(result) and "Next:" in text(result)
    assert fresh.count(endpoint="create") == 1
    listed = data(await client.call_tool("list_tasks", {"status": "rejected"}))
    assert len(listed["tasks"]) == 1


async def test_flaky_status_reads_recover(client: Client, fresh: SimulatorServer) -> None:
    task = data(await client.call_tool("generate_video", {"prompt": "flaky", "resolution": "720p"}))
    fresh.add_fault("status", "http_503", times=2)
    fresh.add_fault("status", "http_429", times=1, retry_after=1)
    done = data(await client.call_tool("get_task_status", {"task_id": task["task_id"], "wait_seconds": 20}))
    assert done["status"] == "completed"


async def test_task_resource_and_prompt(client: Client) -> None:
    task = data(await client.call_tool("generate_video", {"prompt": "resource", "resolution": "720p"}))
    read = await client.read_resource(f"task://{task['task_id']}")
    assert task["task_id"] in read.contents[0].text  # type: ignore[union-attr]
    prompt = await client.get_prompt("wan_video_prompt", {"subject": "a fox in snow"})
    assert "fox in snow" in prompt.messages[0].content.text  # type: ignore[union-attr]


async def test_upload_image_from_data_url_fixes_and_reports(client: Client, fresh: SimulatorServer) -> None:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (800, 600), (10, 200, 30, 128)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    up = data(await client.call_tool("upload_image", {"data": url}))
    assert up["url"].startswith(fresh.base_url) and up["changes"], up
    bad = await client.call_tool("upload_image", {"path": "/x.png", "data": url})
    assert bad.is_error and "exactly one" in text(bad)


async def test_missing_key_is_explained_before_any_side_effect(tmp_path: Path) -> None:
    """No key: the agent is told how to fix it, and nothing is uploaded or journaled."""
    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "a.png"
    from PIL import Image

    Image.new("RGB", (640, 640), (1, 2, 3)).save(image)
    settings = load_settings(data_dir=tmp_path / "data", allowed_dirs=[tmp_path / "in"])
    async with Client(build_server(settings)) as c:
        for name, args in (("generate_video", {"prompt": "a cat", "resolution": "720p"}),
                           ("generate_video", {"prompt": "a cat", "image": str(image)}),
                           ("upload_image", {"path": str(image)})):  # fmt: skip
            result = await c.call_tool(name, args)
            assert result.is_error and "[config]" in text(result) and "WAN_MCP_API_KEY" in text(result)
        assert data(await c.call_tool("list_tasks", {}))["tasks"] == []
