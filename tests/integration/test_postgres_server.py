"""The whole server on the PostgreSQL journal (WAN_MCP_DATABASE_URL), driven by the official client.

Two servers on one database stand for two replicas: a job made through one is known to the
other (its status answered from the shared journal, its duplicate guard and the budgets shared).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from tests.helpers import error, ok, simulator_settings
from tests.pg import PostgresServer
from wan_mcp.core.journal.postgres import PostgresJournal
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.app import build_server
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
