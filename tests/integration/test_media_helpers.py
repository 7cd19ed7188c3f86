"""Probes and posters made in helper processes (issue 15: idle memory near the SDK's floor).

Real processes on this machine: the helper the server starts (``python -m
wan_mcp.core.media.describe_child``) and, for the failure cases, stand-ins that exit, answer
garbage or report their environment. No timing assertion: waits are bounded outcome checks.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from PIL import Image

from tests.unit.test_files_media import _make_mp4
from wan_mcp.core.media import DescribeHelpers, VideoDescriber

pytest.importorskip("av")
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("helpers")
    paths = [folder / "a.mp4", folder / "b.mp4"]
    _make_mp4(paths[0], seconds=1.2, size=(320, 240))
    _make_mp4(paths[1], seconds=2.0, size=(160, 96))
    return paths


def _stand_in(script: str) -> list[str]:
    """A helper command whose behaviour the test chooses (it gets the idle seconds as its argument)."""
    return [sys.executable, "-c", textwrap.dedent(script)]


async def test_one_helper_describes_file_after_file(clips: list[Path]) -> None:
    helpers = DescribeHelpers(size=1)
    try:
        (info_a, poster_a), (info_b, poster_b) = [await helpers.describe(p, poster=True) for p in clips]
    finally:
        await helpers.aclose()
    assert info_a is not None and (info_a.width, info_a.height) == (320, 240)
    assert info_b is not None and (info_b.width, info_b.height) == (160, 96) and info_b.duration >= 1.9
    assert poster_a is not None and Image.open(io.BytesIO(poster_a)).format == "JPEG"
    assert poster_b is not None and poster_b != poster_a
    assert helpers.started == 1  # reused, not one process per file


async def test_a_warmed_helper_is_the_one_that_describes(clips: list[Path]) -> None:
    helpers = DescribeHelpers(size=2)
    try:
        await helpers.warm()
        await helpers.warm()  # one is alive already: no second process
        assert helpers.started == 1
        info, poster = await helpers.describe(clips[0], poster=True)
        assert info is not None and poster is not None
        assert helpers.started == 1  # the description went to the warmed helper
    finally:
        await helpers.aclose()


async def test_a_warm_up_after_the_shutdown_starts_nothing() -> None:
    helpers = DescribeHelpers(size=1)
    await helpers.aclose()
    await helpers.warm()  # the tracker's last poll loop may still ask while the server closes
    assert helpers.started == 0


async def test_warming_without_a_helper_to_start_leaves_describing_to_work_in_process(clips: list[Path]) -> None:
    helpers = DescribeHelpers(size=1, command=["/nonexistent/wan-mcp-helper"])
    try:
        await helpers.warm()
        assert helpers.started == 0
        info, _poster = await helpers.describe(clips[0], poster=False)
    finally:
        await helpers.aclose()
    assert info is not None


async def test_an_idle_helper_exits_and_a_fresh_one_takes_over(clips: list[Path]) -> None:
    helpers = DescribeHelpers(size=1, idle_seconds=0.2)
    try:
        assert (await helpers.describe(clips[0], poster=False))[0] is not None
        process = helpers._ready[0].process
        with anyio.fail_after(30):  # outcome: it exits by itself (memory given back), however slow the machine
            while process.returncode is None:
                await anyio.sleep(0.05)
        info, poster = await helpers.describe(clips[1], poster=True)
    finally:
        await helpers.aclose()
    assert info is not None and poster is not None
    assert helpers.started == 2


@pytest.mark.parametrize(
    "script",
    [
        "import sys; sys.exit(3)",  # dies at once (a decoder crash looks like this)
        "import sys; sys.stdin.readline(); print('not json'); sys.stdout.flush()",
        "import sys; sys.stdin.readline(); sys.stdout.write('x' * 400000); sys.stdout.flush()",  # no end
        'import sys; sys.stdin.readline(); print(\'{"info": {"width": "big"}, "poster": "%%"}\', flush=True)',
    ],
    ids=["crash", "garbage", "endless", "wrong-shapes"],
)
async def test_a_broken_helper_costs_the_poster_never_the_server(clips: list[Path], script: str) -> None:
    helpers = DescribeHelpers(size=1, command=_stand_in(script))
    try:
        assert await helpers.describe(clips[0], poster=True) == (None, None)
    finally:
        await helpers.aclose()


async def test_a_stuck_helper_is_stopped_after_the_timeout(clips: list[Path]) -> None:
    helpers = DescribeHelpers(size=1, timeout_seconds=0.5, command=_stand_in("import time; time.sleep(3600)"))
    try:
        with anyio.fail_after(60):
            assert await helpers.describe(clips[0], poster=True) == (None, None)
    finally:
        await helpers.aclose()
    assert helpers._ready == []


async def test_the_helper_never_sees_the_servers_settings(clips: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_MCP_API_KEY", "sk-never-leaves-the-server-0123456789")
    report = """
        import base64, json, os, sys
        sys.stdin.readline()
        env = base64.b64encode(json.dumps(sorted(os.environ)).encode()).decode()
        print(json.dumps({"info": None, "poster": env})); sys.stdout.flush()
    """
    helpers = DescribeHelpers(size=1, command=_stand_in(report))
    try:
        _, seen = await helpers.describe(clips[0], poster=True)
    finally:
        await helpers.aclose()
    assert seen is not None
    names = json.loads(seen)  # the stand-in sent the names where a poster goes
    assert "PATH" in names and not [n for n in names if n.startswith("WAN_MCP_")]


async def test_no_helper_to_start_means_describing_in_process(clips: list[Path]) -> None:
    helpers = DescribeHelpers(size=1, command=["/nonexistent/wan-mcp-helper"])
    try:
        info, poster = await helpers.describe(clips[0], poster=True)
    finally:
        await helpers.aclose()
    assert info is not None and poster is not None


def test_the_server_process_never_loads_pyav_for_a_poster(clips: list[Path]) -> None:
    """Described through the helpers, the describing process itself has no PyAV, FFmpeg or Pillow loaded."""
    program = f"""
        import anyio, sys
        from pathlib import Path
        from wan_mcp.core.media import VideoDescriber

        async def main():
            describer = VideoDescriber(posters=True)
            info, poster = await describer(Path({str(clips[0])!r}))
            again = await describer(Path({str(clips[0])!r}))
            await describer.aclose()
            assert info is not None and poster is not None and again == (info, poster)
            loaded = sorted(m for m in sys.modules if m == "av" or m.startswith(("av.", "PIL")))
            print(loaded)

        anyio.run(main)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(program)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_a_described_file_is_remembered_until_it_changes(clips: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clips[0].read_bytes())
    helpers = DescribeHelpers(size=1)
    describer = VideoDescriber(posters=False, helpers=helpers)
    try:
        first = await describer(copy)
        assert await describer(copy) == first and helpers.started == 1
        copy.write_bytes(clips[1].read_bytes())  # a new version of the file: described again
        info, _ = await describer(copy)
        assert info is not None and info.width == 160
        assert await describer(tmp_path / "missing.mp4") == (None, None)
    finally:
        await describer.aclose()


async def test_a_request_cancelled_mid_answer_stops_that_helper(clips: list[Path], tmp_path: Path) -> None:
    """Its next line would be the cancelled request's answer: it is never reused, and not left running."""
    pids = tmp_path / "pids"
    slow = f"""
        import json, os, sys, time
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        for n, line in enumerate(sys.stdin):
            time.sleep(2 if n == 0 else 0)
            print(json.dumps({{"info": {{"width": n, "height": 1, "duration": 1.0, "has_audio": False,
                                       "codec": "h264"}}, "poster": None}}), flush=True)
    """
    helpers = DescribeHelpers(size=1, command=_stand_in(slow))
    try:
        with anyio.move_on_after(0.3):
            await helpers.describe(clips[0], poster=False)  # cancelled while the stand-in sleeps
        first = int(pids.read_text().split()[0])
        with anyio.fail_after(30):
            while Path(f"/proc/{first}").exists() and "Z" not in Path(f"/proc/{first}/stat").read_text().split()[2]:
                await anyio.sleep(0.05)
        info, _ = await helpers.describe(clips[1], poster=False)
    finally:
        await helpers.aclose()
    assert info is not None and info.width == 0  # a fresh helper's first answer
    assert helpers.started == 2
