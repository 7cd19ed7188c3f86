"""The README's main job, `wan-mcp demo`, as a newcomer runs it (a subprocess, fast simulated jobs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The user's own settings, which the demo must not use (its server would be refused or overspend).
USERS_OWN = {
    "WAN_MCP_API_KEY": "sk-the-users-real-key-0123456789",
    "WAN_MCP_BASE_URL": "http://127.0.0.1:9",
    "WAN_MCP_BUDGET_DAILY_USD": "0.01",
}


@pytest.mark.parametrize("how", [[], ["--stdio"]], ids=["in-process", "stdio"])
def test_demo_runs_all_three_modes_to_valid_mp4s_and_a_film(tmp_path: Path, how: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wan_mcp", "demo", "--out", str(tmp_path), "--job-seconds", "1", *how],
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ, **USERS_OWN},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for mode, size, seconds in (
        ("t2v", "1280x720", "5.0s"),
        ("i2v", "720x1280", "5.0s"),
        ("r2v", "960x960", "5.0s"),
        ("film", "1280x720", "15.0s"),
    ):
        line = next(row for row in table.splitlines() if row.startswith(mode))
        assert size in line and seconds in line, line
    # Each job's quote, and the day's spend (issue 10).
    assert "0.5" in next(row for row in table.splitlines() if row.startswith("t2v"))
    assert "Spent today: USD 1.5 of USD 25" in table
    videos = list(tmp_path.glob("run-*/videos/*.mp4"))
    assert len(videos) == 4
    assert '"upstream_creates": 3' in proc.stderr  # the film is made locally
    assert USERS_OWN["WAN_MCP_API_KEY"] not in proc.stdout + proc.stderr
