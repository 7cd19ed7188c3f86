"""Completion heard everywhere: a replica that follows a task another replica polls wakes on the
holder's journal write (PostgreSQL LISTEN/NOTIFY), not on its next read of the row.

The follower here reads the row only once an hour, so only the change feed can wake it in time.
"""

from __future__ import annotations

import random

import anyio
import pytest

from tests.helpers import virtual_gateway
from tests.pg import PostgresServer
from wan_mcp.core.journal import TaskJournal, TaskRecord
from wan_mcp.core.journal.postgres import PostgresJournal
from wan_mcp.core.tracker import PollTiming, TaskTracker
from wan_mcp.gateway.client import GatewayClient

pytestmark = pytest.mark.anyio

FAST = PollTiming(first_delay=0.05, interval=0.1, jitter=0.0, heartbeat=5.0, min_refresh=0.05)


async def _submit(journal: TaskJournal, client: GatewayClient, name: str) -> TaskRecord:
    payload = {"model": "wan2.6", "prompt": name, "resolution": "720p", "duration": 5}
    bid = f"wanmcp_feed_{name}"
    await journal.record_submission(business_id=bid, model="wan2.6", mode="t2v", payload=payload, fingerprint=bid)
    task = await client.create_task(payload, bid)
    return await journal.attach_task(bid, task_id=task.id, status=task.state.value)  # type: ignore[arg-type]


async def test_the_journal_announces_every_task_change_to_every_listener(postgres_server: PostgresServer) -> None:
    url = postgres_server.schema_url()
    async with await PostgresJournal.open(url) as writer, await PostgresJournal.open(url) as reader:
        heard: list[str] = []
        got = anyio.Event()

        def on_change(ident: str) -> None:
            heard.append(ident)
            got.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.listen, on_change)
            await anyio.sleep(0)  # (the feed connects on its own; a change made before it may be missed)
            with anyio.fail_after(30):
                while True:  # until the feed is up: each change is announced once it listens
                    got = anyio.Event()
                    name = f"wanmcp_feed_{random.getrandbits(32)}"
                    await writer.record_submission(
                        business_id=name, model="wan2.6", mode="t2v", payload={}, fingerprint=name
                    )
                    await writer.attach_task(name, task_id=f"video_{name}", status="queued")
                    with anyio.move_on_after(0.5):
                        await got.wait()
                    if f"video_{name}" in heard:
                        break
            assert name in heard  # both ids, so a follower keyed by either wakes
            tg.cancel_scope.cancel()


async def test_a_follower_hears_the_holders_write_at_once_with_progress(postgres_server: PostgresServer) -> None:
    url = postgres_server.schema_url()
    async with (
        virtual_gateway(job_seconds=100.0) as gw,
        await PostgresJournal.open(url) as ja,
        await PostgresJournal.open(url) as jb,
        TaskTracker(gw.client, ja, timing=FAST, rate_budget=100, shared=True) as holder,
        TaskTracker(gw.client, jb, timing=FAST, rate_budget=100, shared=True, follow_seconds=3600) as follower,
    ):
        record = await _submit(ja, gw.client, "a lighthouse")  # (a business id with a space, too)
        seen: list[tuple[str, int | None]] = []

        async def on_update(rec: TaskRecord) -> None:
            seen.append((rec.status, rec.progress))

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: holder.wait(record, within=60))
            with anyio.fail_after(30):
                while holder.upstream_polls == 0:  # the holder has the poll lease
                    await anyio.sleep(0.01)
            result: list[TaskRecord] = []

            async def follow() -> None:
                result.append(await follower.wait(record, within=30, on_update=on_update))

            tg.start_soon(follow)
            await anyio.sleep(0.3)
            gw.clock._now += 50  # the job is half done: the holder's next poll writes progress
            await anyio.sleep(1.0)
            gw.clock._now += 100  # and now finished
            with anyio.fail_after(30):
                while not result:
                    await anyio.sleep(0.01)
    assert result[0].status == "completed", seen
    assert follower.upstream_polls == 0  # it never asked the gateway: the holder's news reached it
    assert any(status == "in_progress" and (progress or 0) > 0 for status, progress in seen), seen
