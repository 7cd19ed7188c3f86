"""The benchmark suite's plumbing (no timing: nothing here measures or asserts speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import Row, percentile, render_table
from bench.upstream import minimum_requests

ROOT = Path(__file__).resolve().parents[2]


def test_bench_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert "--quick" in out.stdout


def test_table_has_one_line_per_row_with_ratio_and_verdict() -> None:
    rows = [
        Row("1", "cold start", 0.6, "s", 0.5, "bare", "<= 1.10x", False),
        Row("5", "list_tasks p50", 2.0, "ms", None, "", "< 5 ms", True),
    ]
    lines = render_table(rows).splitlines()
    assert len(lines) == 4
    assert "1.20x" in lines[2] and "NO" in lines[2]
    assert "yes" in lines[3]


def test_percentile_and_contract_minimum() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    # job 3 s, first poll 0.5 s, then every 1 s: polls at 0.5, 1.5, 2.5, 3.5
    assert minimum_requests(3.0, 0.5, 1.0) == 6
