"""The task journal against real SQLite files: durability, monotonic status, leases, failure modes.

No mocks: every test opens a real file in tmp_path, and the cross-process tests spawn real
Python processes, because the guarantees under test (fsync, WAL sharing, locks) live below
any mock.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import stat
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.journal_stores import Store
from wan_mcp.core.journal import (
    SCHEMA_VERSION,
    TERMINAL,
    Observation,
    SqliteJournal,
    TaskJournal,
    TaskRecord,
    TaskStatus,
    UploadRecord,
)
from wan_mcp.core.journal.records import RATE_SLOT_HORIZON
from wan_mcp.core.journal.schema import _list_sql
from wan_mcp.errors import ErrorCode, WanError

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.sqlite3"


class FakeClock:
    """Wall clock under test control, for windows and lease expiry without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request_fingerprint(body: dict[str, Any]) -> str:
    """Stand-in for core.request's fingerprint: the journal only stores and compares it."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def payload(prompt: str = "a cat surfing at sunset") -> dict[str, Any]:
    return {"model": "wan2.6-t2v", "prompt": prompt, "duration": 5, "size": "1280*720"}


async def submit(j: TaskJournal, business_id: str | None = None, prompt: str = "a cat") -> TaskRecord:
    body = payload(prompt)
    return await j.record_submission(
        business_id=business_id or f"biz-{uuid.uuid4().hex}",
        model="wan2.6-t2v",
        mode="t2v",
        payload=body,
        fingerprint=request_fingerprint(body),
    )


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


# --- opening, files, migrations ----------------------------------------------------------


async def test_open_creates_private_dir_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.sqlite3"
    j = await SqliteJournal.open(path)
    await submit(j)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wal = path.with_name(path.name + "-wal")
    assert wal.exists()
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600  # SQLite copies the main file's mode
    await j.close()


async def test_existing_loose_file_is_tightened(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.touch(mode=0o644)
    os.chmod(db_path, 0o644)
    j = await SqliteJournal.open(db_path)
    await j.close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


async def test_migrations_from_empty_file(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"")  # a zero-length file is a valid empty database
    j = await SqliteJournal.open(db_path)
    await j.close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert {"tasks", "uploads", "download_leases", "confirmations", "rate_slots", "server_keys"} <= names
    assert {"tasks_task_id", "tasks_created", "tasks_status_created", "tasks_fingerprint", "tasks_spender"} <= names
    # Re-opening an up-to-date file migrates nothing and keeps data.
    j = await SqliteJournal.open(db_path)
    rec = await submit(j)
    await j.close()
    j = await SqliteJournal.open(db_path)
    assert await j.get(rec.business_id) == rec
    await j.close()


async def test_newer_schema_is_refused_clearly(db_path: Path) -> None:
    j = await SqliteJournal.open(db_path)
    await j.close()
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(WanError) as info:
        await SqliteJournal.open(db_path)
    err = info.value
    assert err.code is ErrorCode.JOURNAL
    assert str(db_path) in err.message
    assert f"schema version {SCHEMA_VERSION + 1}" in err.message
    assert err.hint and "upgrade wan-mcp" in err.hint


async def test_corrupt_file_names_the_path_and_the_fix(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(os.urandom(64) + b"this is not a database" * 200)
    with pytest.raises(WanError) as info:
        await SqliteJournal.open(db_path)
    err = info.value
    assert err.code is ErrorCode.JOURNAL
    assert str(db_path) in str(err)
    assert "corrupt" in str(err)
    assert err.hint and "move it aside" in err.hint and "recovered by id" in err.hint
    assert not isinstance(err.__context__, WanError)  # translated, not wrapped twice


async def test_damaged_pages_surface_as_journal_error_not_sqlite3(db_path: Path) -> None:
    j = await SqliteJournal.open(db_path)
    for i in range(300):
        await submit(j, f"biz-{i}", prompt="p" * 200)
    await j.close()  # checkpoints the WAL into the main file
    data = bytearray(db_path.read_bytes())
    assert len(data) > 3 * 4096
    data[4096 : len(data)] = os.urandom(len(data) - 4096)  # keep the header, destroy every page after it
    db_path.write_bytes(bytes(data))
    with pytest.raises(WanError) as info:
        j = await SqliteJournal.open(db_path)
        try:
            await j.list(limit=1000)
        finally:
            await j.close()
    assert info.value.code is ErrorCode.JOURNAL
    assert str(db_path) in info.value.message
    assert info.value.hint and "move it aside" in info.value.hint


async def test_foreign_sqlite_database_is_left_alone(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(WanError, match="not a wan-mcp task journal") as info:
        await SqliteJournal.open(db_path)
    assert info.value.code is ErrorCode.JOURNAL
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 0


async def test_lock_held_beyond_busy_timeout_is_a_journal_error(db_path: Path) -> None:
    j = await SqliteJournal.open(db_path, busy_timeout=0.2)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is "writing"
    try:
        with pytest.raises(WanError) as info:
            await submit(j)
        assert info.value.code is ErrorCode.JOURNAL
        assert str(db_path) in info.value.message
        assert info.value.hint and "another process holds a lock" in info.value.hint
        assert await j.list() == []  # reads still work under a writer (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await submit(j)  # and the journal recovers once the lock is gone
    await j.close()


async def test_unusable_location_is_a_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    path = blocker / "journal.sqlite3"
    with pytest.raises(WanError) as info:
        await SqliteJournal.open(path)
    assert info.value.code is ErrorCode.JOURNAL
    assert str(path) in info.value.message
    assert info.value.hint and "WAN_MCP_DATA_DIR" in info.value.hint


async def test_closed_journal_raises_journal_error_and_close_is_idempotent(db_path: Path) -> None:
    j = await SqliteJournal.open(db_path)
    await j.close()
    await j.close()
    with pytest.raises(WanError) as info:
        await j.get("x")
    assert info.value.code is ErrorCode.JOURNAL


# --- lifecycle ------------------------------------------------------------------------------


async def test_full_lifecycle(journal: TaskJournal) -> None:
    body = {
        "model": "wan2.6-i2v",
        "prompt": "雪の中の狐",
        "image_url": "https://x/i.png",
        "extra": {"a": [1, 2]},
    }
    rec = await journal.record_submission(
        business_id="biz-1", model="wan2.6-i2v", mode="i2v", payload=body, fingerprint="fp-1"
    )
    assert (rec.status, rec.task_id, rec.id, rec.progress) == ("submitting", None, "biz-1", None)
    assert rec.payload == body and list(rec.payload) == list(body)  # exact body, key order kept
    assert rec.created_at == rec.updated_at
    assert [r.business_id for r in await journal.unsettled()] == ["biz-1"]

    rec = await journal.attach_task("biz-1", task_id="task-1", status="queued")
    assert (rec.status, rec.task_id, rec.id) == ("queued", "task-1", "task-1")
    assert await journal.unsettled() == []
    assert [r.id for r in await journal.active()] == ["task-1"]
    assert await journal.get("task-1") == await journal.get("biz-1") == rec

    rec = await journal.observe("task-1", Observation(status="in_progress", progress=40))
    assert (rec.status, rec.progress) == ("in_progress", 40)
    rec = await journal.observe(
        "task-1", Observation(status="completed", progress=100, video_url="https://cdn/v.mp4", expires_at=1_800_000_000)
    )
    assert (rec.status, rec.video_url, rec.expires_at, rec.terminal) == (
        "completed",
        "https://cdn/v.mp4",
        1_800_000_000,
        True,
    )
    assert await journal.active() == []

    rec = await journal.record_download("task-1", local_path="/out/task-1.mp4", sha256="ab" * 32, size_bytes=1234)
    assert (rec.local_path, rec.sha256, rec.size_bytes, rec.status) == (
        "/out/task-1.mp4",
        "ab" * 32,
        1234,
        "completed",
    )
    assert [r.id for r in await journal.list()] == ["task-1"]
    assert await journal.get("nope") is None


async def test_unknown_id_updates_are_not_found(journal: TaskJournal) -> None:
    for call in (
        journal.observe("ghost", Observation(status="queued")),
        journal.attach_task("ghost", task_id="t", status="queued"),
        journal.mark_rejected("ghost", error_code="x", error_message="y"),
        journal.record_download("ghost", local_path="/p", sha256="s", size_bytes=1),
    ):
        with pytest.raises(WanError) as info:
            await call
        assert info.value.code is ErrorCode.NOT_FOUND
        assert info.value.task_id == "ghost"


async def test_duplicate_business_id(journal: TaskJournal) -> None:
    first = await submit(journal, "biz-dup")
    await journal.attach_task("biz-dup", task_id="t-dup", status="queued")
    # The identical submission again (two callers importing one task at once): the existing row.
    again = await submit(journal, "biz-dup")
    assert again.business_id == first.business_id and again.task_id == "t-dup"
    # The same business id for a different request is a bug: refused, nothing changes.
    with pytest.raises(WanError) as info:
        await submit(journal, "biz-dup", prompt="something else")
    assert info.value.code is ErrorCode.JOURNAL
    assert [r.payload["prompt"] for r in await journal.list()] == ["a cat"]


async def test_attach_is_idempotent_and_never_rebinds(journal: TaskJournal) -> None:
    await submit(journal, "biz-a")
    await submit(journal, "biz-b")
    await journal.attach_task("biz-a", task_id="t-a", status="queued")
    again = await journal.attach_task("biz-a", task_id="t-a", status="in_progress", progress=10)
    assert (again.status, again.progress) == ("in_progress", 10)
    with pytest.raises(WanError) as info:
        await journal.attach_task("biz-a", task_id="t-other", status="queued")
    assert info.value.code is ErrorCode.JOURNAL and info.value.task_id == "t-a"
    with pytest.raises(WanError) as info:
        await journal.attach_task("biz-b", task_id="t-a", status="queued")  # id owned by biz-a
    assert info.value.code is ErrorCode.JOURNAL
    assert (await journal.get("biz-b")) is not None
    assert (await journal.get("biz-b")).task_id is None  # type: ignore[union-attr]


async def test_unconfirmed_and_rejected(journal: TaskJournal) -> None:
    await submit(journal, "biz-u")
    await submit(journal, "biz-r")
    await submit(journal, "biz-ok")
    rec = await journal.mark_unconfirmed("biz-u", error_code="submission_unconfirmed", error_message="timeout")
    assert (rec.status, rec.error_code) == ("unconfirmed", "submission_unconfirmed")
    assert {r.business_id for r in await journal.unsettled()} == {"biz-u", "biz-r", "biz-ok"}

    rec = await journal.mark_rejected("biz-r", error_code="payment", error_message="balance too low")
    assert rec.status == "rejected" and rec.terminal
    assert {r.business_id for r in await journal.unsettled()} == {"biz-u", "biz-ok"}
    # rejected is terminal: neither a stale unconfirmed nor a poll moves it
    assert (await journal.mark_unconfirmed("biz-r", error_code="x", error_message="y")).status == "rejected"
    assert (await journal.observe("biz-r", Observation(status="queued"))).status == "rejected"

    # A row with a task id was accepted upstream: it can't be called rejected or unconfirmed.
    await journal.attach_task("biz-ok", task_id="t-ok", status="queued")
    assert (await journal.mark_rejected("biz-ok", error_code="x", error_message="y")).status == "queued"
    assert (await journal.mark_unconfirmed("biz-ok", error_code="x", error_message="y")).status == "queued"

    # Reconciling the unconfirmed one later finds its task: errors cleared, row settled.
    rec = await journal.attach_task("biz-u", task_id="t-u", status="in_progress", progress=5)
    assert (rec.status, rec.error_code, rec.error_message, rec.progress) == ("in_progress", None, None, 5)
    assert await journal.unsettled() == []


async def test_attach_revives_a_wrongly_rejected_row(journal: TaskJournal) -> None:
    """A task id proves the gateway accepted the job; hiding a paid job is the worse error."""
    await submit(journal, "biz-x")
    await journal.mark_rejected("biz-x", error_code="invalid_request", error_message="?")
    rec = await journal.attach_task("biz-x", task_id="t-x", status="queued")
    assert (rec.status, rec.task_id, rec.error_code) == ("queued", "t-x", None)


async def test_terminal_rows_never_regress(journal: TaskJournal) -> None:
    await submit(journal, "biz-c")
    await journal.attach_task("biz-c", task_id="t-c", status="queued")
    done = await journal.observe(
        "t-c", Observation(status="completed", progress=100, video_url="https://cdn/c.mp4", expires_at=1_800_000_100)
    )
    for stale in ("queued", "in_progress", "submitting", "unconfirmed", "failed"):
        rec = await journal.observe("t-c", Observation(status=stale, progress=3, error_code="boom"))
        assert rec == done
    # The same terminal observation without a url keeps the url ...
    rec = await journal.observe("t-c", Observation(status="completed", video_url=None))
    assert rec.video_url == "https://cdn/c.mp4"
    # ... and a re-signed url with a later expiry refreshes it.
    rec = await journal.observe(
        "t-c", Observation(status="completed", video_url="https://cdn/c2.mp4", expires_at=1_800_000_200)
    )
    assert (rec.video_url, rec.expires_at, rec.progress) == ("https://cdn/c2.mp4", 1_800_000_200, 100)

    await submit(journal, "biz-f")
    await journal.attach_task("biz-f", task_id="t-f", status="in_progress")
    failed = await journal.observe(
        "t-f", Observation(status="failed", error_code="generation_failed", error_message="x")
    )
    assert (await journal.observe("t-f", Observation(status="completed", video_url="https://late"))) == failed


async def test_progress_and_status_only_move_forward(journal: TaskJournal) -> None:
    await submit(journal, "biz-p")
    await journal.attach_task("biz-p", task_id="t-p", status="queued")
    assert (await journal.observe("t-p", Observation(status="in_progress", progress=60))).progress == 60
    rec = await journal.observe("t-p", Observation(status="in_progress", progress=30))
    assert rec.progress == 60
    rec = await journal.observe("t-p", Observation(status="queued", progress=70))  # stale status, newer progress
    assert (rec.status, rec.progress) == ("in_progress", 70)
    rec = await journal.observe("t-p", Observation(status="in_progress"))  # no progress: no news
    assert rec.progress == 70


STATUS_VALUES: list[TaskStatus] = [
    "queued",
    "in_progress",
    "completed",
    "failed",
    "submitting",
    "unconfirmed",
]
observation = st.tuples(
    st.sampled_from(STATUS_VALUES),
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.sampled_from(["https://a/v.mp4", "https://b/v.mp4"])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(observations=st.lists(observation, min_size=1, max_size=12))
async def test_any_order_of_observations_is_monotonic(
    journal: TaskJournal, observations: list[tuple[TaskStatus, int | None, str | None]]
) -> None:
    rank = {"submitting": 0, "unconfirmed": 0, "queued": 1, "in_progress": 2}
    biz = f"biz-{uuid.uuid4().hex}"
    await submit(journal, biz)
    prev = await journal.attach_task(biz, task_id=f"t-{biz}", status="queued")
    for status, progress, url in observations:
        rec = await journal.observe(prev.id, Observation(status=status, progress=progress, video_url=url))
        if prev.terminal:
            assert rec.status == prev.status
        else:
            assert rank.get(rec.status, 3) >= rank[prev.status]
        if prev.progress is not None:
            assert rec.progress is not None and rec.progress >= prev.progress
        if prev.video_url is not None:
            assert rec.video_url is not None
        if prev.status in TERMINAL and status != prev.status:
            assert rec == prev
        prev = rec


# --- durability -----------------------------------------------------------------------------


async def test_rows_survive_close_and_reopen(store: Store) -> None:
    j = await store.open()
    a = await submit(j, "biz-1")
    b = await j.attach_task((await submit(j, "biz-2")).business_id, task_id="t-2", status="queued")
    await j.close()
    j = await store.open()
    assert await j.get("biz-1") == a
    assert await j.get("t-2") == b
    await j.close()


async def test_submission_survives_process_death_without_close(db_path: Path) -> None:
    """The brutal case: the host kills us right after the commit, nothing is closed or flushed."""
    code = """
        import os, sys, anyio
        from pathlib import Path
        from wan_mcp.core.journal import SqliteJournal

        async def main() -> None:
            j = await SqliteJournal.open(Path(sys.argv[1]))
            await j.record_submission(business_id="biz-crash", model="m", mode="t2v",
                                      payload={"prompt": "p"}, fingerprint="f")
            await j.attach_task("biz-crash", task_id="t-crash", status="queued")
            await j.record_submission(business_id="biz-inflight", model="m", mode="t2v",
                                      payload={"prompt": "q"}, fingerprint="g")
            os._exit(0)  # no close, no checkpoint, no atexit

        anyio.run(main)
    """
    proc = run_python(code, str(db_path))
    assert proc.returncode == 0, proc.stderr
    j = await SqliteJournal.open(db_path)
    crashed = await j.get("t-crash")
    assert crashed is not None and crashed.business_id == "biz-crash" and crashed.status == "queued"
    assert [r.business_id for r in await j.unsettled()] == ["biz-inflight"]
    await j.close()


async def test_two_processes_writing_concurrently(db_path: Path) -> None:
    j = await SqliteJournal.open(db_path)  # migrate first so the writers only race on rows
    code = """
        import sys, anyio
        from pathlib import Path
        from wan_mcp.core.journal import SqliteJournal

        async def main() -> None:
            j = await SqliteJournal.open(Path(sys.argv[1]))
            tag = sys.argv[2]
            for i in range(200):
                await j.record_submission(business_id=f"{tag}-{i}", model="m", mode="t2v",
                                          payload={"i": i}, fingerprint=f"{tag}-{i}")
                if i % 2:
                    await j.attach_task(f"{tag}-{i}", task_id=f"t-{tag}-{i}", status="queued")
            await j.close()

        anyio.run(main)
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(db_path), tag],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    rows = await j.list(limit=1000)
    assert len(rows) == 400
    assert {r.business_id for r in rows} == {f"{t}-{i}" for t in ("p1", "p2") for i in range(200)}
    assert sum(r.task_id is not None for r in rows) == 200
    await j.close()


async def test_concurrent_calls_in_one_process(journal: TaskJournal) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(submit, journal, f"biz-{i:03d}")
    assert len(await journal.list(limit=1000)) == 100


# --- list, duplicates, uploads --------------------------------------------------------------


async def test_list_filters_and_pages(store: Store) -> None:
    clock = FakeClock()
    j = await store.open(clock=clock)
    for i in range(10):
        clock.now += 1
        await submit(j, f"biz-{i}")
        if i % 3 == 0:
            await j.attach_task(f"biz-{i}", task_id=f"t-{i}", status="queued")
    newest = await j.list(limit=4)
    assert [r.business_id for r in newest] == ["biz-9", "biz-8", "biz-7", "biz-6"]
    older = await j.list(limit=4, before=newest[-1].created_at)
    assert [r.business_id for r in older] == ["biz-5", "biz-4", "biz-3", "biz-2"]
    assert [r.id for r in await j.list(status="queued")] == ["t-9", "t-6", "t-3", "t-0"]
    assert [r.id for r in await j.list(status="queued", before=newest[-1].created_at, limit=1)] == ["t-3"]
    assert await j.list(status="completed") == []
    assert await j.list(limit=0) == []
    with pytest.raises(WanError) as info:
        await j.list(status="done")
    assert info.value.code is ErrorCode.INVALID_REQUEST and info.value.field == "status"
    assert info.value.allowed and "completed" in info.value.allowed
    await j.close()


async def test_find_recent_duplicate(store: Store) -> None:
    clock = FakeClock()
    j = await store.open(clock=clock)
    first = await submit(j, "biz-1", prompt="same")
    clock.now += 10
    second = await submit(j, "biz-2", prompt="same")
    await submit(j, "biz-3", prompt="different")
    assert (await j.find_recent_duplicate(first.fingerprint, 60)) == second  # newest wins
    await j.mark_rejected("biz-2", error_code="payment", error_message="no balance")
    assert (await j.find_recent_duplicate(first.fingerprint, 60)) == first  # rejected never counts
    clock.now += 100
    assert await j.find_recent_duplicate(first.fingerprint, 60) is None  # outside the window
    assert await j.find_recent_duplicate("unknown", 1e9) is None
    await j.close()


async def test_uploads(journal: TaskJournal) -> None:
    sha = "c0ffee" * 10
    assert await journal.get_upload(sha, "image") is None
    rec = UploadRecord(
        sha256=sha,
        kind="image",
        url="https://files/1.png",
        mime_type="image/png",
        size_bytes=2048,
        width=1280,
        height=720,
        created_at=1.5,
        changes=("converted HEIC to JPEG", "resized to 1280x720"),
    )
    await journal.put_upload(rec)
    assert await journal.get_upload(sha, "image") == rec
    assert await journal.get_upload(sha, "video") is None  # same bytes, other kind: separate entry
    fresher = UploadRecord(
        sha256=sha,
        kind="image",
        url="https://files/2.png",
        mime_type="image/png",
        size_bytes=2048,
        width=None,
        height=None,
        created_at=9.0,
        changes=(),
    )
    await journal.put_upload(fresher)
    assert await journal.get_upload(sha, "image") == fresher


# --- download leases ------------------------------------------------------------------------


async def test_download_lease_between_two_journals_on_one_file(store: Store) -> None:
    clock = FakeClock()
    a = await store.open(clock=clock)
    b = await store.open(clock=clock)
    assert await a.claim_download("t-1", "proc-a", ttl_seconds=30)
    assert not await b.claim_download("t-1", "proc-b", ttl_seconds=30)
    assert await b.claim_download("t-2", "proc-b", ttl_seconds=30)  # other tasks are independent
    assert await a.claim_download("t-1", "proc-a", ttl_seconds=30)  # the holder renews

    await b.release_download("t-1", "proc-b")  # not the holder: no effect
    assert not await b.claim_download("t-1", "proc-b", ttl_seconds=30)

    clock.now += 31  # the holder died: its lease expires and may be taken over
    assert await b.claim_download("t-1", "proc-b", ttl_seconds=30)
    assert not await a.claim_download("t-1", "proc-a", ttl_seconds=30)
    await b.release_download("t-1", "proc-b")
    assert await a.claim_download("t-1", "proc-a", ttl_seconds=30)
    await a.close()
    await b.close()


# --- shared rate budget and server keys ------------------------------------------------------


async def test_rate_slots_are_booked_spacing_apart_by_every_journal_on_the_store(store: Store) -> None:
    clock = FakeClock()
    journals = [await store.open(clock=clock) for _ in range(3)]
    waits: list[float] = []

    async def book(j: TaskJournal) -> None:
        waits.append(await j.take_rate_slot("upstream", 0.5))

    async with anyio.create_task_group() as tg:  # 12 callers at one instant, on three "replicas"
        for n in range(12):
            tg.start_soon(book, journals[n % 3])
    assert sorted(waits) == pytest.approx([0.5 * k for k in range(12)])  # distinct slots, none shared
    assert await journals[0].take_rate_slot("other", 0.5) == 0  # budgets are independent

    clock.now += 100  # the budget went unused: the next caller goes at once, not into the past
    assert await journals[1].take_rate_slot("upstream", 0.5) == 0
    assert await journals[2].take_rate_slot("upstream", 0.5) == pytest.approx(0.5)

    clock.now -= 10_000  # a replica whose clock is far behind waits at most the horizon
    assert await journals[0].take_rate_slot("upstream", 0.5) == pytest.approx(RATE_SLOT_HORIZON)
    for j in journals:
        await j.close()


async def test_a_server_key_is_made_once_and_is_the_same_for_every_journal(store: Store) -> None:
    journals = [await store.open() for _ in range(3)]
    keys: list[bytes] = []

    async def ask(j: TaskJournal) -> None:
        keys.append(await j.server_key("links"))

    async with anyio.create_task_group() as tg:
        for n in range(9):
            tg.start_soon(ask, journals[n % 3])
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert await journals[0].server_key("other") != keys[0]
    for j in journals:
        await j.close()
    again = await store.open()  # kept: links signed before a restart still check
    assert await again.server_key("links") == keys[0]
    await again.close()


async def test_download_lease_race_has_one_winner(store: Store) -> None:
    journals = [await store.open() for _ in range(4)]
    wins: list[str] = []

    async def contend(j: TaskJournal, owner: str) -> None:
        if await j.claim_download("t-race", owner, ttl_seconds=60):
            wins.append(owner)

    async with anyio.create_task_group() as tg:
        for n, j in enumerate(journals):
            for k in range(5):
                tg.start_soon(contend, j, f"owner-{n}-{k}")
    assert len(wins) == 1
    for j in journals:
        await j.close()


# --- scale ----------------------------------------------------------------------------------


def _bulk_fill(path: Path, n: int) -> None:
    statuses = ["completed"] * 7 + ["failed", "queued", "in_progress"]
    body = '{"model":"wan2.6-t2v","prompt":"a long enough prompt to look like a real one","duration":5}'
    rows = [
        (
            f"biz-{i:06d}",
            f"t-{i:06d}",
            "wan2.6-t2v",
            "t2v",
            statuses[i % len(statuses)],
            100,
            body,
            f"fp-{i % 5000}",
            1_600_000_000.0 + i,
            1_600_000_000.0 + i,
        )
        for i in range(n)
    ]
    with sqlite3.connect(path) as raw:
        raw.executemany(
            "INSERT INTO tasks (business_id, task_id, model, mode, status, progress, payload, fingerprint, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


async def test_list_on_100k_rows_is_index_backed(db_path: Path) -> None:
    j = await SqliteJournal.open(db_path)
    await j.close()
    await anyio.to_thread.run_sync(_bulk_fill, db_path, 100_000)

    with sqlite3.connect(db_path) as raw:
        for by_status, paged, by_tenant in itertools.product((False, True), repeat=3):
            sql = _list_sql(by_status=by_status, paged=paged, by_tenant=by_tenant)
            params = {"status": "queued", "before": 1e12, "limit": 20, "tenant": "local"}
            plan = " | ".join(r[3] for r in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort step over the whole table
        plan = " | ".join(
            r[3]
            for r in raw.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE fingerprint = ? AND created_at >= ? "
                "AND status != 'rejected' ORDER BY created_at DESC, rowid DESC LIMIT 1",
                ("fp-1", 0.0),
            )
        )
        assert "tasks_fingerprint" in plan, plan

    j = await SqliteJournal.open(db_path)
    timings: dict[str, list[float]] = {}
    cases: dict[str, dict[str, Any]] = {
        "newest 20": {},
        "status=queued": {"status": "queued"},
        "page at 50%": {"before": 1_600_050_000.0},
        "status=failed page": {"status": "failed", "before": 1_600_050_000.0},
    }
    for name, kwargs in cases.items():
        for _ in range(200):
            t0 = time.perf_counter()
            rows = await j.list(limit=20, **kwargs)
            timings.setdefault(name, []).append(time.perf_counter() - t0)
            assert len(rows) == 20
    newest = await j.list(limit=1)
    assert newest[0].business_id == "biz-099999"
    await j.close()
    print()
    for name, samples in timings.items():
        print(f"journal.list({name}) at 100k rows: p50 {statistics.median(samples) * 1e3:.3f} ms")


async def test_writers_racing_on_one_submission_and_one_task_leave_one_merged_row(store: Store) -> None:
    """Two journals (two processes, or two replicas on PostgreSQL) write the same things at once."""
    a, b = await store.open(), await store.open()
    try:
        made: list[TaskRecord] = []

        async def record(j: TaskJournal) -> None:
            made.append(await submit(j, "biz-same"))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(record, a if i % 2 else b)
        assert len({(r.business_id, r.created_at) for r in made}) == 1  # one row, handed to every writer
        await a.attach_task("biz-same", task_id="t-race", status="queued")

        news = [Observation("in_progress", progress=p) for p in range(0, 100, 10)]
        news.append(Observation("completed", progress=100, video_url="https://files.example/v.mp4"))
        news.append(Observation("failed", error_code="late", error_message="a stale story"))
        async with anyio.create_task_group() as tg:
            for i, observation in enumerate(news * 3):
                tg.start_soon((a if i % 2 else b).observe, "t-race", observation)
        row = await b.get("t-race")
        assert row is not None
        # Whichever terminal story landed first stays; either way progress and URL rules held.
        assert row.status in ("completed", "failed")
        if row.status == "completed":
            assert row.video_url == "https://files.example/v.mp4" and row.progress == 100
    finally:
        await a.close()
        await b.close()
