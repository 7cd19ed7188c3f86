"""Films, not just clips (issue 14), end to end over stdio against the simulator: a 3-shot film made
the way the wan_film prompt teaches (t2v, then two continue_from shots, then join_videos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from mcp import Client
from PIL import Image

from tests.e2e.conftest import Dirs, server_env, stdio_params
from tests.helpers import error, ok, text
from tests.unit.test_film import _audio, _frames, psnr
from wan_mcp.core.media.film import clip_info
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio

#: A continued shot starts from the previous shot's exact last frame; through the simulator's
#: i2v (the image pushed in by its Ken Burns move, re-encoded as H.264) the two frames measure
#: 35-37 dB. Unrelated neighbouring frames measure 19-25 dB (the same scene a third of a second
#: apart: ~22 dB). 30 dB separates "the same picture" from "a different one".
SAME_PICTURE_DB = 30.0


async def _done(client: Client, task_id: str) -> dict[str, Any]:
    for _ in range(40):
        status = ok(await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 10}))
        if status["status"] in ("completed", "failed", "rejected"):
            assert status["status"] == "completed", status
            return status
    raise AssertionError(f"{task_id} never finished")


async def test_a_three_shot_film_flows_across_every_join(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    shots: list[dict[str, Any]] = []
    async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "wan_film" in prompts
        first = ok(
            await client.call_tool("generate_video", {"prompt": "a kite rises over a beach", "resolution": "720p"})
        )
        shots.append(await _done(client, first["task_id"]))
        for prompt in ("the kite loops in the wind", "the kite lands softly on the sand"):
            args = {"continue_from": shots[-1]["task_id"], "prompt": prompt, "resolution": "720p"}
            made = ok(await client.call_tool("generate_video", args))
            assert made["mode"] == "i2v" and made["continues"] == shots[-1]["task_id"]
            assert made["sent"]["image_urls"][0].startswith("http://127.0.0.1")
            assert "aspect_ratio" not in made["sent"]
            shots.append(await _done(client, made["task_id"]))
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        joined = await client.call_tool(
            "join_videos", {"task_ids": [s["task_id"] for s in shots]}, progress_callback=on_progress
        )
        film = ok(joined)
        listed = ok(await client.call_tool("list_tasks", {"limit": 10}))["tasks"]
        again = ok(await client.call_tool("get_task_status", {"task_id": film["task_id"]}))
    assert film["task_id"].startswith("film_") and film["parts"] == [s["task_id"] for s in shots]
    assert film["status"] == "completed" and film["local_path"].endswith(".mp4")
    assert any(getattr(c, "type", "") == "image" for c in joined.content)  # poster frame
    assert any(getattr(c, "type", "") == "resource_link" for c in joined.content)
    assert film["task_id"] in {t["task_id"] for t in listed} and again["local_path"] == film["local_path"]
    assert "film of 3 shots" in text(joined)

    path = Path(film["local_path"])
    info = clip_info(path)
    parts = [clip_info(Path(s["local_path"])) for s in shots]
    frame = 1 / float(info.fps)
    assert abs(info.duration - sum(p.duration for p in parts)) <= frame  # the sum of the parts, within a frame
    assert info.codec == "h264" and info.audio_codec == "aac"
    rate, sound = _audio(path)
    # Sound throughout: it covers the picture, give or take the AAC codec's frames (1024 samples each,
    # 43 ms at 24 kHz) of priming and padding that a stream copy keeps.
    assert -0.1 <= len(sound) / rate - info.duration <= 0.15
    with av.open(str(path)) as container:
        assert container.streams.audio and container.streams.video
    # At each join, the first frame of shot N+1 is the last frame of shot N.
    frames = _frames(path)
    cut = 0
    for shot in parts[:-1]:
        cut += shot.frames
        assert psnr(frames[cut - 1], frames[cut]) >= SAME_PICTURE_DB, cut
    assert psnr(frames[0], frames[parts[0].frames]) < SAME_PICTURE_DB  # the threshold does tell pictures apart
    assert all(isinstance(f, Image.Image) for f in frames)


async def test_a_part_that_cannot_be_used_is_named(fresh_sim: SimulatorServer, dirs: Dirs) -> None:
    fresh_sim.configure(job_seconds=600)
    try:
        async with Client(stdio_params(server_env(fresh_sim, dirs))) as client:
            running = ok(await client.call_tool("generate_video", {"prompt": "a long job", "resolution": "720p"}))
            joined = error(await client.call_tool("join_videos", {"task_ids": ["video_nope", running["task_id"]]}))
            continued = error(
                await client.call_tool("generate_video", {"continue_from": running["task_id"], "prompt": "next"})
            )
            mixed = error(
                await client.call_tool(
                    "generate_video", {"continue_from": running["task_id"], "image": "https://x.org/a.png"}
                )
            )
            one = error(await client.call_tool("join_videos", {"task_ids": [running["task_id"]]}))
    finally:
        fresh_sim.configure(job_seconds=1.0)
    assert joined["error"]["field"] == "task_ids[0]" and "video_nope" in joined["error"]["message"]
    assert continued["error"]["field"] == "continue_from" and "not completed" in continued["error"]["message"]
    assert "get_task_status" in continued["next"]
    assert mixed["error"]["field"] == "image"
    assert one["error"]["field"] == "task_ids"
    assert fresh_sim.count(endpoint="create") == 1  # no shot was submitted from an unfinished one
