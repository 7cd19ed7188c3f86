"""``merge()``: the pure rules every journal backend and the tracker share (property tests)."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from wan_mcp.core.journal import TERMINAL, Observation, TaskRecord, TaskStatus, merge
from wan_mcp.core.journal.records import RANK

STATUSES = get_args(TaskStatus)
ROW = TaskRecord(
    business_id="b",
    task_id="t",
    model="wan2.6",
    mode="t2v",
    status="queued",
    progress=None,
    payload={},
    fingerprint="f",
    created_at=0.0,
    updated_at=0.0,
    video_url=None,
    expires_at=None,
    error_code=None,
    error_message=None,
    local_path=None,
    sha256=None,
    size_bytes=None,
)
maybe_text = st.none() | st.sampled_from(["https://cdn/a.mp4", "https://cdn/b.mp4", "boom"])
observations = st.builds(
    Observation,
    status=st.sampled_from(STATUSES),
    progress=st.none() | st.integers(0, 100),
    video_url=maybe_text,
    expires_at=st.none() | st.integers(1, 2_000_000_000),
    error_code=maybe_text,
    error_message=maybe_text,
)


def fold(row: TaskRecord, news: Observation) -> TaskRecord:
    return replace(row, **merge(row, news))


@given(st.lists(observations, max_size=12))
def test_a_row_only_moves_forward_whatever_the_order(seen: list[Observation]) -> None:
    row = ROW
    for news in seen:
        before, row = row, fold(row, news)
        assert RANK[row.status] >= RANK[before.status]
        if before.status in TERMINAL:
            assert row.status == before.status  # a terminal row never changes status
        if before.progress is not None:
            assert row.progress is not None and row.progress >= before.progress
        if before.video_url is not None:
            assert row.video_url is not None  # None is "no news", never "erase"


@given(observations)
def test_a_repeated_observation_changes_nothing(news: Observation) -> None:
    once = fold(ROW, news)
    assert merge(once, news) == {}


def test_completion_clears_an_error_noted_on_the_way() -> None:
    row = replace(ROW, status="unconfirmed", error_code="timeout", error_message="no answer")
    assert fold(row, Observation(status="completed", video_url="https://cdn/a.mp4")).error_code is None


def test_a_terminal_row_refuses_a_contradicting_story_but_takes_a_fresher_url() -> None:
    done = replace(ROW, status="completed", video_url="https://cdn/a.mp4", expires_at=1)
    assert merge(done, Observation(status="failed", error_code="x")) == {}
    assert merge(done, Observation(status="completed", video_url="https://cdn/b.mp4", expires_at=2)) == {
        "video_url": "https://cdn/b.mp4",
        "expires_at": 2,
    }
