"""generate_video as a background job (MCP Tasks, SEP-2663), driven by the official client with a
client-side tasks extension (tests/tasks_client.py), against the simulator over loopback.

A client that declares the extension gets a task handle as soon as the job is submitted and the
final result through tasks/get; a client that does not (or a 2025-era connection) gets exactly
today's answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.types import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY

from tests.helpers import error, ok, simulator_settings
from tests.tasks_client import CreateTaskResult, TasksClient, cancel_task, get_task, listen_tasks, update_task
from wan_mcp.server.app import build_server
from wan_mcp.server.mcp_tasks import Handles
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-tasks-test-0123456789"
REQUEST = {"prompt": "a heron lifting off a misty lake", "resolution": "720p"}


def _settings(sim: SimulatorServer, tmp_path: Path, **extra: Any) -> Any:
    return simulator_settings(sim, tmp_path, key=KEY, budget_daily_usd=0, **extra)


async def test_a_declaring_client_gets_a_handle_at_once_and_the_file_through_tasks_get(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=2.0, api_keys={KEY}) as sim:
        tasks = TasksClient()
        async with Client(build_server(_settings(sim, tmp_path)), extensions=[tasks]) as client:
            # wait_seconds is the agent's; a background job answers at once whatever it says.
            done = ok(await client.call_tool("generate_video", {**REQUEST, "wait_seconds": 30}))
        creates = [r for r in sim.requests() if r.method == "POST" and r.path.endswith("/generations")]
    assert len(creates) == 1  # one job, however many polls
    [created] = tasks.created
    assert created.status == "working" and created.task_id.startswith("wt1.")
    assert created.ttl_ms and created.ttl_ms >= 3600_000 and (created.poll_interval_ms or 0) >= 1000
    assert created.task_id != done["task_id"] and done["task_id"] in (created.status_message or "")
    assert done["status"] == "completed" and Path(done["local_path"]).is_file()  # the file, as get_task_status
    assert [p["status"] for p in tasks.polls][-1] == "completed"
    assert all(p["taskId"] == created.task_id and p["resultType"] == "complete" for p in tasks.polls)


async def test_the_handle_resolves_the_moment_it_is_returned(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=30.0, api_keys={KEY}) as sim:
        tasks = TasksClient()
        async with Client(build_server(_settings(sim, tmp_path)), extensions=[tasks]) as client:
            raw = await client.session.call_tool("generate_video", REQUEST, allow_claimed=True)
            assert isinstance(raw, CreateTaskResult)
            now = await get_task(client.session, raw.task_id)  # no speculative polling needed
            assert now["status"] == "working" and now["taskId"] == raw.task_id
            assert now["pollIntervalMs"] >= 1000 and "createdAt" in now and "lastUpdatedAt" in now
            # the same request again is the same job, and so the same handle
            again = await client.session.call_tool("generate_video", REQUEST, allow_claimed=True)
            assert isinstance(again, CreateTaskResult) and again.task_id == raw.task_id
            ack = await update_task(client.session, raw.task_id, {"nothing": {}})
            assert ack.keys() - {"_meta"} == {"resultType"} and ack["resultType"] == "complete"


async def test_cancel_stops_tracking_and_says_the_paid_job_goes_on(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as sim:
        async with Client(build_server(_settings(sim, tmp_path)), extensions=[TasksClient()]) as client:
            raw = await client.session.call_tool("generate_video", REQUEST, allow_claimed=True)
            assert isinstance(raw, CreateTaskResult)
            ack = await cancel_task(client.session, raw.task_id)  # an empty acknowledgement
            assert ack.keys() - {"_meta"} == {"resultType"} and ack["resultType"] == "complete"
            after = await get_task(client.session, raw.task_id)
            assert after["status"] == "cancelled" and "cannot cancel" in after["statusMessage"]
            gateway_id = after["statusMessage"].split("get_task_status(task_id='")[1].split("'")[0]
            # the job itself goes on upstream and stays reachable the ordinary way
            done = ok(await client.call_tool("get_task_status", {"task_id": gateway_id, "wait_seconds": 30}))
            assert done["status"] == "completed"


async def test_a_subscriber_hears_each_change_and_the_result_without_polling(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=2.0, api_keys={KEY}) as sim:
        tasks = TasksClient()
        async with Client(build_server(_settings(sim, tmp_path)), extensions=[tasks]) as client:
            raw = await client.session.call_tool("generate_video", REQUEST, allow_claimed=True)
            assert isinstance(raw, CreateTaskResult)
            forged = Handles(b"x" * 32).make("local", "video_NEVERMADE")
            with anyio.fail_after(60):  # the stream ends by itself once the one task it follows is done
                await listen_tasks(client.session, [raw.task_id, forged])
            await anyio.sleep(0.2)  # (notifications are dispatched to the extension one at a time)
    notices = tasks.notices
    assert notices and {n["taskId"] for n in notices} == {raw.task_id}  # the forged handle: never followed
    statuses = [n["status"] for n in notices]
    assert statuses[-1] == "completed" and set(statuses[:-1]) <= {"working"}, statuses
    assert len({n["statusMessage"] for n in notices}) == len(notices)  # changes, not heartbeats
    final = notices[-1]["result"]["structuredContent"]
    assert final["status"] == "completed" and Path(final["local_path"]).is_file()


async def test_a_task_resource_subscriber_hears_every_change_without_polling(tmp_path: Path) -> None:
    """No tasks extension needed: a task:// subscription makes the server follow the job itself."""
    with SimulatorServer(job_seconds=2.0, api_keys={KEY}) as sim:
        async with Client(build_server(_settings(sim, tmp_path))) as client:
            made = ok(await client.call_tool("generate_video", REQUEST))
            uri = f"task://{made['task_id']}"
            seen: list[str] = []
            with anyio.fail_after(60):  # the stream ends by itself once the job it follows is done
                async with client.listen(resource_subscriptions=[uri, "task://video_NEVERMADE"]) as sub:
                    assert set(sub.honored.resource_subscriptions or ()) == {uri, "task://video_NEVERMADE"}
                    async for event in sub:
                        seen.append(getattr(event, "uri", ""))
            final = await client.read_resource(uri)
    assert len(seen) >= 2 and set(seen) == {uri}, seen  # each change, and only of this task
    assert '"status": "completed"' in final.contents[0].text or '"status":"completed"' in final.contents[0].text


async def test_forged_foreign_and_unknown_handles_read_as_not_found(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=30.0, api_keys={KEY}) as sim:
        async with Client(build_server(_settings(sim, tmp_path)), extensions=[TasksClient()]) as client:
            raw = await client.session.call_tool("generate_video", REQUEST, allow_claimed=True)
            assert isinstance(raw, CreateTaskResult)
            prefix, body, mac = raw.task_id.split(".")
            forged = [
                f"{prefix}.{body}.{'A' * len(mac)}",  # right task, wrong signature
                Handles(b"x" * 32).make("local", "video_NEVERMADE"),  # another server's key
                "wt1.bm9wZQ.nope",
                "x" * 600,
            ]
            for handle in forged:
                for call in (get_task, cancel_task):
                    with pytest.raises(MCPError) as refused:
                        await call(client.session, handle)
                    assert refused.value.error.code == INVALID_PARAMS
                    assert refused.value.error.message == "Failed to retrieve task: Task not found"


async def test_without_the_extension_every_answer_is_todays(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as sim:
        settings = _settings(sim, tmp_path)
        for mode, extensions in (("auto", []), ("legacy", [TasksClient()])):
            async with Client(build_server(settings), mode=mode, extensions=extensions) as client:  # type: ignore[arg-type]
                made = ok(await client.call_tool("generate_video", {**REQUEST, "seed": len(extensions)}))
                assert made["status"] in ("queued", "in_progress") and "task_id" in made and "quote" in made
        async with Client(build_server(settings)) as plain:
            with pytest.raises(MCPError) as refused:
                await get_task(plain.session, "wt1.bm9wZQ.nope")
            assert refused.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY


async def test_refusals_and_quotes_stay_plain_results_for_a_declaring_client(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as sim:
        tasks = TasksClient()
        settings = _settings(sim, tmp_path, read_only=True)
        async with Client(build_server(settings), extensions=[tasks]) as client:
            plan = ok(await client.call_tool("generate_video", {**REQUEST, "dry_run": True}))
            assert plan["dry_run"] is True
            refused = error(await client.call_tool("generate_video", REQUEST))
            assert refused["error"]["code"] == "read_only"
        assert tasks.created == []


def test_a_handle_names_one_task_for_one_tenant() -> None:
    handles = Handles(b"k" * 32)
    mine = handles.make("alice", "video_ABC")
    assert handles.read("alice", mine) == "video_ABC"
    assert handles.read("bob", mine) is None  # bound to the principal that made it
    assert Handles(b"j" * 32).read("alice", mine) is None
    assert handles.read("alice", mine[:-1] + ("A" if mine[-1] != "A" else "B")) is None
