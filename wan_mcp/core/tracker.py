"""One poll loop per live task, however many callers wait on it.

Why a tracker and not "poll in the tool": two agents (or one agent retrying after a
client timeout) waiting on the same task must not double the upstream traffic, a
waiter that goes away must not stop or lose the job, and a thousand live tasks must
stay under the gateway's rate budget. So the tracker owns the polling; tool calls are
only *waiters* that watch a shared, journal-backed record for a bounded time.

Timing follows the contract's advice (first poll ~5 s after submit, then ~10 s with
jitter, Retry-After honoured, exponential back-off on errors), and every status seen
is written to the journal before waiters hear of it.

Within that schedule the next poll comes EARLIER when the job should be done by then: the
completion time is predicted from the task's progress history (or, before any progress,
from how long jobs of the same model x resolution x duration took in this process), and
the poll lands just after it, never sooner than ``PollTiming.floor`` after the last one
and never later than the normal interval after it. A wrong prediction costs at most one
extra poll per task: after one early poll that found the job still running, the task goes
back to the plain schedule, counted from that poll (so the miss costs only the part of an
interval it moved the schedule forward by, not a whole extra read).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from wan_mcp.config import Settings
from wan_mcp.core.clock import SYSTEM_CLOCK, Clock
from wan_mcp.core.journal import LOCAL_TENANT, TERMINAL, Observation, TaskJournal, TaskRecord, merge
from wan_mcp.core.leases import holder_gone, lease_owner
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.gateway.provider import VideoProvider
from wan_mcp.gateway.wire import GatewayTask, TaskState

log = logging.getLogger("wan_mcp.tracker")

#: Called with the latest record whenever it changes, and as a heartbeat while nothing changes.
UpdateFn = Callable[[TaskRecord], Awaitable[None]]


@dataclass(frozen=True)
class PollTiming:
    first_delay: float = 5.0  # after submit
    interval: float = 10.0  # while in progress
    max_interval: float = 120.0  # back-off ceiling
    jitter: float = 0.2  # +-20 %
    heartbeat: float = 5.0  # how often waiters hear "still waiting"
    min_refresh: float = 2.0  # a zero-wait status call reuses a poll younger than this
    progress_write: float = 5.0  # progress-only changes reach the journal at most this often
    predict: bool = True  # poll when the job should finish (within the schedule above)
    floor: float = 2.0  # never poll a task sooner than this after its previous poll
    predict_margin: float = 0.3  # poll this long after the predicted completion
    early_misses: int = 1  # early polls that may find the job still running before predictions stop

    @classmethod
    def from_settings(cls, settings: Settings) -> PollTiming:
        """The one place settings become timing (the agent's "next poll" advice reads it too)."""
        return cls(
            first_delay=settings.poll_first_seconds,
            interval=settings.poll_interval_seconds,
            max_interval=settings.poll_max_interval_seconds,
            heartbeat=min(5.0, settings.poll_interval_seconds),
            min_refresh=min(2.0, settings.poll_first_seconds),
        )


@dataclass
class _Watch:
    record: TaskRecord
    waiters: int = 0
    running: bool = False
    errors: int = 0
    retry_after: float | None = None
    last_poll: float | None = None  # monotonic; None until the first poll
    last_write: float = float("-inf")  # monotonic time of the last journal write by this watch
    next_poll_at: float | None = None  # monotonic time the poller sleeps until (back-off included)
    fatal: WanError | None = None  # an error no amount of polling fixes (bad key, no balance)
    changed: anyio.Event = field(default_factory=anyio.Event)
    #: (monotonic time, progress) of recent polls while running: what the prediction reads.
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=6))
    early: bool = False  # the poll now scheduled comes before the plain schedule would
    due: float | None = None  # monotonic time the job should be done (its place in the rate limiter's line)
    early_misses: int = 0  # early polls that found the job still running (at most 1 allowed)
    last_zero: float | None = None  # monotonic time of the last poll that saw 0 % (the job not started)
    #: The backend holding the tenant's own key, for a task made with it (lives with the watch only).
    provider: VideoProvider | None = None
    #: Set when the journal announces that another replica changed this task's row.
    news: anyio.Event = field(default_factory=anyio.Event)

    def publish(self, record: TaskRecord) -> None:
        self.record = record
        self.changed.set()
        self.changed = anyio.Event()


#: When the rate budget is short, no task waits longer than this past its plain poll time for its
#: turn (plus the line ahead of it), however late its job is predicted to end: no task starves.
FAIR_WAIT = 30.0


class RateLimiter:
    """Spaces upstream requests to at most ``rate`` per second, shared fairly between tenants.

    With many live tasks this stretches every task's interval evenly instead of letting
    a burst of polls trip the gateway's 429s. Callers queue per tenant and the turns go
    round-robin between the tenants that are waiting, so a tenant with a thousand live tasks
    cannot push another tenant's one poll to the back of a thousand-long line.

    Within one tenant, when the budget is short (more polls due than it allows), the turn goes
    to the caller whose job should be done first: each caller says when (``due``, monotonic:
    its predicted completion; None for "now", a task never polled; ``math.inf`` for "last", a
    task seen but with nothing predicting its end), so the
    budget is spent on the tasks most likely to have finished rather than on whoever slept
    first. Fairly: a caller's place is never later than ``patience`` seconds (or the time the line
    ahead of it takes) after it joined,
    so a task predicted far off (or wrongly) still gets its poll; no task starves. With
    nothing predicted, this is first come first served.
    """

    def __init__(
        self,
        rate: float,
        clock: Clock = SYSTEM_CLOCK,
        *,
        shared: Callable[[float], Awaitable[float]] | None = None,
        patience: float = FAIR_WAIT,
    ) -> None:
        """``shared(spacing)``: books a slot of a budget shared with other processes (replicas on one
        database) and returns the seconds until it; each turn then waits for that slot too, so N
        replicas together stay within ``rate``, not N times it."""
        self._spacing = 1.0 / rate
        self._clock = clock
        self._shared = shared
        self._patience = patience
        self._next = 0.0
        self._seq = itertools.count()  # ties (and "no prediction") keep the order of arrival
        self._queues: dict[str, list[tuple[float, int, anyio.Event]]] = {}  # heaps by place in line
        self._order: deque[str] = deque()  # tenants with callers waiting, in turn order
        self._busy = False  # a caller holds the turn (waiting for its slot)

    async def acquire(self, tenant: str = LOCAL_TENANT, due: float | None = None) -> None:
        # One caller at a time waits for its slot, and the next slot is counted from when
        # it actually woke up. Handing out future slots up front (as this once did) let a
        # busy event loop wake a backlog of overdue callers together: with 1,000 live
        # tasks that burst to 1.2x the budget within a 2 s window (now bench figure 7; the rule
        # itself is tested on a virtual clock in tests/integration/test_tracker_timing.py).
        turn = anyio.Event()
        now = self._clock.monotonic()
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = []
            self._order.append(tenant)
        # Never behind more than the patience, or than the line ahead takes to serve (so under a long
        # backlog a caller waits at most about twice what first come first served would make it wait).
        patience = max(self._patience, len(queue) * self._spacing)
        place = (now if due is None else min(due, now + patience), next(self._seq), turn)
        heapq.heappush(queue, place)
        if not self._busy:
            self._pass_turn()
        try:
            await turn.wait()
        except BaseException:
            if not turn.is_set():  # cancelled while queued: leave the line
                self._leave(tenant, place)
                raise
            self._pass_turn()  # cancelled just as the turn came: hand it on
            raise
        try:
            now = self._clock.monotonic()
            if self._next > now:
                await self._clock.sleep(self._next - now)
            if self._shared is not None:
                await self._shared_slot()
            now = self._clock.monotonic()
            self._next = max(now, self._next) + self._spacing
        finally:
            self._pass_turn()

    async def _shared_slot(self) -> None:
        assert self._shared is not None
        try:
            wait = await self._shared(self._spacing)
        except WanError as err:  # the database is unreachable for a moment: this process's own spacing holds
            log.warning("shared upstream rate budget unavailable (%s); pacing this process alone", err.code.value)
            return
        if wait > 0:
            await self._clock.sleep(wait)

    def _pass_turn(self) -> None:
        """Give the turn to the next tenant in line (its caller first in place), or mark the limiter idle."""
        while self._order:
            tenant = self._order.popleft()
            queue = self._queues[tenant]
            _, _, turn = heapq.heappop(queue)
            if queue:
                self._order.append(tenant)
            else:
                del self._queues[tenant]
            self._busy = True
            turn.set()
            return
        self._busy = False

    def _leave(self, tenant: str, place: tuple[float, int, anyio.Event]) -> None:
        queue = self._queues.get(tenant)
        if queue is None or place not in queue:
            return
        queue.remove(place)
        heapq.heapify(queue)
        if not queue:
            del self._queues[tenant]
            self._order.remove(tenant)


#: A kind's typical duration predicts a job's end only while its jobs' typical deviation from it is
#: at most this fraction of it.
TYPICAL_SPREAD = 0.2
#: The shared rate budget's name in the journal (replicas pace their upstream polls on it together).
UPSTREAM_BUDGET = "upstream"
#: Poll leases share the journal's lease table with download leases, under this key prefix.
POLL_LEASE_PREFIX = "poll:"
#: A replica that stops polling a task (killed, stopped) hands it over after at most this long.
POLL_LEASE_SECONDS = 30.0
#: How often a replica that does not hold a task's poll lease reads its journal row when the journal
#: announces no change (PostgreSQL's NOTIFY wakes it at once; SQLite has no such feed).
FOLLOW_SECONDS = 1.0
#: A job predicted to end within this long is "near its end": the hook set by :meth:`TaskTracker.on_near_end`
#: runs (the service warms its media helper, whose cold start would otherwise delay the first result).
NEAR_END_SECONDS = 10.0


def _observed(rec: TaskRecord) -> Observation:
    """A journal row seen as news (what a follower learns from the holder's writes)."""
    return Observation(
        status=rec.status,
        progress=rec.progress,
        video_url=rec.video_url,
        expires_at=rec.expires_at,
        error_code=rec.error_code,
        error_message=rec.error_message,
    )


def _kind(rec: TaskRecord) -> tuple[str, str, int]:
    """Jobs that take about as long: same model, resolution and duration."""
    payload = rec.payload
    duration = payload.get("duration")
    return (rec.model, str(payload.get("resolution", "")), duration if isinstance(duration, int) else 0)


def observation_of(task: GatewayTask) -> Observation:
    """What a gateway answer tells the journal about a task."""
    return Observation(
        status=task.state.value,
        progress=task.progress,
        video_url=task.video_url,
        expires_at=None if task.expires_at is None else int(task.expires_at),
        error_code=task.error_code,
        error_message=task.error_message,
    )


class TaskTracker:
    def __init__(
        self,
        provider: VideoProvider,
        journal: TaskJournal,
        *,
        timing: PollTiming | None = None,
        rate_budget: float = 10.0,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        shared: bool = False,
        lease_seconds: float = POLL_LEASE_SECONDS,
        follow_seconds: float = FOLLOW_SECONDS,
    ) -> None:
        """``shared``: the journal is shared by several server processes (PostgreSQL replicas). Then
        each live task is polled by ONE of them, the holder of its poll lease (renewed before every
        poll and every third of ``lease_seconds`` while it waits; taken over at most ``lease_seconds``
        after its holder stops, at once if the holder is a dead process on this host), and the others
        follow its journal row every ``follow_seconds``."""
        self._shared = shared
        self._lease_seconds = lease_seconds
        self._follow_seconds = follow_seconds
        self._owner = lease_owner()
        self._provider = provider
        self._journal = journal
        self._timing = timing or PollTiming()
        self._clock = clock
        self._limiter = RateLimiter(
            rate_budget,
            clock,
            shared=partial(journal.take_rate_slot, UPSTREAM_BUDGET) if shared else None,
        )
        self._rng = rng or random.Random()
        self._watches: dict[str, _Watch] = {}
        self._tg: TaskGroup | None = None
        self._stopping = False
        self._idle: set[anyio.CancelScope] = set()  # waits parked between updates
        #: Per kind of job (model, resolution, duration), learned from completions seen here: (typical
        #: duration, typical deviation from it), both leaning to recent jobs.
        self._typical: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._near_end: Callable[[], Awaitable[None]] | None = None
        self.upstream_polls = 0  # for benchmarks and tests

    def on_near_end(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` (quick, idempotent) each time a polled job is predicted to end within
        ``NEAR_END_SECONDS``, before the poller sleeps until that end."""
        self._near_end = hook

    async def _nearing_end(self, watch: _Watch) -> None:
        if self._near_end is None or watch.due is None or watch.due - self._clock.monotonic() > NEAR_END_SECONDS:
            return
        try:
            await self._near_end()
        except Exception:  # a warm-up that fails costs its head start, never the poller
            log.exception("the near-end hook failed")

    async def __aenter__(self) -> TaskTracker:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self._shared:  # followers wake on the holder's write, not on their next read of the row
            self._tg.start_soon(self._journal.listen, self._heard)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        self._tg = None

    @property
    def timing(self) -> PollTiming:
        return self._timing

    def live_pollers(self) -> int:
        return sum(1 for w in self._watches.values() if w.running)

    # --- graceful shutdown ---------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Every wait returns its current record now, and later waits return at once.

        For a graceful stop: callers get a normal "still running, poll again" answer
        instead of a cut connection. Pollers carry on until the tracker exits, so a poll
        already in flight still lands in the journal. Call it on the event loop's thread.
        """
        self._stopping = True
        for scope in tuple(self._idle):
            scope.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- waiting -------------------------------------------------------------------------

    async def wait(
        self,
        record: TaskRecord,
        *,
        within: float,
        on_update: UpdateFn | None = None,
        provider: VideoProvider | None = None,
    ) -> TaskRecord:
        """Watch ``record`` until it is terminal or ``within`` seconds pass; return the latest record.

        Cancelling the caller only removes a waiter: the poller (and the upstream job)
        carries on while anyone else waits, and the journal keeps the task either way.
        ``provider``: the backend with the tenant's own key, for a task made with it.
        """
        if record.status in TERMINAL or record.task_id is None or within <= 0 or self._stopping:
            return record
        watch = self._watch(record, provider)
        watch.waiters += 1
        self._ensure_poller(watch)
        try:
            with self._clock.move_on_after(within):
                while True:
                    current = watch.record
                    if watch.fatal is not None:
                        raise watch.fatal.with_task(current.task_id)
                    if on_update is not None:
                        await on_update(current)
                    if current.status in TERMINAL or self._stopping:
                        break
                    event = watch.changed
                    with self._clock.move_on_after(self._timing.heartbeat) as idle:
                        self._idle.add(idle)  # begin_shutdown() cancels only this idle sleep
                        try:
                            await event.wait()
                        finally:
                            self._idle.discard(idle)
        finally:
            watch.waiters -= 1
        return watch.record

    async def refresh(self, record: TaskRecord, *, provider: VideoProvider | None = None) -> TaskRecord:
        """One status read now (for zero-wait status calls), unless a poll just happened."""
        if record.status in TERMINAL or record.task_id is None:
            return record
        watch = self._watch(record, provider)
        if watch.last_poll is not None and self._clock.monotonic() - watch.last_poll < self._timing.min_refresh:
            return watch.record
        key = record.task_id or record.business_id
        if self._shared and not watch.running and not await self._hold(key, 0.0):
            return await self._follow(watch)  # another replica holds the poll: its row is the news
        try:
            return await self._poll(watch)
        finally:
            if watch.record.status in TERMINAL and not watch.running and watch.waiters <= 0:
                self._watches.pop(watch.record.task_id or watch.record.business_id, None)

    def advice(self, record: TaskRecord) -> int:
        """Seconds until the tracker's next upstream check of ``record`` (what agents are told).

        The poller's own schedule when one runs (back-off and Retry-After included), else what
        the configured timing would do: the contract's first delay after the submission, then
        the interval.
        """
        watch = self._watches.get(record.task_id or record.business_id)
        now = self._clock.monotonic()
        if watch is not None and watch.running and watch.next_poll_at is not None and watch.next_poll_at > now:
            return max(1, round(watch.next_poll_at - now))
        t = self._timing
        due = record.created_at + t.first_delay - self._clock.time()
        return max(1, round(due if due > 0 else t.interval))

    def latest(self, task_id: str) -> TaskRecord | None:
        """The live record this process is tracking for ``task_id``, if any (no journal read)."""
        watch = self._watches.get(task_id)
        return None if watch is None else watch.record

    # --- polling -------------------------------------------------------------------------

    def _watch(self, record: TaskRecord, provider: VideoProvider | None = None) -> _Watch:
        key = record.task_id or record.business_id
        watch = self._watches.get(key)
        if watch is None:
            watch = _Watch(record=record)
            self._watches[key] = watch
        elif record.updated_at > watch.record.updated_at:
            watch.record = record
        if provider is not None:
            watch.provider = provider
        return watch

    def _ensure_poller(self, watch: _Watch) -> None:
        if watch.running:
            return
        if self._tg is None:
            raise RuntimeError("TaskTracker used outside its 'async with' block")
        watch.running = True
        watch.fatal = None
        self._tg.start_soon(self._run, watch)

    def _next_delay(self, watch: _Watch) -> float:
        t = self._timing
        rec = watch.record
        watch.early = False
        if watch.last_poll is None:
            # First poll: the contract's initial wait counted from the submission, so a
            # task submitted long ago (e.g. before a restart) is polled at once.
            base = max(0.0, rec.created_at + t.first_delay - self._clock.time())
        else:
            # After the first poll, every ``interval`` whether queued or running: the contract's
            # "queued: re-query after 5-10 s" allows it, and re-polling a queued job at
            # first_delay cost ~one extra request per job (benchmark figure 4).
            base = t.first_delay if rec.status == "submitting" else t.interval
        if watch.errors:
            base = min(t.max_interval, max(base, t.interval) * (2 ** min(watch.errors, 6)))
        if watch.retry_after is not None:
            base = max(base, watch.retry_after)
        # The plain schedule counts from the last poll, early or not: keeping it where it stood
        # before an early poll made every miss a whole extra read (a slow-tail job cost 1.12x the
        # reads); counted from the miss, the miss costs the part of an interval it moved forward.
        delay = base * self._rng.uniform(1 - t.jitter, 1 + t.jitter) if base > 0 else 0.0
        watch.due = None
        if t.predict and not watch.errors and watch.retry_after is None:
            remaining = self._predicted_remaining(watch)
            likely = self._predicted_remaining(watch, likely=True)
            # The place in line when the rate budget is short: a task predicted done goes first, one
            # never polled next (nothing is known of it), one seen but with no prediction (queued,
            # stalled) last: FAIR_WAIT after its plain time, like any predicted to end later still.
            if likely is not None:
                watch.due = self._clock.monotonic() + likely + t.predict_margin
            elif watch.last_poll is not None:
                watch.due = math.inf
            if remaining is not None and watch.early_misses < t.early_misses:
                since_poll = 0.0 if watch.last_poll is None else self._clock.monotonic() - watch.last_poll
                early = max(remaining + t.predict_margin, t.floor - since_poll, 0.0)
                if early < delay:
                    watch.early = True
                    return early
        return delay

    def _predicted_remaining(self, watch: _Watch, *, likely: bool = False) -> float | None:
        """Seconds until the job should be done, or None when nothing tells.

        From progress: the job's recent speed, a straight line from the latest observation back
        to the last one that showed less progress at least ``floor`` seconds earlier. A single
        sighting is joined with "0 % at the last poll that saw 0 % (or the submission)", which
        includes part of the queue and so predicts late, the safe side; ``likely`` anchors it
        halfway instead, to rank tasks by. Recent, not average: a job that stalled and resumed,
        or slows down, is judged by how it moves now; a percentage that has not moved since the
        last poll predicts nothing from progress (stalled, or in a tail no line reaches).
        Otherwise: the typical duration of jobs of the same kind seen completing here, if they
        take about the same time.
        """
        rec = watch.record
        now = self._clock.monotonic()
        points = [(t, p) for t, p in watch.history if p > 0]
        if len(points) == 1:
            # One sighting of progress: the job started after the last 0 % seen (or the submission),
            # so anchoring there under-states its speed and predicts late, the safe side.
            submitted = now - (self._clock.time() - rec.created_at)
            start = max(submitted, watch.last_zero or submitted)
            if likely:  # to rank by, the likeliest start: halfway between the last 0 % and the sighting
                start = (start + points[0][0]) / 2
            points.insert(0, (start, 0))
        if len(points) >= 2 and points[-2][1] != points[-1][1]:  # moving since the last poll
            t1, p1 = points[-1]
            lower = [(t, p) for t, p in points[:-1] if p < p1]
            spaced = [(t, p) for t, p in lower if t1 - t >= self._timing.floor]
            t0, p0 = (spaced or lower or points)[-1 if spaced else 0]
            if p1 > p0 and t1 > t0:
                rate = (p1 - p0) / (t1 - t0)
                return max(0.0, t1 + (100 - p1) / rate - now)
        known = self._typical.get(_kind(rec))
        if known is not None and known[1] <= TYPICAL_SPREAD * known[0]:
            # Where a kind's jobs vary widely the typical end is mostly wrong, and an early poll spent
            # on it would leave no miss for the progress.
            return max(0.0, rec.created_at + known[0] - self._clock.time())
        return None

    def _learn(self, rec: TaskRecord) -> None:
        """Remember how long a job of this kind took (an average leaning to the recent ones)."""
        took = self._clock.time() - rec.created_at
        if took <= 0:
            return
        key = _kind(rec)
        known = self._typical.get(key)
        if known is None:
            self._typical[key] = (took, 0.0)
        else:
            mean, spread = known
            self._typical[key] = (0.7 * mean + 0.3 * took, 0.7 * spread + 0.3 * abs(took - mean))
        while len(self._typical) > 64:  # bounded: a few kinds exist in practice
            self._typical.pop(next(iter(self._typical)))

    async def _run(self, watch: _Watch) -> None:
        key = watch.record.task_id or watch.record.business_id
        held = False
        try:
            while watch.waiters > 0 and watch.record.status not in TERMINAL:
                delay = self._next_delay(watch)
                await self._nearing_end(watch)
                if self._shared:
                    held = await self._hold(key, delay)
                    if not held:  # another replica polls it: follow its journal row instead
                        with self._clock.move_on_after(self._follow_seconds):
                            await watch.news.wait()  # announced by the journal, or read anyway
                        watch.news = anyio.Event()
                        await self._follow(watch)
                        continue
                watch.next_poll_at = self._clock.monotonic() + delay
                await self._sleep_holding(key, delay, held)
                if watch.waiters <= 0:
                    break
                await self._limiter.acquire(watch.record.tenant, watch.due)
                try:
                    await self._poll(watch)
                except WanError as err:
                    watch.fatal = err
                    watch.publish(watch.record)
                    break
                except Exception:
                    # A bug or a hostile answer nobody classified: one poll is lost, never the
                    # tracker's task group (and with it the whole server and every other watch).
                    log.exception("status poll for %s failed unexpectedly; backing off", key)
                    watch.errors += 1
        finally:
            watch.running = False
            if watch.waiters <= 0 and self._watches.get(key) is watch:
                del self._watches[key]
            if held:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._journal.release_download(POLL_LEASE_PREFIX + key, self._owner)

    async def _sleep_holding(self, key: str, delay: float, held: bool) -> None:
        """Sleep until the next poll; a lease holder renews its lease every third of the lease time on the
        way, so a long back-off never lets the lease lapse and a dead holder is replaced within it."""
        if not held:
            await self._clock.sleep(delay)
            return
        step = self._lease_seconds / 3
        while delay > step:
            await self._clock.sleep(step)
            delay -= step
            await self._hold(key)
        await self._clock.sleep(delay)

    async def _hold(self, key: str, delay: float = 0.0) -> bool:
        """Take or renew this task's poll lease (for the lease time; a poll due sooner than a third of it
        is covered too)."""
        ttl = self._lease_seconds + min(delay, self._lease_seconds / 3)
        try:
            return await self._journal.claim_download(
                POLL_LEASE_PREFIX + key, self._owner, ttl, holder_gone=holder_gone
            )
        except WanError as err:  # the database is unreachable for a moment: poll rather than stall
            log.warning("poll lease for %s unavailable (%s); polling anyway", key, err.code.value)
            return True

    def _heard(self, ident: str) -> None:
        """The journal says a task's row changed (written by any replica): wake its follower."""
        watch = self._watches.get(ident)
        if watch is not None:
            watch.news.set()

    async def _follow(self, watch: _Watch) -> TaskRecord:
        """Take the holder's news from the shared journal (a cheap local read, no upstream request)."""
        key = watch.record.task_id or watch.record.business_id
        try:
            fresh = await self._journal.get(key)
        except WanError:
            return watch.record
        if fresh is not None and merge(watch.record, _observed(fresh)):
            watch.publish(fresh)
        return watch.record

    async def _poll(self, watch: _Watch) -> TaskRecord:
        record = watch.record
        lookup = record.task_id or record.business_id
        if watch.provider is None and record.own_key:
            # Never ask with the server's key about a task made with a tenant's own key.
            raise WanError(
                ErrorCode.AUTH,
                f"task {lookup} was made with your own gateway key, which this server no longer holds "
                "(it keeps keys in memory only)",
                task_id=lookup,
                hint="call get_task_status again with your key in the X-Wan-Api-Key header to resume tracking",
            )
        watch.last_poll = self._clock.monotonic()
        self.upstream_polls += 1
        try:
            task = await (watch.provider or self._provider).get_task(lookup)
        except WanError as err:
            if err.code is ErrorCode.NOT_FOUND and record.own_key:
                # Asked with a key the tenant sent now: perhaps not the one it made the task with.
                # Never settle a paid task as gone on that word.
                raise WanError(
                    ErrorCode.AUTH,
                    f"the gateway does not know task {lookup} under the key sent with this call",
                    task_id=lookup,
                    hint="send the same X-Wan-Api-Key the task was made with, then call get_task_status again",
                ) from None
            if err.code is ErrorCode.NOT_FOUND and record.task_id is not None:
                # The gateway forgot a task it gave us (ids live ~24 h): settle it so
                # waiters stop, keeping the reason on the row.
                updated = await self._journal.observe(
                    lookup,
                    Observation(
                        status="failed",
                        error_code=err.code.value,
                        error_message="the gateway no longer knows this task (task ids expire after ~24 h)",
                    ),
                )
                watch.publish(updated)
                return updated
            if err.code in (ErrorCode.AUTH, ErrorCode.PAYMENT, ErrorCode.CONFIG):
                raise
            watch.errors += 1
            watch.retry_after = err.retry_after
            log.warning("status poll for %s failed (%s); backing off", lookup, err.code.value)
            return watch.record
        watch.errors = 0
        watch.retry_after = None
        news = observation_of(task)
        if task.state in (TaskState.QUEUED, TaskState.IN_PROGRESS):
            watch.history.append((watch.last_poll, task.progress or 0))
            if not task.progress:
                watch.last_zero = watch.last_poll
            if watch.early:
                watch.early_misses += 1  # predicted done, still running: back to the plain schedule
        elif task.state is TaskState.COMPLETED and record.status != "completed":
            self._learn(record)
        watch.early = False
        changes = merge(watch.record, news)
        if not changes:
            return watch.record  # a repeated observation: the journal write would change nothing
        now = self._clock.monotonic()
        if (
            set(changes) == {"progress"}
            and watch.record.status not in TERMINAL
            and now - watch.last_write < self._timing.progress_write
        ):
            # Only the percentage moved: tell waiters at once, write it to the journal at most
            # every ``progress_write`` seconds (a crash loses a percentage, never a state).
            fresh = replace(watch.record, progress=news.progress, updated_at=self._clock.time())
            watch.publish(fresh)
            return fresh
        watch.last_write = now
        updated = await self._journal.observe(lookup, news)
        if task.state is TaskState.COMPLETED or updated.updated_at != record.updated_at:
            watch.publish(updated)
        else:
            watch.record = updated
        return updated
