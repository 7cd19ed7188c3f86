"""Tenancy in the core and the journal: every row, upload, token and budget belongs to one tenant.

The journal is real (SQLite on disk); rates run on the virtual clock.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.server.auth.provider import AccessToken

from wan_mcp.core.boundary import FileBoundary
from wan_mcp.core.clock import VirtualClock
from wan_mcp.core.journal import (
    LOCAL_TENANT,
    Duplicate,
    OverBudget,
    Reserved,
    SpendLimit,
    SqliteJournal,
    Submission,
    TaskJournal,
    TokenRefused,
    UploadRecord,
)
from wan_mcp.core.tenancy import LOCAL, Tenant, TenantRates
from wan_mcp.core.tracker import RateLimiter
from wan_mcp.errors import MAX_TRANSIENT_SECRETS, ErrorCode, WanError, redact, register_secret
from wan_mcp.server.principals import Principals
from wan_mcp.server.tenants_file import TenantEntry, add_tenant, load_tenants, remove_tenant, token_sha256

pytestmark = pytest.mark.anyio
JOB = 500_000  # USD 0.50 in micro-dollars


def sub(tenant: str, fingerprint: str = "fp", cost: int = JOB) -> Submission:
    return Submission(
        business_id=f"wanmcp_{uuid.uuid4().hex}",
        model="wan2.6",
        mode="t2v",
        payload={"prompt": "x"},
        fingerprint=fingerprint,
        cost_micro_usd=cost,
        spender="s",
        tenant=tenant,
    )


def daily(limit: int, tenant: str | None) -> SpendLimit:
    return SpendLimit("daily", limit, since=0.0, spender=None, tenant=tenant)


async def test_rows_are_seen_only_by_their_tenant(journal: TaskJournal) -> None:
    a = await journal.reserve(sub("alice"), limits=[], dedupe_within=600)
    assert isinstance(a, Reserved)
    await journal.attach_task(a.record.business_id, task_id="video_A", status="queued")
    assert (await journal.get("video_A", tenant="alice")) is not None
    assert await journal.get("video_A", tenant="bob") is None
    assert await journal.get(a.record.business_id, tenant="bob") is None
    assert [r.id for r in await journal.list(tenant="alice")] == ["video_A"]
    assert await journal.list(tenant="bob") == []
    assert await journal.list(status="queued", tenant="bob") == []
    assert (await journal.get("video_A")) is not None  # the tracker's unscoped read still works


async def test_the_duplicate_guard_answers_only_the_same_tenant(journal: TaskJournal) -> None:
    first = await journal.reserve(sub("alice", "same"), limits=[], dedupe_within=600)
    assert isinstance(first, Reserved)
    assert isinstance(await journal.reserve(sub("alice", "same"), limits=[], dedupe_within=600), Duplicate)
    other = await journal.reserve(sub("bob", "same"), limits=[], dedupe_within=600)
    assert isinstance(other, Reserved)  # bob learns nothing of alice's request
    assert await journal.find_recent_duplicate("same", 600, tenant="carol") is None


async def test_budgets_count_only_their_tenants_spend(journal: TaskJournal) -> None:
    for _ in range(2):
        assert isinstance(await journal.reserve(sub("alice", uuid.uuid4().hex), limits=[], dedupe_within=0), Reserved)
    over = await journal.reserve(sub("alice", "x"), limits=[daily(2 * JOB, "alice")], dedupe_within=0)
    assert isinstance(over, OverBudget) and over.spent_micro == 2 * JOB
    ok = await journal.reserve(sub("bob", "x"), limits=[daily(2 * JOB, "bob")], dedupe_within=0)
    assert isinstance(ok, Reserved)
    assert await journal.spent([daily(0, "alice"), daily(0, "bob"), daily(0, None)]) == [2 * JOB, JOB, 3 * JOB]


async def test_a_confirm_token_answers_only_its_tenant(journal: TaskJournal) -> None:
    await journal.add_confirmation("d" * 64, fingerprint="fp", cost_micro_usd=JOB, expires_at=4e9, tenant="alice")
    stolen = await journal.reserve(sub("bob"), limits=[], dedupe_within=0, confirm_token_sha256="d" * 64)
    assert stolen == TokenRefused("unknown")  # as unknown as a forged one
    own = await journal.reserve(sub("alice"), limits=[], dedupe_within=0, confirm_token_sha256="d" * 64)
    assert isinstance(own, Reserved)


async def test_the_upload_cache_answers_only_the_tenant_that_uploaded(journal: TaskJournal) -> None:
    rec = UploadRecord("a" * 64, "image", "https://f/1.png", "image/png", 10, 1, 1, 1.0, (), tenant="alice")
    await journal.put_upload(rec)
    assert await journal.get_upload("a" * 64, "image", tenant="alice") == rec
    assert await journal.get_upload("a" * 64, "image", tenant="bob") is None
    await journal.put_upload(replace(rec, url="https://f/2.png", tenant="bob"))  # bob's own upload of the same bytes
    assert (await journal.get_upload("a" * 64, "image", tenant="alice")) == rec


async def test_a_version_3_journal_migrates_its_rows_and_uploads_to_the_local_user(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    j = await SqliteJournal.open(path)
    rec = await j.record_submission(business_id="wanmcp_old", model="wan2.6", mode="t2v", payload={}, fingerprint="f")
    await j.put_upload(UploadRecord("b" * 64, "video", "https://f/v.mp4", "video/mp4", 5, None, None, 1.0, ()))
    await j.close()
    with sqlite3.connect(path) as raw:  # wind the file back to what version 3 wrote
        raw.executescript(
            """
            DROP TABLE rate_slots; DROP TABLE server_keys;
            DROP INDEX tasks_tenant_created;
            ALTER TABLE tasks DROP COLUMN tenant; ALTER TABLE tasks DROP COLUMN own_key;
            ALTER TABLE confirmations DROP COLUMN tenant;
            CREATE TABLE uploads_v3 (sha256 TEXT NOT NULL, kind TEXT NOT NULL, url TEXT NOT NULL,
                mime_type TEXT NOT NULL, size_bytes INTEGER NOT NULL, width INTEGER, height INTEGER,
                created_at REAL NOT NULL, changes TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (sha256, kind)) WITHOUT ROWID;
            INSERT INTO uploads_v3 SELECT sha256, kind, url, mime_type, size_bytes, width, height, created_at, changes
                FROM uploads;
            DROP TABLE uploads; ALTER TABLE uploads_v3 RENAME TO uploads;
            PRAGMA user_version = 3;
            """
        )
    j = await SqliteJournal.open(path)
    try:
        again = await j.get("wanmcp_old", tenant=LOCAL_TENANT)
        assert again is not None and again.business_id == rec.business_id and again.tenant == "local"
        assert (await j.get_upload("b" * 64, "video")) is not None
    finally:
        await j.close()


# --- rates -------------------------------------------------------------------------------------


def test_a_tenants_rate_is_its_own_and_refills() -> None:
    clock = VirtualClock()
    rates = TenantRates(default_per_minute=60, clock=clock)
    alice, bob = Tenant("alice", remote=True, rate_per_minute=2), Tenant("bob", remote=True)
    rates.admit(alice, "list_tasks")
    rates.admit(alice, "list_tasks")
    with pytest.raises(WanError) as refused:
        rates.admit(alice, "list_tasks")
    err = refused.value
    assert err.code is ErrorCode.RATE_LIMITED and err.retry_after == 30 and err.field == "list_tasks"
    assert "2 tool calls per minute" in err.message and "rate_per_minute" in (err.hint or "")
    for _ in range(60):  # bob's default bucket is untouched by alice's
        rates.admit(bob, "list_tasks")
    clock._now += 30  # half a minute: alice has one call again
    rates.admit(alice, "list_tasks")
    for _ in range(100):  # the stdio user is never limited
        rates.admit(LOCAL, "list_tasks")


def test_a_rate_of_zero_means_unlimited() -> None:
    rates = TenantRates(default_per_minute=0, clock=VirtualClock())
    for _ in range(1000):
        rates.admit(Tenant("alice", remote=True), "get_task_status")


@given(st.text(max_size=80))
def test_tenant_ids_are_path_and_key_safe(name: str) -> None:
    try:
        tenant = Tenant(name)
    except ValueError:
        return
    assert "/" not in tenant.id and ".." not in tenant.id and tenant.id == tenant.id.strip() and tenant.id


# --- files ----------------------------------------------------------------------------------------


def test_a_remote_tenants_folder_is_outside_every_other_boundary(tmp_path: Path) -> None:
    out = tmp_path / "videos"
    (out / "tenants" / "alice").mkdir(parents=True)
    secret = out / "tenants" / "alice" / "video_A.mp4"
    secret.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    own = out / "mine.mp4"
    own.write_bytes(secret.read_bytes())
    local = FileBoundary([out], out, excluded=[out / "tenants"])
    assert local.check(str(own), field="f").path == own.resolve()
    answers = []
    for path in (secret, secret.with_name("never.mp4")):  # refused exactly like a file that is not there
        with pytest.raises(WanError) as refused:
            local.check(str(path), field="f")
        answers.append(refused.value.render().replace(str(path), "<P>"))
    assert answers[0] == answers[1]


# --- the tenants file -------------------------------------------------------------------------


def test_the_tenants_file_keeps_digests_only_and_refuses_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    token = add_tenant(path, TenantEntry("alice", budget_daily_usd=5, api_key_env="ALICE_KEY"))
    assert len(token) >= 32 and token not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    (entry,) = load_tenants(path)
    assert entry.token_sha256 == token_sha256(token) and entry.budget_daily_usd == 5.0
    with pytest.raises(WanError, match="already exists"):
        add_tenant(path, TenantEntry("alice"))
    rotated = add_tenant(path, TenantEntry("alice"), rotate=True)
    (entry,) = load_tenants(path)
    assert entry.token_sha256 == token_sha256(rotated) != token_sha256(token) and entry.api_key_env == "ALICE_KEY"
    for bad in ("local", "token-x", "oauth-y", "Alice", "../x", ""):
        with pytest.raises(WanError):
            add_tenant(path, TenantEntry(bad))
    assert remove_tenant(path, "alice") and not remove_tenant(path, "alice")
    for doc, why in (
        ({"tenants": {"a": {"token_sha256": "short"}}}, "64 lower-case hex"),
        ({"tenants": {"a": {"api_key_env": "sk-live-abc"}}}, "name an environment variable"),
        ({"tenants": {"a": {"budget_daily_usd": -1}}}, "number >= 0"),
        ({"tenants": {"a": {"token": "x"}}}, "unknown fields"),
        ({"tenants": {"a": {"token_sha256": "0" * 64}, "b": {"token_sha256": "0" * 64}}}, "share one token"),
        ([], "must be an object"),
    ):
        path.write_text(json.dumps(doc))
        with pytest.raises(WanError, match=why) as err:
            load_tenants(path)
        assert err.value.code is ErrorCode.CONFIG


def test_tenant_keys_are_redacted_but_only_the_newest_are_kept() -> None:
    keys = [f"sk-tenant-{i:06d}-{uuid.uuid4().hex}" for i in range(MAX_TRANSIENT_SECRETS + 10)]
    for key in keys:
        register_secret(key, transient=True)
    assert redact(f"key {keys[-1]} here") == "key *** here"
    assert keys[0] in redact(keys[0])  # the oldest fell out: the list stays bounded


async def test_the_upstream_rate_budget_is_shared_fairly_between_tenants() -> None:
    """A tenant with many polls queued cannot push another tenant's poll to the back of the line."""
    clock = VirtualClock()
    limiter = RateLimiter(rate=1.0, clock=clock)  # one upstream read per (virtual) second
    served: list[tuple[str, float]] = []

    async def poll(tenant: str) -> None:
        await limiter.acquire(tenant)
        served.append((tenant, clock.monotonic()))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(poll, "busy")
        await clock.settle()
        tg.start_soon(poll, "quiet")
        await clock.run_until(lambda: len(served) == 11, limit=60)
    order = [tenant for tenant, _ in served]
    assert order.index("quiet") <= 3, order  # within two turns of arriving (FIFO would make it eleventh)
    times = [at for _, at in served]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times)), times  # still 1 per second


async def test_a_cancelled_poll_leaves_the_line_without_blocking_it() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rate=1.0, clock=clock)
    served: list[str] = []

    async def poll(name: str, tenant: str) -> None:
        await limiter.acquire(tenant)
        served.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll, "first", "a")
        await clock.settle()
        async with anyio.create_task_group() as inner:
            inner.start_soon(poll, "cancelled", "c")
            await clock.settle()
            inner.cancel_scope.cancel()
        tg.start_soon(poll, "last", "a")
        await clock.run_until(lambda: "last" in served, limit=30)
        tg.cancel_scope.cancel()
    assert "cancelled" not in served and served[0] == "first" and "last" in served


# --- the HTTP principals ------------------------------------------------------------------------


async def test_a_running_server_picks_up_a_new_tenant_and_drops_a_removed_one(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    first = add_tenant(path, TenantEntry("alice", rate_per_minute=5))
    clock = VirtualClock()
    principals = Principals(static_tokens=[], tenants_file=path, clock=clock)
    access = await principals.verify_token(first)
    assert access is not None and access.client_id == "alice" and access.token == "(redacted)"
    tenant = principals.tenant(access, {})
    assert tenant.id == "alice" and tenant.remote and tenant.rate_per_minute == 5 and tenant.api_key is None

    second = add_tenant(path, TenantEntry("bob"))
    assert await principals.verify_token(second) is None  # not re-read yet (at most every 5 s)
    clock._now += 5
    assert (await principals.verify_token(second)) is not None
    remove_tenant(path, "alice")
    clock._now += 5
    assert await principals.verify_token(first) is None
    path.write_text("{not json")
    clock._now += 5
    assert (await principals.verify_token(second)) is not None  # a broken file keeps the last good one


def test_an_own_key_header_must_look_like_a_key_and_can_be_refused(tmp_path: Path) -> None:
    principals = Principals(static_tokens=["t" * 40], tenants_file=None)
    access = AccessToken(token="x", client_id="token-abc", subject="token-abc", scopes=["wan"])
    keyed = principals.tenant(access, {"x-wan-api-key": " sk-own-0123456789 "})
    assert keyed.api_key is not None and keyed.api_key.get_secret_value() == "sk-own-0123456789"
    assert "sk-own-0123456789" not in repr(keyed)
    for bad in ("short", "sk with spaces inside", "é" * 20, "x" * 600):
        with pytest.raises(WanError) as refused:
            principals.tenant(access, {"x-wan-api-key": bad})
        assert refused.value.field == "X-Wan-Api-Key" and bad not in refused.value.render()
    closed = Principals(static_tokens=[], tenants_file=None, accept_key_header=False)
    with pytest.raises(WanError, match="does not accept gateway keys"):
        closed.tenant(access, {"x-wan-api-key": "sk-own-0123456789"})
    assert principals.tenant(None, None) is LOCAL  # stdio
