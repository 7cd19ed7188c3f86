"""The README's main job, `wan-mcp demo`, as a newcomer runs it (a subprocess, fast simulated jobs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_all_three_modes_to_valid_mp4s(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wan_mcp", "demo", "--out", str(tmp_path), "--job-seconds", "1"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for mode, size in (("t2v", "1280x720"), ("i2v", "720x1280"), ("r2v", "960x960")):
        line = next(row for row in table.splitlines() if row.startswith(mode))
        assert size in line and "5.0s" in line, line
    videos = list(tmp_path.glob("run-*/videos/*.mp4"))
    assert len(videos) == 3
    assert '"upstream_creates": 3' in proc.stderr
