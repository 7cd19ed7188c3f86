"""The tracker against the real client and the simulator over loopback, in real time: outcomes only
(a cancelled waiter leaves the job, Retry-After storms end, a forgotten task settles). The timing
rules themselves are tested on a virtual clock in ``test_tracker_timing.py``."""

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


async def test_cancelled_waiter_leaves_the_job_and_row_intact(rig: Rig) -> None:
    rig.sim.configure(job_seconds=2.0)
    record = await rig.submit("cancelled")
    with anyio.move_on_after(0.3):
        await rig.tracker.wait(record, within=30)
    row = await rig.journal.get(record.business_id)
    assert row is not None and row.task_id == record.task_id and row.status in ("queued", "in_progress")
    done = await rig.tracker.wait(row, within=10)
    assert done.status == "completed"


async def test_retry_after_slows_the_poller(rig: Rig) -> None:
    record = await rig.submit("throttled")
    # 429s beyond the client's own retry budget reach the tracker, which backs off and carries on.
    rig.sim.add_fault("status", "http_429", times=4, retry_after=0.5)
    done = await rig.tracker.wait(record, within=15)
    assert done.status == "completed"


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
