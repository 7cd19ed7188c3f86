"""The two small checks the fault and crash tests rely on (issue 5), tested directly.

- ``video_problem``: a download that "succeeded" with the wrong bytes (an HTML page with
  200, a body cut short under an honest Content-Length) is refused before it is committed.
- ``_lease_holder_gone``: a download lease left by a process that no longer exists is
  recognised, so a restart after kill -9 does not wait out the lease.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from wan_mcp.core.leases import holder_gone as _lease_holder_gone
from wan_mcp.core.media import video_problem


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


MP4 = _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2") + _box(b"moov", b"\x00" * 40) + _box(b"mdat", b"\x01" * 500)


def test_a_whole_mp4_passes(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(MP4)
    assert video_problem(path) is None
    # 64-bit box sizes and a last box "to the end of the file" are valid too.
    large = (1).to_bytes(4, "big") + b"mdat" + (16 + 100).to_bytes(8, "big") + b"\x02" * 100
    path.write_bytes(MP4[: len(MP4) - 508] + large)
    assert video_problem(path) is None
    path.write_bytes(MP4[: len(MP4) - 508] + (0).to_bytes(4, "big") + b"mdat" + b"\x03" * 64)
    assert video_problem(path) is None


def test_wrong_or_cut_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    for bad, why in (
        (b"<!DOCTYPE html><html><body>gateway hiccup</body></html>", "not an MP4"),
        (MP4[: len(MP4) // 2], "truncated"),
        (MP4[:-3], "truncated"),
        (_box(b"ftyp", b"isom") + _box(b"mdat", b"\x00" * 10), "no moov"),
        (b"", "no moov"),
        (MP4 + b"\x00\x00\x00", "box header"),
    ):
        path.write_bytes(bad)
        problem = video_problem(path)
        assert problem is not None and why in problem, (bad[:20], problem)
    assert video_problem(tmp_path / "missing.mp4") is not None


def test_webm_is_recognised_not_walked(tmp_path: Path) -> None:
    path = tmp_path / "v.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 60 + b"webm")
    assert video_problem(path) is None


def test_a_lease_of_a_dead_process_on_this_host_is_gone() -> None:
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: its pid names no process (until reused)
    assert _lease_holder_gone(f"{host}:{child.pid}:abcd1234")
    assert not _lease_holder_gone(f"{host}:{os.getpid()}:abcd1234")  # ourselves: alive
    assert not _lease_holder_gone(f"{host}:{os.getppid()}:abcd1234")  # a live process
    assert not _lease_holder_gone(f"elsewhere-{host}:{child.pid}:abcd1234")  # another host: cannot tell
    assert not _lease_holder_gone("1234-abcd1234")  # the old owner format: cannot tell


def test_a_killed_but_unreaped_child_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = f"{socket.gethostname()}:{child.pid}:abcd1234"
        assert not _lease_holder_gone(owner)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, but still a zombie
        assert _lease_holder_gone(owner)
    finally:
        child.kill()
        child.wait()
