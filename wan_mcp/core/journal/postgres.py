"""The journal on PostgreSQL: the same contract as :mod:`.sqlite`, for many replicas.

Why psycopg 3 (with psycopg_pool) rather than asyncpg: its async connections and pool are
maintained by the PostgreSQL adapter most Python projects already run; it speaks server-side
parameters exactly like the SQLite module does (``%s`` placeholders, text rows) so the two
backends stay line-by-line comparable; and its ``binary`` wheel carries libpq, so installing
needs no compiler or system library. Selected by ``WAN_MCP_DATABASE_URL=postgresql://...``.

How the guarantees hold across processes and machines:
- every write runs in one transaction; rows are changed with ``SELECT ... FOR UPDATE`` and
  the same pure :func:`~wan_mcp.core.journal.records.merge` as SQLite (status never goes back);
- :meth:`reserve` takes a transaction-scoped advisory lock first, so the duplicate check,
  the confirm token, the budget sums and the insert are one serialised step for every replica
  (reservations are rare next to reads; one lock keeps the rule simple and exact);
- migrations run under a session advisory lock, each with its version bump.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import anyio
from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from wan_mcp.core.journal.records import (
    ACTIVE,
    DUPLICATE_BLIND,
    FILM_MODE,
    LOCAL_TENANT,
    UNSETTLED,
    Duplicate,
    Observation,
    OverBudget,
    Reservation,
    Reserved,
    SpendLimit,
    Submission,
    TaskRecord,
    TaskStatus,
    TokenRefused,
    UploadRecord,
    attach_changes,
    check_list_status,
    check_status,
    merge,
    rate_slot,
    task_from_row,
    token_refusal,
    upload_from_row,
)
from wan_mcp.errors import ErrorCode, WanError, redact

__all__ = ["PostgresJournal"]

log = logging.getLogger(__name__)
Row = dict[str, Any]

#: Advisory lock keys (any two constants of our own): migrations, and the reservation step.
_MIGRATION_LOCK: Final = 0x57414E4D01
_RESERVE_LOCK: Final = 0x57414E4D02
_MAX_LIST_LIMIT: Final = 1000
PING_SECONDS: Final = 3.0
#: The NOTIFY channel on which every task row change is announced (payload: business id, task id).
CHANNEL: Final = "wan_mcp_tasks"
#: How long a lost change feed waits before connecting again (readers poll rows meanwhile).
LISTEN_RETRY_SECONDS: Final = 2.0

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE tasks (
            seq            BIGSERIAL UNIQUE,
            business_id    TEXT PRIMARY KEY,
            task_id        TEXT UNIQUE,
            model          TEXT NOT NULL,
            mode           TEXT NOT NULL,
            status         TEXT NOT NULL CHECK (status IN ('submitting', 'unconfirmed', 'rejected',
                                                           'queued', 'in_progress', 'completed', 'failed')),
            progress       INTEGER,
            payload        TEXT NOT NULL,
            fingerprint    TEXT NOT NULL,
            created_at     DOUBLE PRECISION NOT NULL,
            updated_at     DOUBLE PRECISION NOT NULL,
            video_url      TEXT,
            expires_at     BIGINT,
            error_code     TEXT,
            error_message  TEXT,
            local_path     TEXT,
            sha256         TEXT,
            size_bytes     BIGINT,
            cost_micro_usd BIGINT NOT NULL DEFAULT 0,
            spender        TEXT NOT NULL DEFAULT '',
            continues      TEXT,
            tenant         TEXT NOT NULL DEFAULT 'local',
            own_key        BOOLEAN NOT NULL DEFAULT FALSE
        )
        """,
        "CREATE INDEX tasks_created ON tasks (created_at, seq)",
        "CREATE INDEX tasks_status_created ON tasks (status, created_at, seq)",
        "CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at, seq)",
        "CREATE INDEX tasks_fingerprint ON tasks (fingerprint, created_at)",
        "CREATE INDEX tasks_spender ON tasks (spender, created_at)",
        """
        CREATE TABLE uploads (
            tenant     TEXT NOT NULL,
            sha256     TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('image', 'video')),
            url        TEXT NOT NULL,
            mime_type  TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            width      INTEGER,
            height     INTEGER,
            created_at DOUBLE PRECISION NOT NULL,
            changes    TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (tenant, sha256, kind)
        )
        """,
        """
        CREATE TABLE download_leases (
            task_id     TEXT PRIMARY KEY,
            owner       TEXT NOT NULL,
            acquired_at DOUBLE PRECISION NOT NULL,
            expires_at  DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE TABLE confirmations (
            token_sha256   TEXT PRIMARY KEY,
            fingerprint    TEXT NOT NULL,
            cost_micro_usd BIGINT NOT NULL,
            created_at     DOUBLE PRECISION NOT NULL,
            expires_at     DOUBLE PRECISION NOT NULL,
            used_at        DOUBLE PRECISION,
            tenant         TEXT NOT NULL DEFAULT 'local'
        )
        """,
        "CREATE INDEX confirmations_expiry ON confirmations (expires_at)",
    ),
    # 2: shared by every replica: the next free slot of each upstream rate budget, and the key that
    # signs download links (made once, so any replica checks a link another one signed).
    (
        "CREATE TABLE rate_slots (name TEXT PRIMARY KEY, next_at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE server_keys (name TEXT PRIMARY KEY, key BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL)",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_TASK_COLUMNS: Final = (
    "business_id, task_id, model, mode, status, progress, payload, fingerprint, created_at, updated_at, "
    "video_url, expires_at, error_code, error_message, local_path, sha256, size_bytes, cost_micro_usd, spender, "
    "continues, tenant, own_key"
)
_UPLOAD_COLUMNS: Final = "sha256, kind, url, mime_type, size_bytes, width, height, created_at, changes, tenant"


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PostgresJournal:
    """The journal in a PostgreSQL database shared by any number of server processes."""

    def __init__(
        self, pool: AsyncConnectionPool[AsyncConnection[Row]], url: str, where: str, clock: Callable[[], float]
    ) -> None:
        """Use :meth:`open`."""
        self._pool = pool
        self._url = url  # for the change feed's own connection; never shown (it may hold a password)
        self._where = where  # host/db for messages; never the password
        self._clock = clock

    @classmethod
    async def open(
        cls, url: str, *, clock: Callable[[], float] | None = None, max_connections: int = 8
    ) -> PostgresJournal:
        """Connect to ``url`` (``postgresql://user@host:port/db``), migrate, and return the journal."""
        import time

        where = _where(url)
        pool: AsyncConnectionPool[AsyncConnection[Row]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            timeout=10.0,
        )
        try:
            # One direct connection first: a wrong host, password or database fails at once with its
            # reason (the pool would retry until its timeout), and the migration runs on it.
            async with await AsyncConnection.connect(
                url, connect_timeout=10, autocommit=True, row_factory=dict_row
            ) as first:
                await _migrate(first)
            await pool.open(wait=True, timeout=10.0)
        except Exception as exc:
            await pool.close()
            raise _translate(exc, where, url) from None
        return cls(pool, url, where, clock or time.time)

    @staticmethod
    async def ping(url: str) -> bool:
        """Whether the database answers within :data:`PING_SECONDS` (for ``/readyz``): one short connection."""
        try:
            with anyio.fail_after(PING_SECONDS):
                async with await AsyncConnection.connect(url, connect_timeout=int(PING_SECONDS)) as conn:
                    await conn.execute("SELECT 1")
        except Exception:  # unreachable, refused, timed out: not ready, whatever the reason
            return False
        return True

    # --- plumbing -----------------------------------------------------------------

    async def _read(self, query: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[Row]:
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(cast(Any, query), params)
                return await cur.fetchall()
        except WanError:
            raise
        except Exception as exc:
            raise _translate(exc, self._where) from exc

    async def _transaction(self, body: Callable[[AsyncConnection[Row]], Any]) -> Any:
        """``body(conn)`` in one transaction (committed when it returns, rolled back if it raises); reads
        of more than one statement use it too, for one consistent snapshot."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await body(conn)
        except (WanError, ValueError):
            raise
        except Exception as exc:
            raise _translate(exc, self._where) from exc

    @staticmethod
    async def _one(conn: AsyncConnection[Row], query: str, params: Sequence[object] = ()) -> Row | None:
        cur = await conn.execute(cast(Any, query), params)
        return await cur.fetchone()

    async def _fetch_task(self, conn: AsyncConnection[Row], ident: str, *, lock: bool = False) -> Row | None:
        """By the gateway's id first (what agents hold), then by our business id."""
        suffix = " FOR UPDATE" if lock else ""
        row = await self._one(conn, f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = %s{suffix}", (ident,))
        if row is None:
            row = await self._one(conn, f"SELECT {_TASK_COLUMNS} FROM tasks WHERE business_id = %s{suffix}", (ident,))
        return row

    async def _require_task(self, conn: AsyncConnection[Row], ident: str) -> Row:
        row = await self._fetch_task(conn, ident, lock=True)
        if row is None:
            raise WanError(
                ErrorCode.NOT_FOUND,
                f"task {ident} is not in the journal",
                hint="check the id with list_tasks; an id from elsewhere can be queried with get_task_status",
                task_id=ident,
            )
        return row

    async def _set(self, conn: AsyncConnection[Row], business_id: str, values: Mapping[str, object]) -> TaskRecord:
        if values:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in values
            )
            query = sql.SQL("UPDATE tasks SET {} WHERE business_id = {}").format(
                assignments, sql.Placeholder("business_id__")
            )
            await conn.execute(query, {**values, "business_id__": business_id})
        row = await self._one(conn, f"SELECT {_TASK_COLUMNS} FROM tasks WHERE business_id = %s", (business_id,))
        assert row is not None  # the row is locked by this transaction
        if values:  # delivered to every listening replica when (and only if) the transaction commits
            ids = [business_id] if row["task_id"] is None else [business_id, row["task_id"]]
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, _dumps(ids)))
        return task_from_row(row)

    async def _insert(self, conn: AsyncConnection[Row], values: Mapping[str, object]) -> TaskRecord:
        names = list(values)
        query = sql.SQL("INSERT INTO tasks ({}) VALUES ({}) RETURNING {}").format(
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(map(sql.Placeholder, names)),
            sql.SQL(_TASK_COLUMNS),
        )
        cur = await conn.execute(query, values)
        row = await cur.fetchone()
        assert row is not None
        return task_from_row(row)

    # --- submissions --------------------------------------------------------------

    async def record_submission(
        self,
        *,
        business_id: str,
        model: str,
        mode: str,
        payload: dict[str, Any],
        fingerprint: str,
        tenant: str = LOCAL_TENANT,
    ) -> TaskRecord:
        if not business_id:
            raise ValueError("business_id must be a non-empty string")
        body = _dumps(payload)

        async def insert(conn: AsyncConnection[Row]) -> TaskRecord:
            now = self._clock()
            cur = await conn.execute(
                f"INSERT INTO tasks (business_id, model, mode, status, payload, fingerprint, created_at, updated_at, "
                f"tenant) VALUES (%s, %s, %s, 'submitting', %s, %s, %s, %s, %s) "
                f"ON CONFLICT (business_id) DO NOTHING RETURNING {_TASK_COLUMNS}",
                (business_id, model, mode, body, fingerprint, now, now, tenant),
            )
            row = await cur.fetchone()
            if row is not None:
                return task_from_row(row)
            same = await self._one(
                conn,
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE business_id = %s AND model = %s AND mode = %s "
                "AND payload = %s AND fingerprint = %s AND tenant = %s",
                (business_id, model, mode, body, fingerprint, tenant),
            )
            if same is not None:
                return task_from_row(same)
            raise WanError(
                ErrorCode.JOURNAL,
                f"business id {business_id} is already in the task journal ({self._where}) for a different request",
                hint="this is a wan-mcp bug: every submission needs a fresh client_business_id",
            )

        result: TaskRecord = await self._transaction(insert)
        return result

    async def attach_task(
        self, business_id: str, *, task_id: str, status: TaskStatus, progress: int | None = None
    ) -> TaskRecord:
        check_status(status)
        if not task_id:
            raise ValueError("task_id must be a non-empty string")

        async def attach(conn: AsyncConnection[Row]) -> TaskRecord:
            row = await self._require_task(conn, business_id)
            if row["business_id"] != business_id:
                raise ValueError(f"attach_task needs a business id, got task id {business_id!r}")
            bound = row["task_id"]
            if bound is not None and bound != task_id:
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"business id {business_id} is already bound to task {bound}; refusing to rebind it to {task_id}",
                    hint=f"both tasks exist upstream: query {bound} and {task_id} with get_task_status",
                    task_id=bound,
                )
            other = await self._one(
                conn, "SELECT business_id FROM tasks WHERE task_id = %s AND business_id != %s", (task_id, business_id)
            )
            if other is not None:
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"task {task_id} is already recorded for business id {other['business_id']}, not {business_id}",
                    hint="a wan-mcp bug or a gateway id collision; the recorded task is unaffected",
                    task_id=task_id,
                )
            values = {"task_id": task_id, "updated_at": self._clock()}
            values.update(attach_changes(task_from_row(row), status, progress))
            return await self._set(conn, business_id, values)

        result: TaskRecord = await self._transaction(attach)
        return result

    async def mark_unconfirmed(self, business_id: str, *, error_code: str, error_message: str) -> TaskRecord:
        return await self._settle(business_id, "unconfirmed", error_code, error_message)

    async def mark_rejected(self, business_id: str, *, error_code: str, error_message: str) -> TaskRecord:
        return await self._settle(business_id, "rejected", error_code, error_message)

    async def _settle(
        self, business_id: str, status: Literal["unconfirmed", "rejected"], error_code: str, error_message: str
    ) -> TaskRecord:
        async def settle(conn: AsyncConnection[Row]) -> TaskRecord:
            row = await self._require_task(conn, business_id)
            values: dict[str, object] = {}
            if row["task_id"] is None and row["status"] in UNSETTLED:
                values = {
                    "status": status,
                    "error_code": error_code,
                    "error_message": error_message,
                    "updated_at": self._clock(),
                }
            return await self._set(conn, row["business_id"], values)

        result: TaskRecord = await self._transaction(settle)
        return result

    async def observe(self, id_or_business_id: str, news: Observation) -> TaskRecord:
        check_status(news.status)

        async def update(conn: AsyncConnection[Row]) -> TaskRecord:
            row = await self._require_task(conn, id_or_business_id)
            values = merge(task_from_row(row), news)
            if values:
                values["updated_at"] = self._clock()
            return await self._set(conn, row["business_id"], values)

        result: TaskRecord = await self._transaction(update)
        return result

    # --- reads --------------------------------------------------------------------

    async def get(self, id_or_business_id: str, *, tenant: str | None = None) -> TaskRecord | None:
        async def work(conn: AsyncConnection[Row]) -> Row | None:
            return await self._fetch_task(conn, id_or_business_id)

        row: Row | None = await self._transaction(work)
        if row is None or (tenant is not None and row["tenant"] != tenant):
            return None
        return task_from_row(row)

    async def list(
        self, *, status: str | None = None, limit: int = 20, before: float | None = None, tenant: str | None = None
    ) -> builtins.list[TaskRecord]:
        check_list_status(status)
        where, params = [], {"limit": max(0, min(int(limit), _MAX_LIST_LIMIT))}
        for name, value, clause in (
            ("tenant", tenant, "tenant = %(tenant)s"),
            ("status", status, "status = %(status)s"),
            ("before", before, "created_at < %(before)s"),
        ):
            if value is not None:
                where.append(clause)
                params[name] = value  # type: ignore[assignment]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {_TASK_COLUMNS} FROM tasks{clause} ORDER BY created_at DESC, seq DESC LIMIT %(limit)s",
            params,
        )
        return [task_from_row(r) for r in rows]

    async def unsettled(self) -> builtins.list[TaskRecord]:
        return await self._by_statuses(UNSETTLED)

    async def active(self) -> builtins.list[TaskRecord]:
        return await self._by_statuses(ACTIVE)

    async def _by_statuses(self, statuses: frozenset[str]) -> builtins.list[TaskRecord]:
        rows = await self._read(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status = ANY(%s) ORDER BY created_at, seq",
            (sorted(statuses),),
        )
        return [task_from_row(r) for r in rows]

    async def find_recent_duplicate(
        self, fingerprint: str, within_seconds: float, *, tenant: str = LOCAL_TENANT
    ) -> TaskRecord | None:
        async def work(conn: AsyncConnection[Row]) -> TaskRecord | None:
            return await self._duplicate(conn, fingerprint, within_seconds, tenant)

        result: TaskRecord | None = await self._transaction(work)
        return result

    async def _duplicate(
        self, conn: AsyncConnection[Row], fingerprint: str, within_seconds: float, tenant: str
    ) -> TaskRecord | None:
        row = await self._one(
            conn,
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE fingerprint = %s AND created_at >= %s AND tenant = %s "
            "AND status <> ALL(%s) ORDER BY created_at DESC, seq DESC LIMIT 1",
            (fingerprint, self._clock() - within_seconds, tenant, sorted(DUPLICATE_BLIND)),
        )
        return None if row is None else task_from_row(row)

    # --- spending -----------------------------------------------------------------

    async def reserve(
        self,
        sub: Submission,
        *,
        limits: Sequence[SpendLimit],
        dedupe_within: float,
        confirm_token_sha256: str | None = None,
    ) -> Reservation:
        if not sub.business_id:
            raise ValueError("business_id must be a non-empty string")

        async def reserve(conn: AsyncConnection[Row]) -> Reservation:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_RESERVE_LOCK,))
            now = self._clock()
            if sub.fingerprint:
                existing = await self._duplicate(conn, sub.fingerprint, dedupe_within, sub.tenant)
                if existing is not None:
                    return Duplicate(existing)
            if confirm_token_sha256 is not None:
                refused = await self._check_token(conn, confirm_token_sha256, sub.fingerprint, sub.tenant, now)
                if refused is not None:
                    return refused
            for limit in limits:
                spent = await self._spent(conn, limit)
                if spent + sub.cost_micro_usd > limit.limit_micro:
                    return OverBudget(limit, spent)
            if confirm_token_sha256 is not None:
                await conn.execute(
                    "UPDATE confirmations SET used_at = %s WHERE token_sha256 = %s", (now, confirm_token_sha256)
                )
            record = await self._insert(
                conn,
                {
                    "business_id": sub.business_id,
                    "model": sub.model,
                    "mode": sub.mode,
                    "status": "submitting",
                    "payload": _dumps(sub.payload),
                    "fingerprint": sub.fingerprint,
                    "created_at": now,
                    "updated_at": now,
                    "cost_micro_usd": sub.cost_micro_usd,
                    "spender": sub.spender,
                    "continues": sub.continues,
                    "tenant": sub.tenant,
                    "own_key": sub.own_key,
                },
            )
            return Reserved(record)

        result: Reservation = await self._transaction(reserve)
        return result

    async def spent(self, limits: Sequence[SpendLimit]) -> builtins.list[int]:
        async def work(conn: AsyncConnection[Row]) -> builtins.list[int]:
            return [await self._spent(conn, limit) for limit in limits]

        result: builtins.list[int] = await self._transaction(work)
        return result

    @staticmethod
    async def _spent(conn: AsyncConnection[Row], limit: SpendLimit) -> int:
        where, params = ["status <> 'rejected'"], []
        for value, clause in (
            (limit.since, "created_at >= %s"),
            (limit.spender, "spender = %s"),
            (limit.tenant, "tenant = %s"),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        cur = await conn.execute(
            f"SELECT COALESCE(SUM(cost_micro_usd), 0) AS spent FROM tasks WHERE {' AND '.join(where)}",
            params,
        )
        row = await cur.fetchone()
        return int(row["spent"]) if row is not None else 0

    async def add_confirmation(
        self,
        token_sha256: str,
        *,
        fingerprint: str,
        cost_micro_usd: int,
        expires_at: float,
        tenant: str = LOCAL_TENANT,
    ) -> None:
        async def add(conn: AsyncConnection[Row]) -> None:
            now = self._clock()
            await conn.execute("DELETE FROM confirmations WHERE expires_at < %s", (now - 86_400,))
            await conn.execute(
                "INSERT INTO confirmations (token_sha256, fingerprint, cost_micro_usd, created_at, expires_at, tenant) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (token_sha256, fingerprint, cost_micro_usd, now, expires_at, tenant),
            )

        await self._transaction(add)

    async def _check_token(
        self, conn: AsyncConnection[Row], digest: str, fingerprint: str, tenant: str, now: float
    ) -> TokenRefused | None:
        row = await self._one(
            conn,
            "SELECT fingerprint, expires_at, used_at FROM confirmations WHERE token_sha256 = %s AND tenant = %s "
            "FOR UPDATE",
            (digest, tenant),
        )
        return token_refusal(row, fingerprint, now)

    # --- films --------------------------------------------------------------------

    async def record_film(
        self,
        film_id: str,
        *,
        payload: dict[str, Any],
        local_path: str,
        sha256: str,
        size_bytes: int,
        tenant: str = LOCAL_TENANT,
    ) -> TaskRecord:
        async def insert(conn: AsyncConnection[Row]) -> TaskRecord:
            now = self._clock()
            return await self._insert(
                conn,
                {
                    "business_id": film_id,
                    "task_id": film_id,
                    "model": "join",
                    "mode": FILM_MODE,
                    "status": "completed",
                    "progress": 100,
                    "payload": _dumps(payload),
                    "fingerprint": "",
                    "created_at": now,
                    "updated_at": now,
                    "local_path": local_path,
                    "sha256": sha256,
                    "size_bytes": size_bytes,
                    "tenant": tenant,
                },
            )

        result: TaskRecord = await self._transaction(insert)
        return result

    # --- uploads ------------------------------------------------------------------

    async def get_upload(self, sha256: str, kind: str, *, tenant: str = LOCAL_TENANT) -> UploadRecord | None:
        rows = await self._read(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE tenant = %s AND sha256 = %s AND kind = %s",
            (tenant, sha256, kind),
        )
        return upload_from_row(rows[0]) if rows else None

    async def put_upload(self, rec: UploadRecord) -> None:
        async def put(conn: AsyncConnection[Row]) -> None:
            await conn.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, sha256, kind) DO UPDATE SET url = excluded.url, mime_type = excluded.mime_type, "
                "size_bytes = excluded.size_bytes, width = excluded.width, height = excluded.height, "
                "created_at = excluded.created_at, changes = excluded.changes",
                (
                    *(rec.sha256, rec.kind, rec.url, rec.mime_type, rec.size_bytes, rec.width, rec.height),
                    *(rec.created_at, json.dumps(list(rec.changes), ensure_ascii=False), rec.tenant),
                ),
            )

        await self._transaction(put)

    # --- downloads ----------------------------------------------------------------

    async def record_download(
        self, id_or_business_id: str, *, local_path: str, sha256: str, size_bytes: int
    ) -> TaskRecord:
        async def record(conn: AsyncConnection[Row]) -> TaskRecord:
            row = await self._require_task(conn, id_or_business_id)
            values = {"local_path": local_path, "sha256": sha256, "size_bytes": size_bytes, "updated_at": self._clock()}
            return await self._set(conn, row["business_id"], values)

        result: TaskRecord = await self._transaction(record)
        return result

    async def claim_download(
        self, task_id: str, owner: str, ttl_seconds: float, *, holder_gone: Callable[[str], bool] | None = None
    ) -> bool:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")

        async def claim(conn: AsyncConnection[Row]) -> bool:
            now = self._clock()
            # Make the row exist (expired) so FOR UPDATE has something to lock: two claimants serialise here.
            await conn.execute(
                "INSERT INTO download_leases (task_id, owner, acquired_at, expires_at) VALUES (%s, '', 0, 0) "
                "ON CONFLICT (task_id) DO NOTHING",
                (task_id,),
            )
            row = await self._one(
                conn, "SELECT owner, expires_at FROM download_leases WHERE task_id = %s FOR UPDATE", (task_id,)
            )
            assert row is not None
            held = row["owner"] not in ("", owner) and row["expires_at"] > now
            if held and (holder_gone is None or not holder_gone(str(row["owner"]))):
                return False
            mine = row["owner"] == owner
            await conn.execute(
                "UPDATE download_leases SET owner = %s, expires_at = %s, "
                "acquired_at = CASE WHEN %s THEN acquired_at ELSE %s END WHERE task_id = %s",
                (owner, now + ttl_seconds, mine, now, task_id),
            )
            return True

        result: bool = await self._transaction(claim)
        return result

    async def release_download(self, task_id: str, owner: str) -> None:
        async def release(conn: AsyncConnection[Row]) -> None:
            await conn.execute("DELETE FROM download_leases WHERE task_id = %s AND owner = %s", (task_id, owner))

        await self._transaction(release)

    async def take_rate_slot(self, name: str, spacing: float) -> float:
        async def take(conn: AsyncConnection[Row]) -> float:
            now = self._clock()
            # The row first (so FOR UPDATE has something to lock): concurrent callers queue on it.
            await conn.execute(
                "INSERT INTO rate_slots (name, next_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, now)
            )
            row = await self._one(conn, "SELECT next_at FROM rate_slots WHERE name = %s FOR UPDATE", (name,))
            assert row is not None
            slot, following = rate_slot(float(row["next_at"]), now, spacing)
            await conn.execute("UPDATE rate_slots SET next_at = %s WHERE name = %s", (following, name))
            return slot - now

        result: float = await self._transaction(take)
        return result

    async def server_key(self, name: str) -> bytes:
        async def make(conn: AsyncConnection[Row]) -> bytes:
            await conn.execute(
                "INSERT INTO server_keys (name, key, created_at) VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_bytes(32), self._clock()),
            )
            row = await self._one(conn, "SELECT key FROM server_keys WHERE name = %s", (name,))
            assert row is not None
            return bytes(row["key"])

        result: bytes = await self._transaction(make)
        return result

    async def listen(self, on_change: Callable[[str], None]) -> None:
        """LISTEN on one connection of its own (outside the pool); after a failure, connect again."""
        while True:
            try:
                feed = await AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
                async with feed as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    async for note in conn.notifies():
                        for ident in _announced(note.payload):
                            on_change(ident)
            except Exception as exc:  # the database went away: readers fall back to reading rows meanwhile
                log.warning("journal change feed lost (%s); reconnecting", _translate(exc, self._where).message)
            await anyio.sleep(LISTEN_RETRY_SECONDS)

    # --- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        """Close the pool (idempotent). Every committed write is already durable in the database."""
        await self._pool.close()

    async def __aenter__(self) -> PostgresJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _migrate(conn: AsyncConnection[Row]) -> None:
    """Apply pending migrations under a session advisory lock (replicas starting together wait)."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS wan_mcp_schema (version INTEGER NOT NULL)")
        row = await (await conn.execute("SELECT max(version) AS v FROM wan_mcp_schema")).fetchone()
        version = int(row["v"]) if row is not None and row["v"] is not None else 0
        if version > SCHEMA_VERSION:
            raise WanError(
                ErrorCode.JOURNAL,
                f"the journal database has schema version {version}, newer than this wan-mcp understands "
                f"({SCHEMA_VERSION})",
                hint="upgrade wan-mcp on every replica; do not drop the tables, they list tasks that were paid for",
            )
        for number in range(version, SCHEMA_VERSION):
            async with conn.transaction():
                for statement in _MIGRATIONS[number]:
                    await conn.execute(cast(Any, statement))
                await conn.execute("INSERT INTO wan_mcp_schema (version) VALUES (%s)", (number + 1,))
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def _announced(payload: str) -> list[str]:
    """The ids in a change announcement (a JSON list of strings); anything else on the channel is ignored."""
    try:
        ids = json.loads(payload)
    except ValueError:
        return []
    return [i for i in ids[:2] if isinstance(i, str)] if isinstance(ids, list) else []


def _where(url: str) -> str:
    """``host:port/db`` of a connection URL, for messages (never the user's password)."""
    parts = urlsplit(url)
    return f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _translate(exc: Exception, where: str, url: str | None = None) -> WanError:
    """A database failure as the one error type, with the place, the reason and the fix (never the password)."""
    if isinstance(exc, WanError):
        return exc
    if isinstance(exc, errors.OperationalError) or type(exc).__name__ == "PoolTimeout":
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        password = urlsplit(url).password if url else None
        if password:
            reason = reason.replace(password, "***")
        return WanError(
            ErrorCode.JOURNAL,
            f"the task journal database {where} cannot be reached: {redact(reason)}",
            hint="check that PostgreSQL is running and WAN_MCP_DATABASE_URL is right, then retry; "
            "tasks already submitted are safe in the database",
        )
    return WanError(
        ErrorCode.JOURNAL,
        f"the task journal database {where} failed ({type(exc).__name__})",
        hint="retry; if this repeats, check the database's log",
    )
