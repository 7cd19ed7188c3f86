"""An odd upstream never takes the process down or loses a paid job (issue 9, "The process").

The real server (in-memory MCP transport) talks over loopback to ``tests/hostile.py``, a gateway
that breaks the contract on purpose. Each case failed before its fix: the tracker's task group
died (and the whole server with it), a paid create was left ``submitting`` with a bare error, a
microsecond timestamp broke every view of a task forever, a slow drip held a call past any bound,
a never-ending body was read into memory.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import ok, text
from tests.hostile import Hostile, endless_answer, hostile_gateway, json_answer
from wan_mcp.config import Settings, load_settings
from wan_mcp.core.journal import SqliteJournal
from wan_mcp.server.app import build_server

pytestmark = pytest.mark.anyio
KEY = "sk-hostile-0123456789abcdef"
CREATE = ("POST", "/v1/videos/generations")
STATUS = ("GET", "/v1/videos/generations/")
QUEUED = {"id": "video_hostile1", "status": "queued", "progress": 0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the hostile server runs on the test's asyncio loop


def _settings(gw: Hostile, tmp_path: Path, **kw: Any) -> Settings:
    return load_settings(
        **{
            "base_url": gw.base_url,
            "api_key": KEY,
            "data_dir": tmp_path / "data",
            "output_dir": tmp_path / "videos",
            "allowed_dirs": [tmp_path],
            "allow_private_urls": ["127.0.0.1"],
            "poll_first_seconds": 0.1,
            "poll_interval_seconds": 0.2,
            "poll_max_interval_seconds": 0.4,
            "retry_attempts": 1,
            "poster_frames": False,
            **kw,
        }
    )


@pytest.mark.parametrize(
    "garbage",
    [
        b'{"id": "video_hostile1", "status": "in_progress", "progress": ' + b"9" * 400 + b"}",
        b"[" * 1000 + b"]" * 1000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"id": "video_hostile1", "status": "in_progress", "progress": 1e999999}',
    ],
    ids=["400-digit", "1000-deep", "100000-deep", "inf"],
)
async def test_a_garbled_status_never_takes_the_server_down(garbage: bytes, tmp_path: Path) -> None:
    async with hostile_gateway() as gw:
        gw.route(*CREATE, json_answer(QUEUED))
        gw.route(*STATUS, json_answer(garbage))
        async with Client(build_server(_settings(gw, tmp_path))) as client:
            task = ok(await client.call_tool("generate_video", {"prompt": "odd upstream", "resolution": "720p"}))
            with anyio.fail_after(30):  # a hang guard
                waited = await client.call_tool("get_task_status", {"task_id": task["task_id"], "wait_seconds": 1.5})
            assert gw.count(*STATUS) >= 1
            # Still serving, the task still tracked, the row intact: nothing crashed.
            assert not waited.is_error or "[protocol]" in text(waited), text(waited)
            again = ok(await client.call_tool("get_task_status", {"task_id": task["task_id"]}))
            assert again["status"] in ("queued", "in_progress") and again["task_id"] == "video_hostile1"
            assert ok(await client.call_tool("list_tasks", {}))["tasks"][0]["task_id"] == "video_hostile1"


async def test_garbage_after_a_paid_create_is_unconfirmed_with_the_business_id(tmp_path: Path) -> None:
    async with hostile_gateway() as gw:
        gw.route(*CREATE, json_answer(b"[" * 100_000 + b"]" * 100_000))
        async with Client(build_server(_settings(gw, tmp_path))) as client:
            result = await client.call_tool("generate_video", {"prompt": "was it created?", "resolution": "720p"})
            assert result.is_error
            error = result.structured_content["error"]
            assert error["code"] == "submission_unconfirmed" and error["task_id"].startswith("wanmcp_")
            assert "do NOT resubmit" in text(result) and f"task_id='{error['task_id']}'" in text(result)
            listed = ok(await client.call_tool("list_tasks", {}))["tasks"]
        assert [t["status"] for t in listed] == ["unconfirmed"]  # never a stray "submitting" row
        assert gw.count(*CREATE) == 1  # and never a second paid POST


async def test_a_microsecond_expiry_is_read_as_seconds(tmp_path: Path) -> None:
    done = {"id": "video_hostile1", "status": "completed", "progress": 100,
            "result": {"data": [{"url": "https://cdn.example/v.mp4", "format": "mp4"}]},
            "expires_at": 1_764_259_200_000_000}  # fmt: skip
    async with hostile_gateway() as gw:
        gw.route(*CREATE, json_answer(QUEUED))
        gw.route(*STATUS, json_answer(done))
        async with Client(build_server(_settings(gw, tmp_path))) as client:
            task = ok(await client.call_tool("generate_video", {"prompt": "when does it expire", "resolution": "720p"}))
            view = ok(await client.call_tool("get_task_status", {"task_id": task["task_id"], "download": False}))
            assert view["url_expires_at"] == "2025-11-27T16:00:00Z"
            assert ok(await client.call_tool("list_tasks", {}))["tasks"][0]["url_expires_at"] == "2025-11-27T16:00:00Z"
            resource = await client.read_resource(f"task://{task['task_id']}")
            assert "2025-11-27T16:00:00Z" in resource.contents[0].text  # type: ignore[union-attr]


async def test_a_row_written_by_an_older_build_with_a_wild_expiry_is_repaired_when_read(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", api_key=KEY, allowed_dirs=[tmp_path])
    journal = await SqliteJournal.open(settings.journal_path)
    await journal.record_submission(business_id="wanmcp_old", model="wan2.6", mode="t2v", payload={}, fingerprint="f")
    await journal.attach_task("wanmcp_old", task_id="video_old", status="queued")
    await journal._call(  # what an older build stored: microseconds, read as the year 57877
        lambda conn: conn.execute("UPDATE tasks SET status='completed', expires_at=1764259200000000")
    )
    await journal.close()
    async with Client(build_server(settings)) as client:
        listed = ok(await client.call_tool("list_tasks", {}))["tasks"]
        status = ok(await client.call_tool("get_task_status", {"task_id": "video_old", "download": False}))
    assert listed[0]["url_expires_at"] == status["url_expires_at"] == "2025-11-27T16:00:00Z"


async def test_a_slow_drip_ends_at_the_deadline_as_unconfirmed(tmp_path: Path) -> None:
    async with hostile_gateway() as gw:
        gw.route(*CREATE, endless_answer(b" ", pause=0.5))  # a byte every half second: no read timeout fires
        settings = _settings(gw, tmp_path, request_deadline_seconds=2.0)
        async with Client(build_server(settings)) as client:
            with anyio.fail_after(60):  # a hang guard; the deadline (2 s) is what ends it
                result = await client.call_tool("generate_video", {"prompt": "drip", "resolution": "720p"})
        assert result.is_error and result.structured_content["error"]["code"] == "submission_unconfirmed"
        assert gw.count(*CREATE) == 1


async def test_a_never_ending_body_is_cut_at_the_cap(tmp_path: Path) -> None:
    async with hostile_gateway() as gw:
        gw.route(*CREATE, json_answer(QUEUED))
        gw.route(*STATUS, endless_answer())
        async with Client(build_server(_settings(gw, tmp_path))) as client:
            task = ok(await client.call_tool("generate_video", {"prompt": "flood", "resolution": "720p"}))
            tracemalloc.start()
            try:
                result = await client.call_tool("get_task_status", {"task_id": task["task_id"]})
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert not result.is_error or "[protocol]" in text(result), text(result)
        assert peak < 32 * 1024 * 1024, peak  # the answer was never held whole
