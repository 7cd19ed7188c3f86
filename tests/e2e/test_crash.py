"""Crash safety (issue 5): kill -9 the real stdio server at each step of the flow, restart it.

The steps: (1) after the journal write, while the create POST is in flight (a ``delay``
fault holds the POST open), (2) right after the POST was answered, (3) in the middle of a
wait, (4) in the middle of the result download (a ``delay`` fault holds the file request
open). Each time a new server on the same data dir must finish the job with exactly one
upstream task and exactly one complete file, and no ``.part`` left in the output folder.

Also: two servers sharing one data dir at once (two host windows): one submits, both wait
on and download the same task concurrently; the journal stays whole, the file is fetched
from the file host once, and both answer with the same local path.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.e2e.conftest import Dirs, server_env, stdio_params
from tests.helpers import ok as _data
from wan_mcp.core.boundary import FileBoundary
from wan_mcp.core.journal import SqliteJournal, TaskRecord
from wan_mcp.core.media import probe_video
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def up(fresh_sim: SimulatorServer) -> SimulatorServer:
    """The module's simulator with no tasks from earlier tests (these tests count them)."""
    fresh_sim.clear_tasks()
    return fresh_sim


async def _rows(dirs: Dirs) -> list[TaskRecord]:
    journal = await SqliteJournal.open(dirs.data / "journal.sqlite3")
    try:
        return await journal.list(limit=100)
    finally:
        await journal.close()


async def _until(condition: Callable[[], bool], timeout: float = 15) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


async def _until_done(client: Client, task_id: str) -> dict[str, Any]:
    """Poll like an agent: wait when there is something to wait on, else come back shortly."""
    for _ in range(100):
        status = _data(await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 10}))
        if status["status"] in ("completed", "failed", "rejected"):
            return status
        await anyio.sleep(0.2)
    raise AssertionError(f"{task_id} never finished")


def _kill(pidfile: Path) -> None:
    os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def _run_until_killed(
    env: dict[str, str],
    pidfile: Path,
    flow: Callable[[Client], Awaitable[None]],
    kill_when: Callable[[], bool],
) -> None:
    """Run ``flow`` against a fresh server and kill -9 it as soon as ``kill_when()`` holds."""
    killed = False
    try:
        async with Client(stdio_params(env, pidfile)) as client, anyio.create_task_group() as tg:

            async def killer() -> None:
                nonlocal killed
                await _until(kill_when)
                _kill(pidfile)
                killed = True
                tg.cancel_scope.cancel()

            tg.start_soon(killer)
            await flow(client)
            await anyio.sleep(30)  # the kill ends this
    except Exception:  # the transport may die under the client, or close quietly
        if not killed:
            raise
    assert killed


def _assert_one_file(dirs: Dirs, done: dict[str, Any]) -> None:
    assert done["status"] == "completed", done
    names = sorted(p.name for p in dirs.videos.iterdir())
    assert names == [Path(done["local_path"]).name], names  # one file, no .part leftovers
    info = probe_video(Path(done["local_path"]))
    assert info is not None and (info.width, info.height) == (1280, 720)


GENERATE = {"prompt": "a crash test", "resolution": "720p"}


async def test_kill_after_the_gateway_created_the_task_but_before_we_heard(up: SimulatorServer, dirs: Dirs) -> None:
    """The POST landed (the task exists upstream) but its answer was lost, and we die reconciling.

    ``malformed_json`` lets the create run and garbles its answer; a ``delay`` on the status
    read holds the reconciliation lookup open, and the kill lands there: the journal holds
    only the submission row and its business id.
    """
    pidfile = dirs.root / "server.pid"
    env = server_env(up, dirs)
    up.add_fault("create", "malformed_json")
    up.add_fault("status", "delay", delay=3.0)

    async def flow(client: Client) -> None:
        await client.call_tool("generate_video", GENERATE)

    await _run_until_killed(env, pidfile, flow, lambda: up.count("status") == 1)
    rows = await _rows(dirs)
    assert [(r.status, r.task_id) for r in rows] == [("submitting", None)]  # journaled before the POST left
    upstream = up.tasks()
    assert len(upstream) == 1 and upstream[0]["client_business_id"] == rows[0].business_id

    async with Client(stdio_params(env)) as client:
        listed = _data(await client.call_tool("list_tasks", {}))["tasks"]
        # The start-up reconciliation may already have attached the gateway's id; either id resolves.
        assert [t["task_id"] for t in listed] in ([rows[0].business_id], [upstream[0]["id"]])
        done = await _until_done(client, listed[0]["task_id"])
        again = _data(await client.call_tool("list_tasks", {}))["tasks"]
    assert up.count("create") == 1 and [t["id"] for t in up.tasks()] == [upstream[0]["id"]]
    assert done["task_id"] == upstream[0]["id"]
    assert [(t["task_id"], t["status"]) for t in again] == [(upstream[0]["id"], "completed")]
    _assert_one_file(dirs, done)


async def test_kill_while_the_create_post_is_in_flight(up: SimulatorServer, dirs: Dirs) -> None:
    """Killed after the submission row was written, while the POST was still unanswered.

    The simulator drops a request whose client vanished before it was processed, so no task
    is created. After the restart the submission is still listed and resolvable, is not
    re-POSTed, and an identical generate_video returns it instead of paying twice.
    """
    pidfile = dirs.root / "server.pid"
    env = server_env(up, dirs)
    up.add_fault("create", "delay", delay=2.0)

    async def flow(client: Client) -> None:
        await client.call_tool("generate_video", GENERATE)

    await _run_until_killed(env, pidfile, flow, lambda: up.count("create") == 1)
    rows = await _rows(dirs)
    assert [(r.status, r.task_id) for r in rows] == [("submitting", None)]
    business_id = rows[0].business_id
    async with Client(stdio_params(env)) as client:
        listed = _data(await client.call_tool("list_tasks", {}))["tasks"]
        assert [t["task_id"] for t in listed] == [business_id]
        await anyio.sleep(2.5)  # the orphaned POST's delay is over: the gateway has decided
        status = _data(await client.call_tool("get_task_status", {"task_id": business_id, "wait_seconds": 2}))
        assert status["task_id"] == business_id and status["status"] in ("submitting", "unconfirmed")
        again = _data(await client.call_tool("generate_video", GENERATE))
        assert again["task_id"] == business_id and again["deduplicated"] is True
    assert up.count("create") == 1 and up.tasks() == []  # never re-POSTed, nothing paid twice
    rows = await _rows(dirs)
    assert [(r.business_id, r.task_id) for r in rows] == [(business_id, None)]


async def test_kill_right_after_the_post_was_answered(up: SimulatorServer, dirs: Dirs) -> None:
    pidfile = dirs.root / "server.pid"
    env = server_env(up, dirs)
    answered: list[str] = []

    async def flow(client: Client) -> None:
        answered.append(_data(await client.call_tool("generate_video", GENERATE))["task_id"])

    await _run_until_killed(env, pidfile, flow, lambda: bool(answered))
    rows = await _rows(dirs)
    assert [r.task_id for r in rows] == answered  # the id the agent heard is durable
    async with Client(stdio_params(env)) as client:
        done = await _until_done(client, answered[0])
    assert up.count("create") == 1 and [t["id"] for t in up.tasks()] == answered
    _assert_one_file(dirs, done)


async def test_kill_mid_wait(up: SimulatorServer, dirs: Dirs) -> None:
    up.configure(job_seconds=3.0)
    pidfile = dirs.root / "server.pid"
    env = server_env(up, dirs)
    answered: list[str] = []

    async def flow(client: Client) -> None:
        answered.append(_data(await client.call_tool("generate_video", GENERATE))["task_id"])
        await client.call_tool("get_task_status", {"task_id": answered[0], "wait_seconds": 20})

    # Killed once the wait has polled upstream at least once (a poller is live).
    await _run_until_killed(env, pidfile, flow, lambda: bool(answered) and up.count("status") >= 1)
    async with Client(stdio_params(env)) as client:
        done = await _until_done(client, answered[0])
    assert up.count("create") == 1 and [t["id"] for t in up.tasks()] == answered
    _assert_one_file(dirs, done)


async def test_kill_mid_download(up: SimulatorServer, dirs: Dirs) -> None:
    """Killed while the result file request is in flight; a half-written .part is left too."""
    pidfile = dirs.root / "server.pid"
    env = server_env(up, dirs)
    up.add_fault("file", "delay", delay=3.0)
    answered: list[str] = []

    async def flow(client: Client) -> None:
        answered.append(_data(await client.call_tool("generate_video", GENERATE))["task_id"])
        await client.call_tool("get_task_status", {"task_id": answered[0], "wait_seconds": 20})

    await _run_until_killed(env, pidfile, flow, lambda: up.count("file") == 1)
    rows = await _rows(dirs)
    assert [(r.status, r.local_path) for r in rows] == [("completed", None)]
    # What a kill in the middle of the body leaves behind: a partial file next to the target.
    target = FileBoundary([dirs.videos], dirs.videos).output_path(answered[0])
    target.with_name(target.name + ".part").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 1000)

    async with Client(stdio_params(env)) as client:
        with anyio.fail_after(20):  # the dead process's download lease must not stall the retry
            done = await _until_done(client, answered[0])
    assert up.count("create") == 1 and up.count("file") == 2
    assert done["local_path"] == str(target)
    _assert_one_file(dirs, done)


async def test_two_servers_share_one_data_dir(up: SimulatorServer, dirs: Dirs) -> None:
    """Two host windows: one submits, both wait and download at once; one fetch, one file, one journal."""
    up.configure(job_seconds=1.5)
    env = server_env(up, dirs)
    async with Client(stdio_params(env)) as first, Client(stdio_params(env)) as second:
        task_id = _data(await first.call_tool("generate_video", GENERATE))["task_id"]
        results: dict[str, dict[str, Any]] = {}

        async def wait(name: str, client: Client) -> None:
            results[name] = await _until_done(client, task_id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "first", first)
            tg.start_soon(wait, "second", second)
        lists = [_data(await c.call_tool("list_tasks", {}))["tasks"] for c in (first, second)]
    assert results["first"]["local_path"] == results["second"]["local_path"]
    assert up.count("file") == 1 and up.count("create") == 1
    assert lists[0] == lists[1] and [t["task_id"] for t in lists[0]] == [task_id]
    assert lists[0][0]["status"] == "completed" and lists[0][0]["local_path"] == results["first"]["local_path"]
    _assert_one_file(dirs, results["first"])
    rows = await _rows(dirs)
    assert len(rows) == 1 and rows[0].local_path == results["first"]["local_path"] and rows[0].sha256
