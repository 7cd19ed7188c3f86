"""Many results finishing at once must not starve the HTTP pool the gateway calls share.

The process has one HTTP client (20 connections). Found by the three-replica test on a loaded
machine: 100 waiters downloading at once held every connection, so downloads and status reads
queued past the pool timeout and failed with "the file host stopped responding".
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.helpers import simulator_settings
from wan_mcp.core.journal import Observation, SqliteJournal
from wan_mcp.core.service import ROW_REUSE_SECONDS
from wan_mcp.core.views import TaskView
from wan_mcp.server.app import open_service
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-pool-test-0123456789"
JOBS = 40


async def test_forty_slow_downloads_at_once_all_succeed_and_polls_keep_a_connection(tmp_path: Path) -> None:
    with SimulatorServer(job_seconds=0.5, seed=3, api_keys={KEY}) as sim:
        settings = simulator_settings(
            sim, tmp_path, key=KEY, budget_daily_usd=0, pool_timeout=0.3, poster_frames=False, upstream_rate_budget=500
        )
        async with open_service(settings) as service:
            made = []
            for i in range(JOBS):
                view = await service.generate({"prompt": f"slow file {i}", "resolution": "720p"}, wait_seconds=0)
                assert isinstance(view, TaskView)
                made.append(view.task_id)
            sim.add_fault("file", "delay", delay=0.6, times=JOBS)  # every file host answer takes 0.6 s
            results: dict[str, TaskView] = {}

            async def wait(task_id: str) -> None:
                results[task_id] = (await service.status(task_id, wait_seconds=30)).view

            async with anyio.create_task_group() as tg:
                for task_id in made:
                    tg.start_soon(wait, task_id)
    failed = {t: (v.status, v.error.message if v.error else None) for t, v in results.items() if not v.local_path}
    assert not failed, failed


async def test_a_finished_tasks_row_is_reused_briefly_and_another_processs_save_is_seen_after(tmp_path: Path) -> None:
    """Agents poll finished tasks in tight loops: the row is read from the journal at most every
    ROW_REUSE_SECONDS (on the service's injected clock), and a file another process saved shows then."""
    now = [1_800_000_000.0]
    with SimulatorServer(job_seconds=0.1, seed=3, api_keys={KEY}) as sim:
        settings = simulator_settings(sim, tmp_path, key=KEY, budget_daily_usd=0, poster_frames=False)
        elsewhere = await SqliteJournal.open(settings.journal_path)  # another process on the same journal
        try:
            await elsewhere.record_submission(business_id="wanmcp_elsewhere", model="wan2.6", mode="t2v",
                                              payload={"prompt": "x"}, fingerprint="elsewhere")  # fmt: skip
            await elsewhere.attach_task("wanmcp_elsewhere", task_id="video_ELSEWHERE", status="queued")
            done = Observation(status="completed", progress=100, video_url=f"{sim.base_url}/files/x.mp4")
            await elsewhere.observe("video_ELSEWHERE", done)
            async with open_service(settings, wall_clock=lambda: now[0]) as service:
                first = (await service.status("video_ELSEWHERE", wait_seconds=0, download=False)).view
                saved = settings.resolved_output_dir / "saved-elsewhere.mp4"
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_bytes(b"\0" * 64)
                await elsewhere.record_download(
                    "video_ELSEWHERE", local_path=str(saved), sha256="0" * 64, size_bytes=64
                )
                now[0] += ROW_REUSE_SECONDS / 2
                reused = (await service.status("video_ELSEWHERE", wait_seconds=0, download=False)).view
                now[0] += ROW_REUSE_SECONDS
                fresh = (await service.status("video_ELSEWHERE", wait_seconds=0, download=False)).view
        finally:
            await elsewhere.close()
    assert first.status == "completed" and first.local_path is None
    assert reused.local_path is None  # served from the row read moments ago
    assert fresh.local_path == str(saved)  # read again once the row is ROW_REUSE_SECONDS old
