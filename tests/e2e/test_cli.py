"""The command line a newcomer meets: `wan-mcp simulator` standalone, `--version`, `--help`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx2

from wan_mcp import __version__


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_simulator_runs_standalone_and_stops_on_ctrl_c() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan_mcp", "simulator", "--host", "127.0.0.1", "--port", str(port),
         "--job-seconds", "0.3", "--api-key", "sk-standalone-0123456789"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        auth = {"Authorization": "Bearer sk-standalone-0123456789"}
        body = {"model": "wan2.6", "prompt": "standalone", "resolution": "720p", "duration": 5}
        created = httpx2.post(f"{base}/v1/videos/generations", json=body, headers=auth, timeout=10)
        assert created.status_code == 200 and created.json()["status"] == "queued"
        assert httpx2.post(f"{base}/v1/videos/generations", json=body, timeout=10).status_code == 401
        task_id = created.json()["id"]
        for _ in range(100):
            task = httpx2.get(f"{base}/v1/videos/generations/{task_id}", headers=auth, timeout=10).json()
            if task["status"] == "completed":
                break
            time.sleep(0.1)
        video = httpx2.get(task["result"]["data"][0]["url"], timeout=30)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    assert code == 0


def test_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "wan_mcp", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"wan-mcp {__version__}"
    helped = subprocess.run([sys.executable, "-m", "wan_mcp", "--help"], capture_output=True, text=True, check=True)
    for command in ("serve", "simulator", "demo", "doctor"):
        assert command in helped.stdout
