"""The journal's reservation (issue 10): duplicates, budgets and confirm tokens in ONE transaction.

Two journal objects on one file stand for two server processes sharing a data dir: the
guarantees must hold across them, not only inside one event loop.
"""

from __future__ import annotations

import uuid

import anyio
import pytest

from tests.journal_stores import Store
from wan_mcp.core.journal import (
    Duplicate,
    OverBudget,
    Reserved,
    SpendLimit,
    Submission,
    TaskJournal,
    TokenRefused,
)
from wan_mcp.core.spending import day_start, token_digest

pytestmark = pytest.mark.anyio

JOB = 750_000  # USD 0.75 in micro-dollars: one 1080p 5 s wan2.6 video
WINDOW = 600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sub(fingerprint: str | None = None, cost: int = JOB, spender: str = "s1") -> Submission:
    return Submission(
        business_id=f"wanmcp_{uuid.uuid4().hex}",
        model="wan2.6",
        mode="t2v",
        payload={"model": "wan2.6", "prompt": "x"},
        fingerprint=fingerprint or uuid.uuid4().hex,
        cost_micro_usd=cost,
        spender=spender,
    )


def daily(limit: int) -> SpendLimit:
    return SpendLimit("daily", limit, since=0.0, spender=None)


async def test_reserve_writes_the_submission_with_its_cost(journal: TaskJournal) -> None:
    outcome = await journal.reserve(sub(), limits=[daily(10 * JOB)], dedupe_within=WINDOW)
    assert isinstance(outcome, Reserved)
    rec = outcome.record
    assert rec.status == "submitting" and rec.cost_micro_usd == JOB and rec.spender == "s1"
    assert await journal.get(rec.business_id) == rec
    assert await journal.spent([daily(0)]) == [JOB]


async def test_a_budget_stops_exactly_at_its_limit(journal: TaskJournal) -> None:
    limits = [daily(3 * JOB)]
    outcomes = [await journal.reserve(sub(), limits=limits, dedupe_within=WINDOW) for _ in range(5)]
    assert [type(o) for o in outcomes] == [Reserved, Reserved, Reserved, OverBudget, OverBudget]
    over = outcomes[3]
    assert isinstance(over, OverBudget) and over.spent_micro == 3 * JOB and over.limit.name == "daily"
    # A cheaper job that still fits is accepted: the limit is on money, not on calls.
    tight = [daily(3 * JOB + 500_000)]
    assert isinstance(await journal.reserve(sub(cost=500_000), limits=tight, dedupe_within=WINDOW), Reserved)


async def test_the_session_budget_counts_only_its_spender(journal: TaskJournal) -> None:
    session = SpendLimit("session", 2 * JOB, since=None, spender="me")
    for _ in range(3):
        assert isinstance(await journal.reserve(sub(spender="other"), limits=[session], dedupe_within=WINDOW), Reserved)
    assert isinstance(await journal.reserve(sub(spender="me"), limits=[session], dedupe_within=WINDOW), Reserved)
    assert isinstance(await journal.reserve(sub(spender="me"), limits=[session], dedupe_within=WINDOW), Reserved)
    over = await journal.reserve(sub(spender="me"), limits=[session], dedupe_within=WINDOW)
    assert isinstance(over, OverBudget) and over.limit.name == "session" and over.spent_micro == 2 * JOB


async def test_rejected_is_released_unconfirmed_and_failed_are_kept(journal: TaskJournal) -> None:
    ids = []
    for _ in range(3):
        outcome = await journal.reserve(sub(), limits=[], dedupe_within=WINDOW)
        assert isinstance(outcome, Reserved)
        ids.append(outcome.record.business_id)
    await journal.mark_rejected(ids[0], error_code="invalid_request", error_message="400")
    await journal.mark_unconfirmed(ids[1], error_code="timeout", error_message="no answer")
    assert await journal.spent([daily(0)]) == [2 * JOB]  # the rejected one provably cost nothing


async def test_yesterday_does_not_count_today(store: Store) -> None:
    now = [1_800_000_000.0]
    j = await store.open(clock=lambda: now[0])
    try:
        await j.reserve(sub(), limits=[], dedupe_within=WINDOW)
        now[0] += 86_400
        today = SpendLimit("daily", JOB, since=day_start(now[0]), spender=None)
        assert await j.spent([today]) == [0]
        assert isinstance(await j.reserve(sub(), limits=[today], dedupe_within=WINDOW), Reserved)
    finally:
        await j.close()


async def test_an_identical_request_gets_the_existing_row_not_a_second_spend(journal: TaskJournal) -> None:
    first = await journal.reserve(sub("same"), limits=[daily(JOB)], dedupe_within=WINDOW)
    again = await journal.reserve(sub("same"), limits=[daily(JOB)], dedupe_within=WINDOW)
    assert isinstance(first, Reserved) and isinstance(again, Duplicate)
    assert again.record.business_id == first.record.business_id
    assert await journal.spent([daily(0)]) == [JOB]
    # A failed or rejected task is no duplicate: the same request again is a fresh attempt.
    await journal.mark_rejected(first.record.business_id, error_code="x", error_message="y")
    assert isinstance(await journal.reserve(sub("same"), limits=[], dedupe_within=WINDOW), Reserved)


async def test_concurrent_reservations_across_two_processes_never_pass_the_budget(store: Store) -> None:
    """40 calls at once, half through each of two journal connections: exactly 7 fit in USD 5.25."""
    a = await store.open()
    b = await store.open()
    results: list[object] = []
    try:

        async def one(j: TaskJournal) -> None:
            results.append(await j.reserve(sub(), limits=[daily(7 * JOB)], dedupe_within=WINDOW))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, a if i % 2 else b)
        assert sum(isinstance(r, Reserved) for r in results) == 7
        assert sum(isinstance(r, OverBudget) for r in results) == 33
        assert await a.spent([daily(0)]) == [7 * JOB]
    finally:
        await a.close()
        await b.close()


async def test_identical_concurrent_reservations_make_one_row(store: Store) -> None:
    a = await store.open()
    b = await store.open()
    results: list[object] = []
    try:

        async def one(j: TaskJournal) -> None:
            results.append(await j.reserve(sub("same-request"), limits=[], dedupe_within=WINDOW))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, a if i % 2 else b)
        reserved = [r for r in results if isinstance(r, Reserved)]
        duplicates = [r for r in results if isinstance(r, Duplicate)]
        assert len(reserved) == 1 and len(duplicates) == 9
        assert {d.record.business_id for d in duplicates} == {reserved[0].record.business_id}
        assert len(await a.list(limit=100)) == 1
    finally:
        await a.close()
        await b.close()


async def test_a_confirm_token_is_single_use_and_bound_to_its_request(store: Store) -> None:
    now = [1_800_000_000.0]
    j = await store.open(clock=lambda: now[0])
    try:
        token = token_digest("wct_one")
        await j.add_confirmation(token, fingerprint="req-a", cost_micro_usd=JOB, expires_at=now[0] + 600)

        other = await j.reserve(sub("req-b"), limits=[], dedupe_within=WINDOW, confirm_token_sha256=token)
        assert other == TokenRefused("other_request")
        unknown = await j.reserve(sub("req-a"), limits=[], dedupe_within=WINDOW, confirm_token_sha256="0" * 64)
        assert unknown == TokenRefused("unknown")
        # Over budget: refused, and the token is NOT used up (nothing was spent).
        over = await j.reserve(sub("req-a"), limits=[daily(JOB - 1)], dedupe_within=WINDOW, confirm_token_sha256=token)
        assert isinstance(over, OverBudget)
        used = await j.reserve(sub("req-a"), limits=[], dedupe_within=WINDOW, confirm_token_sha256=token)
        assert isinstance(used, Reserved)
        # Reuse: the identical request inside the window is its duplicate (no second spend) ...
        again = await j.reserve(sub("req-a"), limits=[], dedupe_within=WINDOW, confirm_token_sha256=token)
        assert isinstance(again, Duplicate)
        # ... and once that row is gone from the window (or failed), the token is spent.
        await j.mark_rejected(used.record.business_id, error_code="x", error_message="y")
        assert await j.reserve(sub("req-a"), limits=[], dedupe_within=WINDOW, confirm_token_sha256=token) == (
            TokenRefused("used")
        )

        late = token_digest("wct_late")
        await j.add_confirmation(late, fingerprint="req-c", cost_micro_usd=JOB, expires_at=now[0] + 600)
        now[0] += 601
        assert await j.reserve(sub("req-c"), limits=[], dedupe_within=WINDOW, confirm_token_sha256=late) == (
            TokenRefused("expired")
        )
    finally:
        await j.close()
