"""The tracker's timing rules, on a virtual clock (no wall-clock assertion anywhere).

The upstream is the simulator's own engine and routes, reached in-process and driven by the
same :class:`VirtualClock` as the tracker, the journal and the client's retry sleeps, so
"the first poll comes 5 s after the submission" is checked to the virtual millisecond, on a
starved CI machine exactly as on a quiet one.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import pytest

from tests.helpers import VirtualGateway, virtual_gateway
from wan_mcp.core.clock import VirtualClock
from wan_mcp.core.journal import LOCAL_TENANT, SqliteJournal, TaskRecord
from wan_mcp.core.tracker import NEAR_END_SECONDS, PollTiming, RateLimiter, TaskTracker

pytestmark = pytest.mark.anyio

TIMING = PollTiming(
    first_delay=5.0, interval=10.0, max_interval=120.0, jitter=0.0, heartbeat=5.0, min_refresh=2.0, predict=False
)
#: The same, polling when the job should finish (issue 15).
PREDICTING = replace(TIMING, predict=True)


@dataclass
class Rig:
    gw: VirtualGateway
    journal: SqliteJournal
    tracker: TaskTracker
    n: int = 0

    async def submit(self) -> TaskRecord:
        self.n += 1
        payload = {"model": "wan2.6", "prompt": f"timing {self.n}", "resolution": "720p", "duration": 5}
        bid = f"wanmcp_timing_{self.n}"
        await self.journal.record_submission(business_id=bid, model="wan2.6", mode="t2v", payload=payload,
                                             fingerprint=bid)  # fmt: skip
        task = await self.gw.client.create_task(payload, bid)
        return await self.journal.attach_task(bid, task_id=task.id, status=task.state.value)  # type: ignore[arg-type]

    def polls(self) -> list[float]:
        return self.gw.status_times()


@asynccontextmanager
async def _rig(tmp_path: Path, *, timing: PollTiming = TIMING, budget: float = 100.0, job: float = 60.0,
               seed: int = 1) -> AsyncIterator[Rig]:  # fmt: skip
    async with virtual_gateway(job_seconds=job) as gw:
        journal = await SqliteJournal.open(tmp_path / "journal.sqlite3", clock=gw.clock.time)
        try:
            async with TaskTracker(
                gw.client, journal, timing=timing, rate_budget=budget, rng=random.Random(seed), clock=gw.clock
            ) as tracker:
                yield Rig(gw, journal, tracker)
        finally:
            await journal.close()


class Waiter:
    """One ``tracker.wait`` running in the background; ``result`` is set when it returns."""

    def __init__(self) -> None:
        self.result: TaskRecord | None = None
        self.updates: list[tuple[float, str, int | None]] = []


def start_wait(tg: anyio.abc.TaskGroup, rig: Rig, record: TaskRecord, within: float) -> Waiter:
    waiter = Waiter()

    async def on_update(rec: TaskRecord) -> None:
        waiter.updates.append((rig.gw.clock.monotonic(), rec.status, rec.progress))

    async def run() -> None:
        waiter.result = await rig.tracker.wait(record, within=within, on_update=on_update)

    tg.start_soon(run)
    return waiter


async def test_first_poll_comes_first_delay_after_the_submission_then_every_interval(tmp_path: Path) -> None:
    async with _rig(tmp_path) as rig:
        record = await rig.submit()
        submitted = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=100.0)
            await rig.gw.clock.advance(4.99)
            assert rig.polls() == []  # nothing before the contract's initial delay
            await rig.gw.clock.advance(0.02)
            assert [t - submitted for t in rig.polls()] == [pytest.approx(5.0)]
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=200)
        assert waiter.result is not None and waiter.result.status == "completed"
        gaps = [b - a for a, b in itertools.pairwise(rig.polls())]
        assert gaps and all(g == pytest.approx(10.0) for g in gaps), gaps
        # a 60 s job polled at 5, 15, ..., 65 s: seven reads, the last one sees it done
        assert len(rig.polls()) == 7


async def test_the_first_delay_counts_from_the_submission_so_an_old_task_is_polled_at_once(tmp_path: Path) -> None:
    async with _rig(tmp_path) as rig:
        record = await rig.submit()
        await rig.gw.clock.advance(30.0)  # e.g. the server restarted half a minute later
        assert rig.polls() == []
        started = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            start_wait(tg, rig, record, within=1.0)
            await rig.gw.clock.advance(0.0)
            assert [t - started for t in rig.polls()] == [0.0]
            await rig.gw.clock.advance(1.0)


async def test_jitter_keeps_every_interval_within_its_band(tmp_path: Path) -> None:
    timing = PollTiming(first_delay=5.0, interval=10.0, jitter=0.2, heartbeat=5.0, predict=False)
    async with _rig(tmp_path, timing=timing, job=200.0, seed=7) as rig:
        record = await rig.submit()
        submitted = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=1000.0)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=1000)
        polls = rig.polls()
        assert 4.0 <= polls[0] - submitted <= 6.0
        gaps = [b - a for a, b in itertools.pairwise(polls)]
        assert all(8.0 <= g <= 12.0 for g in gaps), gaps
        assert len({round(g, 6) for g in gaps}) > 1  # it does jitter


async def test_many_waiters_share_one_poller(tmp_path: Path) -> None:
    async with _rig(tmp_path) as rig:
        record = await rig.submit()
        async with anyio.create_task_group() as tg:
            waiters = [start_wait(tg, rig, record, within=500.0) for _ in range(25)]
            await rig.gw.clock.run_until(lambda: all(w.result is not None for w in waiters), limit=500)
        assert {w.result.status for w in waiters if w.result} == {"completed"}
        assert len(rig.polls()) == 7  # the same seven reads as for one waiter
        assert rig.tracker.live_pollers() == 0


async def test_a_wait_ends_at_its_bound_and_polling_stops_until_someone_waits_again(tmp_path: Path) -> None:
    async with _rig(tmp_path) as rig:
        record = await rig.submit()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=12.0)
            await rig.gw.clock.advance(11.99)
            assert waiter.result is None
            await rig.gw.clock.advance(0.02)
            assert waiter.result is not None and waiter.result.status in ("queued", "in_progress")
        polls = len(rig.polls())
        assert polls == 1  # at 5 s; the next (15 s) was not due before the wait ended
        await rig.gw.clock.advance(100.0)
        assert len(rig.polls()) == polls and rig.tracker.live_pollers() == 0  # nobody waits: no traffic
        async with anyio.create_task_group() as tg:
            again = start_wait(tg, rig, waiter.result, within=500.0)
            await rig.gw.clock.run_until(lambda: again.result is not None, limit=500)
        assert again.result is not None and again.result.status == "completed"


async def test_heartbeats_reach_waiters_while_nothing_changes(tmp_path: Path) -> None:
    timing = PollTiming(first_delay=50.0, interval=50.0, jitter=0.0, heartbeat=5.0)
    async with _rig(tmp_path, timing=timing) as rig:
        record = await rig.submit()
        start = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=30.0)
            await rig.gw.clock.advance(30.0)
        times = [t - start for t, _, _ in waiter.updates]
        assert times == [pytest.approx(5.0 * i) for i in range(6)], times  # at 0, 5, ..., 25 s


async def test_retry_after_pushes_the_next_poll_back(tmp_path: Path) -> None:
    async with _rig(tmp_path) as rig:
        record = await rig.submit()
        rig.gw.engine.add_fault("status", "http_429", times=1, retry_after=37)
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=500.0)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=500)
        polls = rig.polls()
        assert polls[1] - polls[0] >= 37.0, polls  # not the normal 10 s


async def test_errors_back_off_exponentially_up_to_the_ceiling(tmp_path: Path) -> None:
    timing = PollTiming(first_delay=5.0, interval=10.0, max_interval=60.0, jitter=0.0, heartbeat=5.0)
    async with _rig(tmp_path, timing=timing, job=1000.0) as rig:
        record = await rig.submit()
        rig.gw.engine.add_fault("status", "http_503", times=5)
        async with anyio.create_task_group() as tg:
            start_wait(tg, rig, record, within=400.0)
            await rig.gw.clock.advance(400.0)
        polls = rig.polls()
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(polls)]
        assert gaps[:6] == [20.0, 40.0, 60.0, 60.0, 60.0, 10.0], gaps  # doubling, capped, then normal again


async def test_the_rate_budget_spaces_every_upstream_read_and_serves_tasks_in_turn(tmp_path: Path) -> None:
    timing = PollTiming(first_delay=0.5, interval=1.0, jitter=0.0, heartbeat=5.0)
    async with _rig(tmp_path, timing=timing, budget=2.0, job=1000.0) as rig:
        records = [await rig.submit() for _ in range(10)]
        async with anyio.create_task_group() as tg:
            for rec in records:
                start_wait(tg, rig, rec, within=40.0)
            await rig.gw.clock.advance(40.0)
        polls = rig.polls()
        gaps = [b - a for a, b in itertools.pairwise(polls)]
        assert all(g >= 0.5 - 1e-9 for g in gaps), min(gaps)  # never faster than 2 per second
        assert len(polls) >= 70  # and the budget is used, not wasted
        order = [r.path.rsplit("/", 1)[1] for r in rig.gw.engine.requests("status")]
        assert sorted(order[:10]) == sorted(r.task_id or "" for r in records)  # everyone once before anyone twice


async def test_replicas_on_one_journal_share_one_rate_budget_not_one_each(tmp_path: Path) -> None:
    """Two trackers on one journal (two replicas), each polling its own waiters' tasks: together they
    stay within the budget (issue 12), where two budgets of their own would read twice as fast."""
    timing = PollTiming(first_delay=0.5, interval=1.0, jitter=0.0, heartbeat=5.0)
    async with virtual_gateway(job_seconds=1000.0) as gw:
        journals = [await SqliteJournal.open(tmp_path / "journal.sqlite3", clock=gw.clock.time) for _ in range(2)]
        try:
            async with (
                TaskTracker(gw.client, journals[0], timing=timing, rate_budget=2.0, clock=gw.clock, shared=True) as a,
                TaskTracker(gw.client, journals[1], timing=timing, rate_budget=2.0, clock=gw.clock, shared=True) as b,
            ):
                rigs = [Rig(gw, journals[0], a), Rig(gw, journals[1], b)]
                records = [await rigs[0].submit() for _ in range(10)]
                async with anyio.create_task_group() as tg:
                    for n, rec in enumerate(records):
                        start_wait(tg, rigs[n % 2], rec, within=40.0)
                    await gw.clock.advance(40.0)
                assert a.upstream_polls > 20 and b.upstream_polls > 20  # both replicas polled
        finally:
            for journal in journals:
                await journal.close()
    polls = gw.status_times()
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(g >= 0.5 - 1e-9 for g in gaps), min(gaps)  # 2 per second in all, not per replica
    assert len(polls) >= 70  # and the budget is used, not wasted


async def test_the_advice_agents_get_is_the_pollers_real_schedule(tmp_path: Path) -> None:
    async with _rig(tmp_path) as rig:
        record = await rig.submit()
        assert rig.tracker.advice(record) == 5  # the first check: first_delay after the submission
        rig.gw.engine.add_fault("status", "http_429", times=1, retry_after=37)
        async with anyio.create_task_group() as tg:
            start_wait(tg, rig, record, within=20.0)
            await rig.gw.clock.advance(5.0)  # the first poll meets the 429
            assert rig.tracker.advice(record) == 37  # not the configured 10 s: the gateway said 37
            await rig.gw.clock.advance(15.0)
        await rig.gw.clock.advance(100.0)  # nobody waits any more: back to the configured interval
        assert rig.tracker.advice(record) == 10


# --- polling when the job will finish (issue 15) -------------------------------------------------------


async def _completion_seen(tmp_path: Path, *, curve: str, job: float, timing: PollTiming) -> tuple[float, int]:
    """(seconds from upstream completion to the waiter seeing it, status reads) for one job."""
    async with _rig(tmp_path, timing=timing, job=job) as rig:
        rig.gw.engine.configure(progress_curve=curve)
        record = await rig.submit()
        submitted = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=10 * job)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=20 * job)
        assert waiter.result is not None and waiter.result.status == "completed"
        seen = next(t for t, status, _ in waiter.updates if status == "completed")
        return seen - (submitted + job), len(rig.polls())


@pytest.mark.parametrize("curve", ["linear", "queue_heavy", "slow_tail", "stall"])
@pytest.mark.parametrize("job", [30.0, 60.0])
async def test_predicted_polls_see_completion_sooner_for_at_most_one_extra_read(
    tmp_path: Path, curve: str, job: float
) -> None:
    plain_delay, plain_reads = await _completion_seen(tmp_path / "plain", curve=curve, job=job, timing=TIMING)
    delay, reads = await _completion_seen(tmp_path / "predicting", curve=curve, job=job, timing=PREDICTING)
    assert 0 <= delay <= plain_delay  # never later than the plain schedule
    assert reads <= plain_reads + 1  # a wrong prediction costs at most one extra read
    if curve == "linear":  # a straight line is predicted: seen within 1.5 s instead of 5 s
        assert delay <= 1.5 and reads <= plain_reads, (delay, plain_delay)


async def test_predicted_polls_keep_the_floor_and_the_ceiling(tmp_path: Path) -> None:
    async with _rig(tmp_path, timing=PREDICTING, job=30.0) as rig:
        record = await rig.submit()
        submitted = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=300.0)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=600)
        polls = rig.polls()
        gaps = [b - a for a, b in itertools.pairwise([submitted, *polls])]
        assert all(PREDICTING.floor - 1e-6 <= g <= PREDICTING.interval + 1e-6 for g in gaps[1:]), gaps
        assert gaps[0] == pytest.approx(PREDICTING.first_delay)  # nothing known yet: the contract's first wait


async def test_a_kind_of_job_seen_before_is_polled_at_its_typical_end(tmp_path: Path) -> None:
    async with _rig(tmp_path, timing=PREDICTING, job=3.0) as rig:
        first = await rig.submit()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, first, within=60.0)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=120)
        second = await rig.submit()
        submitted = rig.gw.clock.monotonic()
        before = len(rig.polls())
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, second, within=60.0)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=120)
        polls = rig.polls()[before:]
        # The first job took 5 s to be seen (the contract's first poll); the second is read at the
        # learned duration instead of first_delay + interval.
        assert len(polls) == 1 and polls[0] - submitted < PREDICTING.first_delay + 0.5


@pytest.mark.parametrize("timing", [PREDICTING, TIMING], ids=["predicting", "plain"])
async def test_the_near_end_hook_runs_only_once_the_job_is_predicted_to_end_soon(
    tmp_path: Path, timing: PollTiming
) -> None:
    async with _rig(tmp_path, timing=timing, job=60.0) as rig:
        calls: list[float] = []

        async def hook() -> None:
            calls.append(rig.gw.clock.monotonic())

        rig.tracker.on_near_end(hook)
        record = await rig.submit()
        submitted = rig.gw.clock.monotonic()
        async with anyio.create_task_group() as tg:
            waiter = start_wait(tg, rig, record, within=300.0)
            await rig.gw.clock.run_until(lambda: waiter.result is not None, limit=600)
        assert waiter.result is not None and waiter.result.status == "completed"
        seen = rig.polls()[-1]
    if timing.predict:
        # A 60 s job is predicted from its progress; the hook runs within NEAR_END_SECONDS of its end
        # (the poll at 55 s), before the poll that sees it done, and never earlier.
        assert calls, "the hook never ran"
        assert all(submitted + 60.0 - NEAR_END_SECONDS - 1.0 <= t < seen for t in calls), (calls, seen)
    else:
        assert calls == []  # nothing predicted, nothing near its end


# --- a short rate budget spent on the tasks most likely done, fairly (issue 15) -----------------------


async def test_a_short_budget_serves_the_earliest_predicted_completion_first() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rate=1.0, clock=clock, patience=1_000.0)
    served: list[str] = []

    async def poll(name: str, due: float | None) -> None:
        await limiter.acquire(LOCAL_TENANT, due)
        served.append(name)

    now = clock.monotonic()
    async with anyio.create_task_group() as tg:
        for name in ("first", "holder"):  # the first is served at once, the next holds the turn for 1 s
            tg.start_soon(poll, name, None)
            await clock.settle()
        for name, due in [("late", now + 300), ("unknown", None), ("soon", now + 5), ("done", now - 1),
                          ("queued", math.inf)]:  # fmt: skip
            tg.start_soon(poll, name, due)
            await clock.settle()
        await clock.run_until(lambda: len(served) == 7, limit=60)
    # predicted done first, then what is unknown (now), then by predicted end; nothing predicted last
    assert served == ["first", "holder", "done", "unknown", "soon", "late", "queued"], served


async def test_no_task_starves_behind_tasks_predicted_to_finish_sooner() -> None:
    """20 pollers that are always predicted done (each back in line as soon as it is served) never keep
    out one predicted far off, or never: it is served within the patience plus the line of 20 that
    was ahead of it. (Strict earliest-first would keep it out for ever.)"""
    clock = VirtualClock()
    limiter = RateLimiter(rate=1.0, clock=clock, patience=30.0)
    served: dict[str, float] = {}

    async def poll(name: str, due: float) -> None:
        await limiter.acquire(LOCAL_TENANT, due)
        served[name] = clock.monotonic()

    async def eager(n: int) -> None:
        while True:
            await limiter.acquire(LOCAL_TENANT, clock.monotonic() - 1)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(eager, n)
        await clock.advance(10.0)
        joined = clock.monotonic()
        tg.start_soon(poll, "far", joined + 10_000)
        tg.start_soon(poll, "never", math.inf)
        await clock.run_until(lambda: "far" in served and "never" in served, limit=200)
        tg.cancel_scope.cancel()
    for name in ("far", "never"):
        assert served[name] - joined <= 30.0 + 20 + 2, (name, served[name] - joined)


async def _short_job_seen(tmp_path: Path, timing: PollTiming) -> float:
    """30 live tasks on one read a second; the first job takes 67 s (its end falls between two of its
    first-come turns), the others 1,000 s. Returns how long after the first job's end its waiter saw
    it completed."""
    async with _rig(tmp_path, timing=timing, budget=1.0, job=67.0) as rig:
        short = await rig.submit()
        ends = rig.gw.clock.monotonic() + 67.0
        rig.gw.engine.configure(job_seconds=1_000.0)
        records = [await rig.submit() for _ in range(29)]
        async with anyio.create_task_group() as tg:
            waiters = [start_wait(tg, rig, rec, within=2_000.0) for rec in [short, *records]]
            await rig.gw.clock.run_until(lambda: waiters[0].result is not None, limit=400)
            tg.cancel_scope.cancel()
        assert waiters[0].result is not None and waiters[0].result.status == "completed"
        return next(t for t, status, _ in waiters[0].updates if status == "completed") - ends


async def test_with_a_short_budget_a_job_predicted_done_is_read_before_running_ones(tmp_path: Path) -> None:
    """Through the tracker: each task wants a read every 2 s, the budget gives each one every 30 s.
    First come first served reaches the finished job on its turn; predicted first reads it within a
    couple of slots of its end."""
    timing = replace(PREDICTING, first_delay=1.0, interval=2.0)
    fifo = await _short_job_seen(tmp_path / "fifo", replace(timing, predict=False))
    ours = await _short_job_seen(tmp_path / "ours", timing)
    assert 0 <= ours <= 3.0 < fifo, (ours, fifo)
