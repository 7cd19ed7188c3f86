"""End to end over stdio: the real `wan-mcp serve` process, the official client, the simulator upstream."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from tests.e2e.conftest import KEY, Dirs, server_env, stdio_params
from tests.helpers import ok as _data
from tests.helpers import text as _text
from wan_mcp.core.media import probe_video
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio


def _portrait_png(path: Path) -> Path:
    Image.new("RGB", (540, 960), (200, 80, 40)).save(path)
    return path


async def _until_done(client: Client, task_id: str, **kw: Any) -> dict[str, Any]:
    for _ in range(40):
        status = _data(await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 10}, **kw))
        if status["status"] in ("completed", "failed", "rejected"):
            return status
    raise AssertionError(f"{task_id} never finished")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_list_states_the_rules_within_the_context_budget(
    fresh_sim: SimulatorServer, dirs: Dirs, mode: str
) -> None:
    async with Client(stdio_params(server_env(fresh_sim, dirs)), mode=mode) as client:  # type: ignore[arg-type]
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"generate_video", "get_task_status", "upload_image", "list_tasks", "get_usage", "join_videos"}
    gen = tools["generate_video"].input_schema["properties"]
    assert gen["resolution"]["enum"] == ["720p", "1080p"]
    assert gen["duration"]["enum"] == [5, 10, 15]
    assert set(gen["aspect_ratio"]["enum"]) == {"16:9", "9:16", "1:1", "4:3", "3:4"}
    assert set(gen["model"]["enum"]) == {"wan2.6", "wan2.6-flash"}
    described = json.dumps(tools["generate_video"].input_schema).lower()
    for rule in ("not with image", "t2v/r2v", "flash"):
        assert rule in described, rule
    assert tools["generate_video"].annotations.idempotent_hint is False
    assert tools["get_task_status"].annotations.read_only_hint is True
    assert tools["generate_video"].output_schema is not None
    payload = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.values()]
    for p in payload:
        p.get("_meta", {}).pop("io.modelcontextprotocol/serverInfo", None)
        if not p.get("_meta"):
            p.pop("_meta", None)
    size = len(json.dumps(payload, separators=(",", ":")))
    print(f"tools/list: {size} bytes")
    assert size <= 7500, f"tools/list is {size} bytes"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_mode_end_to_end_to_a_valid_mp4(fresh_sim: SimulatorServer, dirs: Dirs, mode: str) -> None:
    image = _portrait_png(dirs.inputs / "portrait.png")
    async with Client(stdio_params(server_env(fresh_sim, dirs)), mode=mode) as client:  # type: ignore[arg-type]
        t2v = _data(
            await client.call_tool(
                "generate_video",
                {"prompt": "a red kite over the sea", "resolution": "720p", "duration": 5, "seed": 1},
            )
        )
        assert t2v["mode"] == "t2v" and t2v["sent"]["aspect_ratio"] == "16:9"
        i2v = _data(
            await client.call_tool(
                "generate_video",
                {"prompt": "the scene comes alive", "image": str(image), "resolution": "720p"},
            )
        )
        assert i2v["mode"] == "i2v" and i2v["sent"]["image_urls"][0].startswith("http://127.0.0.1")
        t2v_done = await _until_done(client, t2v["task_id"])
        i2v_done = await _until_done(client, i2v["task_id"])
        ref = Path(t2v_done["local_path"])
        r2v = _data(
            await client.call_tool(
                "generate_video",
                {
                    "prompt": "character1 dances",
                    "reference_videos": [str(ref)],
                    "aspect_ratio": "1:1",
                    "resolution": "720p",
                },
            )
        )
        assert r2v["mode"] == "r2v" and "reference_urls" in r2v["sent"]["metadata"]
        r2v_done = await _until_done(client, r2v["task_id"])
    for done, size in ((t2v_done, (1280, 720)), (i2v_done, (720, 1280)), (r2v_done, (960, 960))):
        assert done["status"] == "completed", done
        path = Path(done["local_path"])
        assert path.parent == dirs.videos and path.is_file()
        info = probe_video(path)
        assert info is not None and info.codec == "h264" and (info.width, info.height) == size
        assert abs(info.duration - 5) < 0.6
        assert done["url_expires_at"] and done["video_url"].startswith("http://127.0.0.1")
    assert fresh_sim.count(endpoint="create") == 3


BAD_CALLS = [
    ({"prompt": "x", "image": "https://e.com/a.png", "reference_videos": ["https://e.com/v.mp4"]}, "image"),
    ({"prompt": "x", "image": "https://e.com/a.png", "aspect_ratio": "16:9"}, "aspect_ratio"),
    ({"prompt": "x", "model": "wan2.6-flash"}, "model"),
    ({"prompt": "x", "resolution": "480p"}, "resolution"),
    ({"prompt": "x", "duration": 7}, "duration"),
    ({"prompt": "x", "image": "data:image/png;base64,@@not-base64@@"}, "image"),
    ({"prompt": "x", "image": "/etc/passwd"}, "image"),
    ({"image": "https://e.com/a.png", "prompt": "x", "colour": "red"}, "colour"),
    ({}, "prompt"),
]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_invalid_calls_name_the_field_and_reach_no_upstream(
    fresh_sim: SimulatorServer, dirs: Dirs, mode: str
) -> None:
    async with Client(stdio_params(server_env(fresh_sim, dirs)), mode=mode) as client:  # type: ignore[arg-type]
        for args, field in BAD_CALLS:
            result = await client.call_tool("generate_video", args)
            assert result.is_error, args
            text = _text(result)
            assert field in text and "Next:" in text, text
        for args, field in (
            ({"task_id": "no such id!"}, "task_id"),
            ({"task_id": "video_unknown"}, "task_id"),
        ):
            result = await client.call_tool("get_task_status", args)
            assert result.is_error and field in _text(result), _text(result)
    assert fresh_sim.count(endpoint="create") == 0
    assert fresh_sim.count(endpoint="upload_image") == 0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_notifications_arrive_while_waiting(fresh_sim: SimulatorServer, dirs: Dirs, mode: str) -> None:
    fresh_sim.configure(job_seconds=3.0)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(stdio_params(server_env(fresh_sim, dirs)), mode=mode) as client:  # type: ignore[arg-type]
        task = _data(await client.call_tool("generate_video", {"prompt": "a slow sunrise", "resolution": "720p"}))
        done = _data(
            await client.call_tool(
                "get_task_status",
                {"task_id": task["task_id"], "wait_seconds": 20},
                progress_callback=on_progress,
            )
        )
    assert done["status"] == "completed"
    await anyio.sleep(0.2)  # notifications race the result over real transports
    assert len(seen) >= 2, seen
    values = [p for p, _, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing
    assert all(total == 100 for _, total, _ in seen)
    assert all(task["task_id"] in (msg or "") for _, _, msg in seen)


async def test_cancelled_wait_leaves_the_job_intact(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    fresh_sim.configure(job_seconds=2.0)
    async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
        task = _data(await client.call_tool("generate_video", {"prompt": "waves", "resolution": "720p"}))
        with anyio.move_on_after(0.5):
            await client.call_tool("get_task_status", {"task_id": task["task_id"], "wait_seconds": 30})
            raise AssertionError("the wait should have been cancelled")
        listed = _data(await client.call_tool("list_tasks", {}))
        assert [t["task_id"] for t in listed["tasks"]] == [task["task_id"]]
        done = await _until_done(client, task["task_id"])
    assert done["status"] == "completed" and Path(done["local_path"]).is_file()
    assert fresh_sim.count(endpoint="create") == 1


async def test_kill_9_mid_wait_then_restart_completes_with_one_task_and_one_file(
    fresh_sim: SimulatorServer, dirs: Dirs
) -> None:
    fresh_sim.configure(job_seconds=3.0)
    pidfile = dirs.root / "server.pid"
    env = server_env(fresh_sim, dirs)
    task_id = ""
    with pytest.raises(BaseException):  # noqa: B017 - the transport dies under the client
        async with Client(stdio_params(env, pidfile)) as client:
            task_id = _data(await client.call_tool("generate_video", {"prompt": "a crash", "resolution": "720p"}))[
                "task_id"
            ]

            async def kill_soon() -> None:
                await anyio.sleep(0.7)
                os.kill(int(pidfile.read_text()), signal.SIGKILL)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_soon)
                await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 20})
    assert task_id
    async with Client(stdio_params(env)) as client:
        listed = _data(await client.call_tool("list_tasks", {}))
        assert [t["task_id"] for t in listed["tasks"]] == [task_id]
        done = await _until_done(client, task_id)
    assert done["status"] == "completed"
    assert fresh_sim.count(endpoint="create") == 1
    files = [p for p in dirs.videos.iterdir()]
    assert [p.name for p in files] == [Path(done["local_path"]).name], files


async def test_serve_simulate_needs_no_key_and_works_session_after_session(dirs: Dirs) -> None:
    """`wan-mcp serve --simulate`: what a user tries in their host before buying a key.

    Hosts (Claude Desktop on every launch) start the server again and again on the same data
    dir. The second session once handed out the first session's task ids (the simulator's
    seed was fixed) and every generate_video failed with a journal collision.
    """
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"WAN_MCP_DATA_DIR": str(dirs.data), "WAN_MCP_SIMULATOR_JOB_SECONDS": "0.5",
                "WAN_MCP_POLL_FIRST_SECONDS": "0.2", "WAN_MCP_POLL_INTERVAL_SECONDS": "0.3"})  # fmt: skip
    params = StdioServerParameters(command=sys.executable, args=["-m", "wan_mcp", "serve", "--simulate"], env=env)
    seen: list[str] = []
    for session in range(2):
        async with Client(params) as client:
            task = _data(
                await client.call_tool("generate_video", {"prompt": f"try-out {session}", "resolution": "720p"})
            )
            done = await _until_done(client, task["task_id"])
            listed = _data(await client.call_tool("list_tasks", {}))["tasks"]
        assert done["status"] == "completed", (session, done)
        assert Path(done["local_path"]).is_relative_to(dirs.data / "simulator")
        seen.append(done["task_id"])
        assert {t["status"] for t in listed} <= {"completed", "failed"}, listed  # no stray 'submitting' row
    assert len(set(seen)) == 2


async def test_same_image_is_uploaded_once(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    image = _portrait_png(dirs.inputs / "a.png")
    async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
        first = _data(await client.call_tool("upload_image", {"path": str(image)}))
        second = _data(await client.call_tool("upload_image", {"path": str(image)}))
    assert first["cached"] is False and second["cached"] is True
    assert first["url"] == second["url"] and (first["width"], first["height"]) == (540, 960)
    assert fresh_sim.count(endpoint="upload_image") == 1


async def test_terminal_status_is_served_from_the_journal(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
        task = _data(await client.call_tool("generate_video", {"prompt": "quiet", "resolution": "720p"}))
        done = await _until_done(client, task["task_id"])
        assert done["status"] == "completed"
        fresh_sim.clear_requests()
        again = _data(await client.call_tool("get_task_status", {"task_id": task["task_id"]}))
        assert again["local_path"] == done["local_path"]
    assert fresh_sim.requests() == []


async def test_failed_generation_is_explained(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    fresh_sim.configure(fail_prompts_containing="forbidden")
    async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
        task = _data(await client.call_tool("generate_video", {"prompt": "something forbidden", "resolution": "720p"}))
        done = await _until_done(client, task["task_id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "content_policy" and "rephrase" in done["error"]["hint"]


async def test_the_key_never_reaches_results_or_the_journal(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    texts: list[str] = []
    async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
        task = await client.call_tool("generate_video", {"prompt": "a key", "resolution": "720p"})
        texts.append(task.model_dump_json())
        texts.append((await client.call_tool("get_task_status", {"task_id": "video_nope"})).model_dump_json())
        texts.append((await client.call_tool("list_tasks", {})).model_dump_json())
    for blob in texts:
        assert KEY not in blob
    for path in dirs.data.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
