"""Secrets, shutdown and the disk, end to end against the real processes.

- Secret leak: flows over stdio and streamable HTTP (DEBUG logging) with a recognisable
  gateway key and HTTP tokens, a gateway that rejects a second key (401 upstream) and
  clients with wrong tokens (401 here); the key and tokens appear in no stdout/stderr
  line, tool result, error text, HTTP answer or file under the data dirs. stdout of the
  stdio server carries only JSON-RPC.
- stdio stops cleanly on SIGTERM (the wait answers "still running", the journal closes).
- `wan-mcp doctor`: ok / no key / wrong key / unreachable / unwritable dirs.
- A read-only or full output folder keeps the task and its URL; a later status retries.

The file-boundary and SSRF corpora live in tests/unit/test_files.py and test_urls.py,
downloads under attack in tests/integration/test_download.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from PIL import Image

from tests.e2e.conftest import (
    LEAK_KEY,
    LEAK_WRONG_KEY,
    SECRETS,
    TOKENS,
    Dirs,
    HttpServer,
    connect,
    http_env,
    server_env,
    start_http_server,
    tapped_stdio_params,
)
from tests.helpers import files_of
from tests.helpers import ok as _data
from tests.helpers import text as _text
from wan_mcp.doctor import FINGERPRINT_KEY_FILE, fingerprint
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio


def _assert_no_secret(where: str, blob: str | bytes) -> None:
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    for secret in SECRETS:
        # the whole secret, and its random tail alone (a truncated or re-formatted copy)
        for needle in (secret, secret.rsplit("-", 1)[-1]):
            assert needle not in text, f"{secret[:16]}... leaked into {where}"


def _assert_tree_clean(root: Path) -> int:
    files = files_of(root)
    for path, blob in files.items():
        _assert_no_secret(str(path), blob)
    return len(files)


async def _flow(client: Client, image: Path | None, outside: Path) -> list[str]:
    """Everything an agent might do, successes and mistakes; returns every result as JSON."""
    seen: list[str] = []

    async def call(name: str, args: dict[str, Any]) -> Any:
        result = await client.call_tool(name, args)
        seen.append(result.model_dump_json())
        return result

    task = _data(await call("generate_video", {"prompt": "a lantern in the fog", "resolution": "720p"}))
    if image is not None:
        _data(await call("upload_image", {"path": str(image)}))
    for _ in range(10):
        status = _data(await call("get_task_status", {"task_id": task["task_id"], "wait_seconds": 20}))
        if status["status"] == "completed":
            break
    assert status["status"] == "completed", status
    await call("list_tasks", {})
    for name, args in (
        ("get_task_status", {"task_id": "video_nope"}),
        ("get_task_status", {"task_id": "../../etc"}),
        ("upload_image", {"path": str(outside)}),
        ("generate_video", {"prompt": "x", "duration": 7}),
        ("generate_video", {"prompt": "x", "image": str(outside)}),
        ("list_tasks", {"colour": "red"}),
    ):
        assert (await call(name, args)).is_error
    seen.append(json.dumps([r.model_dump(mode="json") for r in (await client.list_resources()).resources]))
    return seen


async def _rejected_key_flow(client: Client) -> list[str]:
    """The gateway answers 401 for the key: errors must explain without quoting it."""
    gen = await client.call_tool("generate_video", {"prompt": "a refused key", "resolution": "720p"})
    assert gen.is_error and "[auth]" in _text(gen) and "WAN_MCP_API_KEY" in _text(gen), _text(gen)
    status = await client.call_tool("get_task_status", {"task_id": "video_someone_elses"})
    assert status.is_error
    up = await client.call_tool("upload_image", {"data": "data:image/png;base64," + _png_b64()})
    assert up.is_error and "[auth]" in _text(up)
    return [gen.model_dump_json(), status.model_dump_json(), up.model_dump_json()]


def _png_b64() -> str:
    import base64
    import io

    buf = io.BytesIO()
    Image.new("RGB", (960, 540), (10, 120, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _inputs(root: Path) -> tuple[Path, Path]:
    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    image = inputs / "lantern.png"
    Image.new("RGB", (960, 540), (240, 200, 60)).save(image)
    outside = root / "outside-secret.txt"
    outside.write_text("not for the agent")
    return image, outside


# --- secret leak ----------------------------------------------------------------------------


async def test_no_secret_leaks_over_stdio(leak_fresh: SimulatorServer, tmp_path: Path) -> None:
    image, outside = _inputs(tmp_path)
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    env = server_env(leak_fresh, dirs, WAN_MCP_API_KEY=LEAK_KEY, WAN_MCP_HTTP_TOKEN=",".join(TOKENS))
    params, tap = tapped_stdio_params(env, tmp_path / "tap")
    async with Client(params) as client:
        results = await _flow(client, image, outside)
    wrong_env = {**env, "WAN_MCP_API_KEY": LEAK_WRONG_KEY, "WAN_MCP_DATA_DIR": str(tmp_path / "data-wrong")}
    wrong_params, wrong_tap = tapped_stdio_params(wrong_env, tmp_path / "tap")
    async with Client(wrong_params) as client:
        results += await _rejected_key_flow(client)
    assert tap.returncode() == 0 and wrong_tap.returncode() == 0

    for i, blob in enumerate(results):
        _assert_no_secret(f"tool result #{i}", blob)
    for t in (tap, wrong_tap):
        stderr = t.err.read_text()
        assert "DEBUG" in stderr  # the most talkative level was on
        _assert_no_secret("stderr", stderr)
        lines = t.out.read_text().splitlines()
        assert len(lines) >= 3
        for line in lines:  # stdout is the MCP wire and nothing else
            message = json.loads(line)
            assert message.get("jsonrpc") == "2.0" and ("id" in message or "method" in message), line
        _assert_no_secret("stdout", t.out.read_text())
    assert _assert_tree_clean(tmp_path / "data") >= 1
    assert _assert_tree_clean(tmp_path / "data-wrong") >= 1
    assert leak_fresh.count(endpoint="create") == 2  # one accepted, one refused with 401 upstream


async def test_no_secret_leaks_over_http(
    http_server: HttpServer, leak_fresh: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    image, outside = _inputs(http_server.data.parent)
    async with connect(http_server) as client:
        results = await _flow(client, image, outside)
    wrong = start_http_server(http_env(leak_fresh, tmp_path, WAN_MCP_API_KEY=LEAK_WRONG_KEY), "http", e2e_logs)
    try:
        async with connect(wrong, TOKENS[1]) as client:
            results += await _rejected_key_flow(client)
        # our own 401s: the presented (wrong) token is not echoed, nor the right ones
        for token in ("nope", TOKENS[0][:-2], TOKENS[1] + "00"):
            response = httpx2.post(
                wrong.base + "/mcp",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            )
            assert response.status_code == 401
            results.append(response.text + json.dumps(dict(response.headers)))
            assert token not in response.text + str(response.headers)
    finally:
        assert wrong.stop() == 0
    for i, blob in enumerate(results):
        _assert_no_secret(f"tool result #{i}", blob)
    logs = sorted(e2e_logs.iterdir())
    assert len(logs) >= 4  # this session's servers, at DEBUG
    for path in logs:
        _assert_no_secret(str(path), path.read_bytes())
    assert "DEBUG" in wrong.stderr.read_text()
    assert _assert_tree_clean(http_server.data) >= 1
    assert _assert_tree_clean(wrong.data) >= 1


# --- stdio stop -------------------------------------------------------------------------------


async def test_sigterm_stops_stdio_cleanly_mid_wait(leak_fresh: SimulatorServer, tmp_path: Path) -> None:
    leak_fresh.configure(job_seconds=600.0)  # runs past the 30 s wait: only the stop can end it early
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    dirs.inputs.mkdir()
    params, tap = tapped_stdio_params(server_env(leak_fresh, dirs, WAN_MCP_API_KEY=LEAK_KEY), tmp_path / "tap")
    async with Client(params) as client:
        task = _data(await client.call_tool("generate_video", {"prompt": "stdio dusk", "resolution": "720p"}))

        async def term_soon() -> None:
            await anyio.sleep(0.7)
            os.kill(tap.pid_value(), signal.SIGTERM)

        with anyio.fail_after(25):  # a hang guard: the 30 s wait must end early, by the stop
            async with anyio.create_task_group() as tg:
                tg.start_soon(term_soon)
                result = await client.call_tool("get_task_status", {"task_id": task["task_id"], "wait_seconds": 30})
        assert not result.is_error, _text(result)
        assert result.structured_content["status"] in ("queued", "in_progress")
        assert "Still running" in _text(result)
        rc = await anyio.to_thread.run_sync(tap.returncode)  # exits although the client still holds stdin
    assert rc == 0, tap.err.read_text()
    assert not any(dirs.data.glob("*-wal")), "the journal was not closed cleanly"
    assert "SIGTERM" in tap.err.read_text()


# --- doctor -------------------------------------------------------------------------------------


def test_doctor_reports_each_problem_with_a_fix_and_no_secret(leak_fresh: SimulatorServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    base |= {"WAN_MCP_BASE_URL": leak_fresh.base_url, "WAN_MCP_HTTP_TOKEN": ",".join(TOKENS)}

    def case(name: str, **env: str) -> dict[str, str]:
        return {
            **base,
            "WAN_MCP_DATA_DIR": str(tmp_path / name / "data"),
            "WAN_MCP_OUTPUT_DIR": str(tmp_path / name / "videos"),
            **env,
        }

    cases = {
        "ok": case("ok", WAN_MCP_API_KEY=LEAK_KEY),
        "no-key": case("no-key"),
        "wrong-key": case("wrong-key", WAN_MCP_API_KEY=LEAK_WRONG_KEY),
        "unreachable": case("unreachable", WAN_MCP_API_KEY=LEAK_KEY, WAN_MCP_BASE_URL="http://127.0.0.1:9"),
        "bad-dirs": case("bad-dirs", WAN_MCP_API_KEY=LEAK_KEY, WAN_MCP_OUTPUT_DIR=str(blocker / "videos")),
        "bad-config": case("bad-config", WAN_MCP_API_KEY=LEAK_KEY, WAN_MCP_MAX_WAIT_SECONDS="soon"),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "wan_mcp", "doctor"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, env in cases.items()
    }
    out: dict[str, tuple[int, str]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=30)
        out[name] = (proc.returncode, stdout.decode() + stderr.decode())
        _assert_no_secret(f"doctor output ({name})", out[name][1])

    def fp(secret: str, name: str) -> str:
        return fingerprint(secret, (tmp_path / name / "data" / FINGERPRINT_KEY_FILE).read_bytes())

    rc, text = out["ok"]
    assert rc == 0, text
    assert "[FAIL]" not in text and "All checks passed" in text
    assert f"present ({fp(LEAK_KEY, 'ok')})" in text and "hmac:" in text
    assert re.search(r"key accepted: balance \d", text) and "reachable" in text
    assert fp(TOKENS[0], "ok") in text and fp(TOKENS[1], "ok") in text
    for name in ("data dir", "output dir"):
        assert f"[ok  ] {name}" in text
    assert "HTTP Request" not in text  # no client chatter

    rc, text = out["no-key"]
    assert rc == 1 and "[FAIL] api key: WAN_MCP_API_KEY is not set" in text and "[skip] gateway" in text

    rc, text = out["wrong-key"]
    assert rc == 1 and "[ok  ] gateway" in text, text
    assert "[FAIL] key accepted: [auth]" in text and "401" in text and "WAN_MCP_API_KEY" in text
    assert f"present ({fp(LEAK_WRONG_KEY, 'wrong-key')})" in text

    rc, text = out["unreachable"]
    assert rc == 1 and "[FAIL] gateway: [network]" in text and "base_url" in text

    rc, text = out["bad-dirs"]
    assert rc == 1 and "[FAIL] output dir" in text and "WAN_MCP_OUTPUT_DIR" in text
    assert "[ok  ] data dir" in text

    rc, text = out["bad-config"]
    assert rc == 1 and "[FAIL] config" in text and "max_wait_seconds" in text


# --- a read-only or full output folder -----------------------------------------------------------


async def _until_completed_or_error(client: Client, task_id: str) -> Any:
    for _ in range(20):
        result = await client.call_tool("get_task_status", {"task_id": task_id, "wait_seconds": 20})
        if result.is_error or result.structured_content["status"] == "completed":
            return result
    raise AssertionError("never finished")


def _assert_kept(text: str, task_id: str, why: str) -> None:
    assert "[download_failed]" in text and f"task_id={task_id}" in text, text
    assert why in text and "WAN_MCP_OUTPUT_DIR" in text and "get_task_status" in text, text


async def test_unwritable_output_dir_keeps_the_task_and_a_later_status_retries(
    leak_fresh: SimulatorServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the output folder should be")
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", blocker)
    dirs.inputs.mkdir()
    env = server_env(leak_fresh, dirs, WAN_MCP_API_KEY=LEAK_KEY)
    async with Client(tapped_stdio_params(env, tmp_path / "tap")[0]) as client:
        task = _data(await client.call_tool("generate_video", {"prompt": "no room", "resolution": "720p"}))
        failed = await _until_completed_or_error(client, task["task_id"])
        assert failed.is_error
        _assert_kept(_text(failed), task["task_id"], "cannot create the output folder")
        kept = _data(await client.call_tool("get_task_status", {"task_id": task["task_id"], "download": False}))
        assert kept["status"] == "completed" and kept["video_url"].startswith("http://127.0.0.1")
        blocker.unlink()
        blocker.mkdir()
        done = _data(await client.call_tool("get_task_status", {"task_id": task["task_id"]}))
    assert done["status"] == "completed" and Path(done["local_path"]).parent == blocker
    assert leak_fresh.count(endpoint="create") == 1


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None,
    reason="needs root to mount a tiny tmpfs",
)
async def test_read_only_then_full_disk_keep_the_task_until_there_is_room(
    leak_fresh: SimulatorServer, tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=16k,mode=0700,ro", "tmpfs", str(videos)):
        pytest.skip("cannot mount tmpfs here")
    try:
        dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", videos)
        dirs.inputs.mkdir()
        env = server_env(leak_fresh, dirs, WAN_MCP_API_KEY=LEAK_KEY)
        async with Client(tapped_stdio_params(env, tmp_path / "tap")[0]) as client:
            task = _data(await client.call_tool("generate_video", {"prompt": "tiny disk", "resolution": "720p"}))
            read_only = await _until_completed_or_error(client, task["task_id"])
            assert read_only.is_error
            _assert_kept(_text(read_only), task["task_id"], "not writable (Read-only file system)")

            assert _mount("-o", "remount,rw,size=16k", str(videos))
            full = await client.call_tool("get_task_status", {"task_id": task["task_id"]})
            assert full.is_error
            _assert_kept(_text(full), task["task_id"], "is full")
            assert list(videos.iterdir()) == []  # the partial file was removed

            assert _mount("-o", "remount,size=64m", str(videos))
            done = _data(await client.call_tool("get_task_status", {"task_id": task["task_id"]}))
        assert done["status"] == "completed" and Path(done["local_path"]).stat().st_size > 16 * 1024
        assert leak_fresh.count(endpoint="create") == 1
    finally:
        subprocess.run(["umount", "-l", str(videos)], capture_output=True)
