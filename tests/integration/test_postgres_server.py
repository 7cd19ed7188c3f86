"""The whole server on the PostgreSQL journal (WAN_MCP_DATABASE_URL), driven by the official client.

Two servers on one database stand for two replicas: a job made through one is known to the
other (its status answered from the shared journal, its duplicate guard and the budgets shared).
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.helpers import error, ok, simulator_settings
from tests.pg import PostgresServer
from wan_mcp.core.journal.postgres import PostgresJournal
from wan_mcp.core.service import VideoService
from wan_mcp.core.views import TaskView
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.app import build_server, open_service
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-postgres-test-0123456789"


async def test_two_servers_on_one_postgres_journal_share_tasks_duplicates_and_budgets(
    simulator: SimulatorServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.schema_url()
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    first = simulator_settings(simulator, tmp_path / "a", key=KEY, database_url=url, budget_daily_usd=1.0)
    second = simulator_settings(simulator, tmp_path / "b", key=KEY, database_url=url, budget_daily_usd=1.0)
    request = {"prompt": "a paper boat on a pond", "resolution": "720p"}  # USD 0.50
    async with Client(build_server(first)) as a, Client(build_server(second)) as b:
        made = ok(await a.call_tool("generate_video", {**request, "wait_seconds": 30}))
        assert made["status"] == "completed"
        seen = simulator.count()
        other = ok(await b.call_tool("get_task_status", {"task_id": made["task_id"], "download": False}))
        assert other["status"] == "completed" and simulator.count() == seen  # from the shared journal
        again = ok(await b.call_tool("generate_video", request))
        assert again["deduplicated"] is True and again["task_id"] == made["task_id"]
        ok(await b.call_tool("generate_video", {**request, "prompt": "a second boat"}))  # USD 1.00 spent now
        refused = error(await a.call_tool("generate_video", {**request, "prompt": "a third boat"}))
        assert refused["error"]["code"] == "budget_exceeded", refused
        listed = ok(await a.call_tool("list_tasks", {}))
    assert {t["task_id"] for t in listed["tasks"]} >= {made["task_id"]}
    assert Path(made["local_path"]).is_file()


async def test_a_database_that_refuses_us_is_a_journal_error_naming_the_reason_not_the_password(
    postgres_server: PostgresServer,
) -> None:
    bad = postgres_server.url.replace("wan@", "nobody:s3cret-pass-word@")
    with pytest.raises(WanError) as refused:
        await PostgresJournal.open(bad)
    err = refused.value
    assert err.code is ErrorCode.JOURNAL and "nobody" in err.message and "WAN_MCP_DATABASE_URL" in (err.hint or "")
    assert "s3cret-pass-word" not in err.render()


async def _status_gets(sim: SimulatorServer, task_id: str) -> int:
    return sum(1 for r in sim.requests() if r.method == "GET" and task_id in r.path)


async def test_replicas_on_one_database_poll_each_task_once_and_every_waiter_hears_the_end(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Waiters on two replicas share ONE poller (the poll lease); a single replica's count is the yardstick."""
    with SimulatorServer(job_seconds=2.0, seed=1) as sim:
        url = postgres_server.schema_url()
        sides = []
        for side in ("a", "b", "solo"):
            (tmp_path / side).mkdir()
            sides.append(
                simulator_settings(
                    sim, tmp_path / side, key=KEY, database_url=url, budget_daily_usd=0, poll_interval_seconds=0.2
                )
            )
        request = {"prompt": "two replicas", "resolution": "720p"}
        async with open_service(sides[0]) as a, open_service(sides[1]) as b:
            made = await a.generate(request, wait_seconds=0)
            assert isinstance(made, TaskView)
            results: dict[str, TaskView] = {}

            async def wait(name: str, service: VideoService) -> None:
                results[name] = (await service.status(made.task_id, wait_seconds=30, download=False)).view

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, "a", a)
                tg.start_soon(wait, "b", b)
        assert {v.status for v in results.values()} == {"completed"}, results
        shared = await _status_gets(sim, made.task_id)

        async with open_service(sides[2]) as solo:
            alone = await solo.generate({**request, "prompt": "one replica"}, wait_seconds=0)
            assert isinstance(alone, TaskView)
            done = (await solo.status(alone.task_id, wait_seconds=30, download=False)).view
            assert done.status == "completed"
        single = await _status_gets(sim, alone.task_id)
    assert shared <= 1.1 * single + 1, (shared, single)  # one poller, not two


async def test_a_replica_takes_over_a_task_whose_poller_vanished(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The holder of a poll lease died without releasing it: a dead process on this host is taken over
    at once, one on another host once its lease runs out (here 1.5 s; 30 s after the last poll in service)."""
    with SimulatorServer(job_seconds=1.0, seed=2) as sim:
        url = postgres_server.schema_url()
        settings = simulator_settings(sim, tmp_path, key=KEY, database_url=url, budget_daily_usd=0)
        async with open_service(settings) as replica:
            for ghost, ttl in (("another-host:4242:dead", 1.5), (f"{socket.gethostname()}:999999:dead", 600.0)):
                made = await replica.generate({"prompt": f"orphan of {ghost}", "resolution": "720p"}, wait_seconds=0)
                assert isinstance(made, TaskView)
                assert await replica.journal.claim_download(f"poll:{made.task_id}", ghost, ttl)
                done = (await replica.status(made.task_id, wait_seconds=30, download=False)).view
                assert done.status == "completed", (ghost, done)
                assert await _status_gets(sim, made.task_id) >= 1
