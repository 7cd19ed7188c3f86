"""continue_from and join_videos through the tools (issue 14): mixed inputs, dry runs, de-duplicated frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from PIL import Image

from tests.helpers import ok, simulator_settings
from tests.unit.test_film import _audio, _frames, _rms
from wan_mcp.core.media.film import clip_info
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-film-0123456789abcdef"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=0.3, api_keys={KEY}) as server:
        yield server


async def _made(client: Client, args: dict[str, Any]) -> dict[str, Any]:
    made = ok(await client.call_tool("generate_video", {"resolution": "720p", **args}))
    for _ in range(30):
        status = ok(await client.call_tool("get_task_status", {"task_id": made["task_id"], "wait_seconds": 10}))
        if status["status"] == "completed":
            return status
    raise AssertionError(made)


async def test_a_silent_flash_clip_and_a_portrait_clip_join_between_landscape_shots(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    settings = simulator_settings(sim, tmp_path, key=KEY)
    Image.new("RGB", (1280, 720), (200, 60, 20)).save(tmp_path / "in" / "wide.png")
    Image.new("RGB", (720, 1280), (20, 60, 200)).save(tmp_path / "in" / "tall.png")
    async with Client(build_server(settings)) as client:
        opening = await _made(client, {"prompt": "a harbour at dawn"})
        silent = await _made(
            client,
            {"image": str(tmp_path / "in" / "wide.png"), "model": "wan2.6-flash", "audio": False, "prompt": "waves"},
        )
        tall = await _made(client, {"image": str(tmp_path / "in" / "tall.png"), "prompt": "a lighthouse"})
        closing = await _made(client, {"prompt": "boats leave the harbour"})
        film = ok(
            await client.call_tool(
                "join_videos",
                {"task_ids": [opening["task_id"], silent["task_id"], tall["task_id"], closing["task_id"]]},
            )
        )
    assert clip_info(Path(silent["local_path"])).audio_codec is None  # flash, audio off: no sound track
    assert (tall["width"], tall["height"]) == (720, 1280)
    path = Path(film["local_path"])
    info = clip_info(path)
    assert (info.width, info.height) == (1280, 720) and abs(info.duration - 20.0) <= 1 / 3
    frames = _frames(path)
    portrait = frames[37]  # inside the third shot: scaled to fit, black bars left and right
    assert max(portrait.getpixel((10, 360))) < 16 and max(portrait.getpixel((1270, 360))) < 16  # type: ignore[arg-type]
    rate, sound = _audio(path)
    assert abs(len(sound) / rate - 20.0) < 0.2
    assert _rms(sound[int(6 * rate) : int(9 * rate)]) < 1e-3  # silence where the silent clip plays
    assert _rms(sound[int(1 * rate) : int(4 * rate)]) > 1e-2


async def test_continuing_twice_from_one_shot_uploads_its_frame_once_and_dry_run_says_so(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    async with Client(build_server(simulator_settings(sim, tmp_path, key=KEY))) as client:
        shot = await _made(client, {"prompt": "a paper plane"})
        uploads, creates = sim.count(endpoint="upload_image"), sim.count(endpoint="create")
        plan = ok(
            await client.call_tool(
                "generate_video", {"continue_from": shot["task_id"], "prompt": "it glides", "dry_run": True}
            )
        )
        assert sim.count(endpoint="upload_image") == uploads and sim.count(endpoint="create") == creates
        a = ok(await client.call_tool("generate_video", {"continue_from": shot["task_id"], "prompt": "it glides"}))
        b = ok(await client.call_tool("generate_video", {"continue_from": shot["task_id"], "prompt": "it falls"}))
        crossfaded = ok(
            await client.call_tool(
                "join_videos", {"task_ids": [shot["task_id"], shot["task_id"]], "transition": "crossfade"}
            )
        )
    assert plan["mode"] == "i2v" and plan["payload"]["image_urls"] == [f"<upload: last frame of {shot['task_id']}>"]
    assert any("last frame" in line for line in plan["uploads"])
    assert a["continues"] == b["continues"] == shot["task_id"] and a["task_id"] != b["task_id"]
    assert sim.count(endpoint="upload_image") == uploads + 1  # the same frame, uploaded once
    assert abs(clip_info(Path(crossfaded["local_path"])).duration - (10 - 2 / 3)) <= 1 / 3


async def test_a_shot_whose_file_was_deleted_is_fetched_again_before_joining(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    async with Client(build_server(simulator_settings(sim, tmp_path, key=KEY))) as client:
        a = await _made(client, {"prompt": "first light"})
        b = await _made(client, {"prompt": "last light"})
        Path(a["local_path"]).unlink()
        downloads = sim.count(endpoint="file")
        film = ok(await client.call_tool("join_videos", {"task_ids": [a["task_id"], b["task_id"]]}))
    assert sim.count(endpoint="file") == downloads + 1 and Path(a["local_path"]).is_file()
    assert abs(clip_info(Path(film["local_path"])).duration - 10.0) <= 1 / 3
