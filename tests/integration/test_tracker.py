"""The tracker against the real client and the simulator: one poller per task, bounded waits,
polling that stops when nobody waits and resumes on demand."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from pydantic import SecretStr

from wan_mcp.config import load_settings
from wan_mcp.core.journal import SqliteJournal, TaskRecord
from wan_mcp.core.tracker import PollTiming, TaskTracker
from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-tracker-SECRET-0123456789"
FAST = PollTiming(first_delay=0.1, interval=0.2, max_interval=1.0, jitter=0.0, heartbeat=0.1, min_refresh=0.05)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as server:
        yield server


@dataclass
class Rig:
    sim: SimulatorServer
    client: GatewayClient
    journal: SqliteJournal
    tracker: TaskTracker

    async def submit(self, name: str) -> TaskRecord:
        payload = {"model": "wan2.6", "prompt": name, "resolution": "720p", "duration": 5}
        bid = f"wanmcp_{name}_{time.monotonic_ns()}"
        await self.journal.record_submission(business_id=bid, model="wan2.6", mode="t2v", payload=payload,
                                             fingerprint=bid)  # fmt: skip
        task = await self.client.create_task(payload, bid)
        return await self.journal.attach_task(bid, task_id=task.id, status=task.state.value)  # type: ignore[arg-type]


@pytest.fixture
async def rig(sim: SimulatorServer, tmp_path: Path) -> AsyncIterator[Rig]:
    sim.clear_faults()
    sim.clear_requests()
    sim.configure(job_seconds=1.0)
    settings = load_settings(base_url=sim.base_url, api_key=KEY, data_dir=tmp_path)
    async with make_http_client(settings) as http:
        client = GatewayClient(
            http,
            base_url=sim.base_url,
            api_key=SecretStr(KEY),
            retry=RetryPolicy(attempts=3, total_seconds=5, base_delay=0.05, max_delay=0.2),
        )
        journal = await SqliteJournal.open(tmp_path / "journal.sqlite3")
        try:
            async with TaskTracker(client, journal, timing=FAST, rate_budget=100) as tracker:
                yield Rig(sim, client, journal, tracker)
        finally:
            await journal.close()


async def test_many_waiters_one_poller(rig: Rig) -> None:
    record = await rig.submit("shared")
    results: list[TaskRecord] = []

    async def waiter() -> None:
        results.append(await rig.tracker.wait(record, within=10))

    async with anyio.create_task_group() as tg:
        for _ in range(25):
            tg.start_soon(waiter)
    assert {r.status for r in results} == {"completed"}
    # ~1 s job, first poll 0.1 s then every 0.2 s: about 6 polls in all, not 25 x 6.
    assert rig.sim.count(endpoint="status") <= 8, rig.sim.count(endpoint="status")
    assert rig.tracker.live_pollers() == 0


async def test_waits_are_bounded_and_polling_stops_when_nobody_waits(rig: Rig) -> None:
    rig.sim.configure(job_seconds=3.0)
    record = await rig.submit("bounded")
    started = time.monotonic()
    latest = await rig.tracker.wait(record, within=0.5)
    assert time.monotonic() - started < 2.0 and latest.status in ("queued", "in_progress")
    await anyio.sleep(0.6)  # the poller notices nobody waits at its next tick
    assert rig.tracker.live_pollers() == 0
    polls = rig.sim.count(endpoint="status")
    await anyio.sleep(0.6)
    assert rig.sim.count(endpoint="status") == polls  # no waiter: no upstream traffic
    done = await rig.tracker.wait(latest, within=10)  # resumes on demand
    assert done.status == "completed"
    stored = await rig.journal.get(record.business_id)
    assert stored is not None and stored.status == "completed" and stored.video_url == done.video_url


async def test_cancelled_waiter_leaves_the_job_and_row_intact(rig: Rig) -> None:
    rig.sim.configure(job_seconds=2.0)
    record = await rig.submit("cancelled")
    with anyio.move_on_after(0.3):
        await rig.tracker.wait(record, within=30)
    row = await rig.journal.get(record.business_id)
    assert row is not None and row.task_id == record.task_id and row.status in ("queued", "in_progress")
    done = await rig.tracker.wait(row, within=10)
    assert done.status == "completed"


async def test_first_poll_waits_for_the_contracts_initial_delay(rig: Rig) -> None:
    slow = PollTiming(first_delay=0.8, interval=0.2, max_interval=1.0, jitter=0.0, heartbeat=0.1, min_refresh=0.05)
    async with TaskTracker(rig.client, rig.journal, timing=slow, rate_budget=100) as tracker:
        record = await rig.submit("patient")
        rig.sim.clear_requests()
        await tracker.wait(record, within=0.5)
        assert rig.sim.count(endpoint="status") == 0  # nothing before first_delay after submit
        await tracker.wait(record, within=0.6)
        assert rig.sim.count(endpoint="status") >= 1


async def test_retry_after_slows_the_poller(rig: Rig) -> None:
    record = await rig.submit("throttled")
    # 429s beyond the client's own retry budget reach the tracker, which backs off and carries on.
    rig.sim.add_fault("status", "http_429", times=4, retry_after=0.5)
    done = await rig.tracker.wait(record, within=15)
    assert done.status == "completed"


async def test_rate_budget_spaces_upstream_requests(rig: Rig) -> None:
    async with TaskTracker(rig.client, rig.journal, timing=FAST, rate_budget=20) as tracker:
        records = [await rig.submit(f"budget{i}") for i in range(10)]
        rig.sim.clear_requests()
        started = time.monotonic()

        async def waiter(rec: TaskRecord) -> None:
            await tracker.wait(rec, within=1.5)

        async with anyio.create_task_group() as tg:
            for rec in records:
                tg.start_soon(waiter, rec)
        elapsed = time.monotonic() - started
    # 20 requests/s is the ceiling whatever the number of tasks.
    assert rig.sim.count(endpoint="status") <= 20 * elapsed + 2


async def test_gateway_forgetting_a_task_settles_it(rig: Rig) -> None:
    bid = f"wanmcp_forgotten_{time.monotonic_ns()}"
    await rig.journal.record_submission(business_id=bid, model="wan2.6", mode="t2v", payload={}, fingerprint=bid)
    record = await rig.journal.attach_task(bid, task_id="video_the_gateway_never_had", status="queued")
    done = await rig.tracker.wait(record, within=5)
    assert done.status == "failed" and "no longer knows" in (done.error_message or "")


async def test_http_client_is_shared_and_closed(sim: SimulatorServer, tmp_path: Path) -> None:
    settings = load_settings(base_url=sim.base_url, api_key=KEY, data_dir=tmp_path)
    http = make_http_client(settings)
    async with http:
        assert isinstance(http, httpx2.AsyncClient) and "authorization" not in http.headers
    assert http.is_closed
