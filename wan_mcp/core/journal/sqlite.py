"""The durable task journal: the product's memory of every paid job.

Why it exists: a video costs money the moment the gateway accepts a create call, and
an MCP host may kill us at any instant. So the journal is written *around* the POST:

1. :meth:`SqliteJournal.record_submission` commits a ``submitting`` row holding the
   ``client_business_id`` we are about to send, before the request leaves;
2. :meth:`SqliteJournal.attach_task` commits the gateway's task id, and only then does the
   agent hear of it (invariant 3);
3. after a crash, :meth:`SqliteJournal.unsettled` lists the rows whose POST was never
   answered so they can be reconciled *by business id*, never re-POSTed (invariant 2).

``TaskJournal`` (:mod:`.protocol`) is the contract; :class:`SqliteJournal` is the embedded
default and the reference semantics.

Secrets: callers store the exact wire *body* (``payload``), which never holds the API key;
the key travels only in the ``Authorization`` header, which never reaches this module
(invariant 5). Journal failures surface as ``WanError(ErrorCode.JOURNAL)`` with a hint that
names the file and the fix; no raw ``sqlite3`` exception escapes.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import anyio

from wan_mcp.core import offload
from wan_mcp.core.journal.records import (
    ACTIVE,
    DUPLICATE_BLIND,
    FILM_MODE,
    LOCAL_TENANT,
    TERMINAL,
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
from wan_mcp.core.journal.schema import (
    _HINT_UNWRITABLE,
    _TASK_COLUMNS,
    _connect,
    _list_sql,
    _translate,
)
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["SqliteJournal"]

_MAX_LIST_LIMIT: Final = 1000

T = TypeVar("T")


class SqliteJournal:
    """The embedded journal: one SQLite file in WAL mode, shareable by several processes.

    Every call runs on a worker thread so a slow disk (fsync) never stalls the event loop.
    One connection per instance, serialised by a capacity limiter of one (callers queue in
    the event loop rather than each holding a worker thread) and a thread lock (so the
    connection is never used by two threads even if the limiter were bypassed). Writes use
    ``BEGIN IMMEDIATE`` so the write lock is taken up front and waited for under
    ``busy_timeout``, instead of failing half-way when another process writes.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, busy_timeout: float, clock: Callable[[], float]
    ) -> None:
        """Use :meth:`open`; this only wires an already prepared connection."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._synchronous: str | None = None

    @property
    def path(self) -> Path:
        return self._path

    # --- opening ------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> SqliteJournal:
        """Open (creating if needed) and migrate the journal at ``path``.

        ``clock`` must be wall-clock time: lease expiry and duplicate windows are compared
        across processes, where a monotonic clock means nothing.
        """
        path = Path(path)

        def prepare() -> sqlite3.Connection:
            try:
                return _connect(path, busy_timeout)
            except sqlite3.Error as exc:
                raise _translate(exc, path, busy_timeout) from exc
            except OSError as exc:
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"cannot open or create the task journal {path}: {exc.strerror or exc}",
                    hint=_HINT_UNWRITABLE,
                ) from exc

        conn = await offload.run_sync(prepare)
        return cls(conn, path, busy_timeout=busy_timeout, clock=clock)

    @staticmethod
    async def ping(path: Path) -> bool:
        """Whether the journal file can be opened and read now (for ``/readyz``)."""

        def probe() -> bool:
            try:
                with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)) as conn:
                    conn.execute("SELECT 1 FROM tasks LIMIT 1").fetchall()
            except (sqlite3.Error, OSError):
                return False
            return True

        return await offload.run_sync(probe)

    # --- plumbing -----------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await offload.run_sync(self._run, fn, limiter=self._limiter)

    async def _transaction(self, body: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        """``body`` in one write transaction on the journal's thread (see :meth:`_write`)."""
        return await self._call(lambda conn: self._write(conn, lambda: body(conn), durable=durable))

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"the task journal {self._path} is already closed",
                    hint="this is a wan-mcp bug (journal used after shutdown); restart the server",
                )
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
                        conn.execute("ROLLBACK")
                raise _translate(exc, self._path, self._busy_timeout) from exc

    def _write(self, conn: sqlite3.Connection, body: Callable[[], T], *, durable: bool) -> T:
        """Run ``body`` in one IMMEDIATE transaction.

        ``durable`` rows (submissions, task ids, their outcome) commit with
        ``synchronous=FULL``: WAL + NORMAL survives a process crash but may lose the last
        commits on power loss, and a lost submission row is a paid job we can no longer
        reconcile. Status/upload/lease rows are re-derivable from the gateway, so they take
        the cheaper NORMAL. (An fsync of the WAL also covers every earlier NORMAL frame.)
        """
        level = "FULL" if durable else "NORMAL"
        if self._synchronous != level:
            conn.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _fetch_task(conn: sqlite3.Connection, ident: str) -> sqlite3.Row | None:
        # The gateway's id first: that is what agents hold. Our business id still resolves,
        # so a task whose POST went unanswered can be looked up too.
        row: sqlite3.Row | None = conn.execute(
            f"SELECT rowid AS rid, {_TASK_COLUMNS} FROM tasks WHERE task_id = ?",  # noqa: S608
            (ident,),
        ).fetchone()
        if row is None:
            row = conn.execute(
                f"SELECT rowid AS rid, {_TASK_COLUMNS} FROM tasks WHERE business_id = ?",  # noqa: S608
                (ident,),
            ).fetchone()
        return row

    def _require_task(self, conn: sqlite3.Connection, ident: str) -> sqlite3.Row:
        row = self._fetch_task(conn, ident)
        if row is None:
            raise WanError(
                ErrorCode.NOT_FOUND,
                f"task {ident} is not in the local journal",
                hint="check the id with list_tasks; an id from elsewhere can be queried with get_task_status",
                task_id=ident,
            )
        return row

    @staticmethod
    def _reload(conn: sqlite3.Connection, rid: int) -> TaskRecord:
        row = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE rowid = ?", (rid,)).fetchone()  # noqa: S608
        assert row is not None  # we hold the write lock; the row cannot vanish
        return task_from_row(row)

    @staticmethod
    def _set(conn: sqlite3.Connection, rid: int, values: Mapping[str, object]) -> None:
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        conn.execute(f"UPDATE tasks SET {assignments} WHERE rowid = :rid", {**values, "rid": rid})  # noqa: S608

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
        """Commit the ``submitting`` row before the POST leaves, so a crash mid-call is recoverable.

        Re-recording an identical submission returns the existing row (whatever its status
        now); the same business id with a different request is a JOURNAL error.
        """
        if not business_id:
            raise ValueError("business_id must be a non-empty string")
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

        def insert(conn: sqlite3.Connection) -> TaskRecord:
            now = self._clock()
            try:
                cur = conn.execute(
                    f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, NULL, ?, ?, 'submitting', NULL, "  # noqa: S608
                    "?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, '', NULL, ?, 0)",
                    (business_id, model, mode, body, fingerprint, now, now, tenant),
                )
            except sqlite3.IntegrityError as exc:
                # Recording the very same submission twice (e.g. two callers importing
                # one foreign task id at once) is harmless: hand back the existing row.
                same = conn.execute(
                    f"SELECT rowid AS rid, {_TASK_COLUMNS} FROM tasks WHERE business_id = ? "  # noqa: S608
                    "AND model = ? AND mode = ? AND payload = ? AND fingerprint = ? AND tenant = ?",
                    (business_id, model, mode, body, fingerprint, tenant),
                ).fetchone()
                if same is not None:
                    return task_from_row(same)
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"business id {business_id} is already in the task journal {self._path} for a different request",
                    hint="this is a wan-mcp bug: every submission needs a fresh client_business_id",
                ) from exc
            assert cur.lastrowid is not None
            return self._reload(conn, cur.lastrowid)

        return await self._transaction(insert, durable=True)

    async def attach_task(
        self, business_id: str, *, task_id: str, status: TaskStatus, progress: int | None = None
    ) -> TaskRecord:
        """Bind the gateway's task id to our submission; durable before the agent is told.

        Idempotent for the same id (a reconcile racing the POST's own answer is harmless).
        A ``rejected`` row is revived: a task id is proof the gateway did accept the job, and
        a paid job must never stay hidden behind a wrong "nothing was billed".
        """
        check_status(status)
        if not task_id:
            raise ValueError("task_id must be a non-empty string")

        def attach(conn: sqlite3.Connection) -> TaskRecord:
            row = self._require_task(conn, business_id)
            if row["business_id"] != business_id:
                raise ValueError(f"attach_task needs a business id, got task id {business_id!r}")
            rid = int(row["rid"])
            bound = row["task_id"]
            if bound is not None and bound != task_id:
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"business id {business_id} is already bound to task {bound} in {self._path}; "
                    f"refusing to rebind it to {task_id}",
                    hint=f"both tasks exist upstream: query {bound} and {task_id} with get_task_status",
                    task_id=bound,
                )
            other = conn.execute(
                "SELECT business_id FROM tasks WHERE task_id = ? AND business_id != ?",
                (task_id, business_id),
            ).fetchone()
            if other is not None:
                raise WanError(
                    ErrorCode.JOURNAL,
                    f"task {task_id} is already recorded for business id {other['business_id']} "
                    f"in {self._path}, not {business_id}",
                    hint="a wan-mcp bug or a gateway id collision; the recorded task is unaffected",
                    task_id=task_id,
                )
            values = {"task_id": task_id, "updated_at": self._clock()}
            values.update(attach_changes(task_from_row(row), status, progress))
            self._set(conn, rid, values)
            return self._reload(conn, rid)

        return await self._transaction(attach, durable=True)

    async def mark_unconfirmed(self, business_id: str, *, error_code: str, error_message: str) -> TaskRecord:
        """Record that reconciling could not tell whether the create happened.

        Only an unsettled row changes: if a task id was attached meanwhile (or the row was
        settled otherwise) the newer knowledge wins and the row is returned as is.
        """
        return await self._settle(business_id, "unconfirmed", error_code, error_message)

    async def mark_rejected(self, business_id: str, *, error_code: str, error_message: str) -> TaskRecord:
        """Record a definitive refusal of the create (4xx): no task exists, nothing was billed.

        Ignored for a row that already has a task id: the gateway accepted that one, and
        calling it rejected would hide a paid job.
        """
        return await self._settle(business_id, "rejected", error_code, error_message)

    async def _settle(
        self,
        business_id: str,
        status: Literal["unconfirmed", "rejected"],
        error_code: str,
        error_message: str,
    ) -> TaskRecord:
        def settle(conn: sqlite3.Connection) -> TaskRecord:
            row = self._require_task(conn, business_id)
            rid = int(row["rid"])
            if row["task_id"] is None and row["status"] in UNSETTLED:
                self._set(
                    conn,
                    rid,
                    {
                        "status": status,
                        "error_code": error_code,
                        "error_message": error_message,
                        "updated_at": self._clock(),
                    },
                )
            return self._reload(conn, rid)

        return await self._transaction(settle, durable=True)

    # --- status -------------------------------------------------------------------

    async def observe(self, id_or_business_id: str, news: Observation) -> TaskRecord:
        """Fold one observation of the task into its row with :func:`merge` (the monotonic rules).

        Unknown id: ``WanError(NOT_FOUND)``. A terminal status is written durably (fsync): it
        ends polling and billing questions.
        """
        check_status(news.status)

        def update(conn: sqlite3.Connection) -> TaskRecord:
            row = self._require_task(conn, id_or_business_id)
            rid = int(row["rid"])
            values = merge(task_from_row(row), news)
            if values:
                values["updated_at"] = self._clock()
                self._set(conn, rid, values)
            return self._reload(conn, rid)

        return await self._transaction(update, durable=news.status in TERMINAL)

    # --- reads --------------------------------------------------------------------

    async def get(self, id_or_business_id: str, *, tenant: str | None = None) -> TaskRecord | None:
        """The row by task id or business id; with ``tenant``, only if that tenant owns it."""

        def work(conn: sqlite3.Connection) -> TaskRecord | None:
            row = self._fetch_task(conn, id_or_business_id)
            if row is None or (tenant is not None and row["tenant"] != tenant):
                return None
            return task_from_row(row)

        return await self._call(work)

    async def list(
        self, *, status: str | None = None, limit: int = 20, before: float | None = None, tenant: str | None = None
    ) -> builtins.list[TaskRecord]:
        """Newest first; ``before`` (a ``created_at``) pages further back; ``tenant`` lists only its rows.

        A bad ``status`` is the agent's input passed through, so it is answered as an
        invalid request naming the allowed values; ``limit`` is capped at 1000.
        """
        check_list_status(status)
        sql = _list_sql(by_status=status is not None, paged=before is not None, by_tenant=tenant is not None)
        params: dict[str, object] = {"limit": max(0, min(int(limit), _MAX_LIST_LIMIT)), "tenant": tenant}
        if status is not None:
            params["status"] = status
        if before is not None:
            params["before"] = float(before)

        def work(conn: sqlite3.Connection) -> builtins.list[TaskRecord]:
            return [task_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return await self._call(work)

    async def unsettled(self) -> builtins.list[TaskRecord]:
        """Submissions whose POST outcome is unknown, oldest first (the order they were sent)."""
        return await self._by_statuses(UNSETTLED)

    async def active(self) -> builtins.list[TaskRecord]:
        """Tasks running upstream (queued/in_progress), oldest first: the tracker resumes these."""
        return await self._by_statuses(ACTIVE)

    async def _by_statuses(self, statuses: frozenset[str]) -> builtins.list[TaskRecord]:
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status IN ({marks}) ORDER BY created_at, rowid"  # noqa: S608

        def work(conn: sqlite3.Connection) -> builtins.list[TaskRecord]:
            return [task_from_row(r) for r in conn.execute(sql, sorted(statuses)).fetchall()]

        return await self._call(work)

    async def find_recent_duplicate(
        self, fingerprint: str, within_seconds: float, *, tenant: str = LOCAL_TENANT
    ) -> TaskRecord | None:
        """The newest task of ``tenant`` with this fingerprint created within the window that still counts.

        Rejected and failed rows never count (:data:`DUPLICATE_BLIND`): nothing was made, so
        sending the same request again is a fresh attempt, not a duplicate.
        """

        def work(conn: sqlite3.Connection) -> TaskRecord | None:
            return self._duplicate(conn, fingerprint, within_seconds, tenant)

        return await self._call(work)

    def _duplicate(
        self, conn: sqlite3.Connection, fingerprint: str, within_seconds: float, tenant: str
    ) -> TaskRecord | None:
        marks = ", ".join("?" for _ in DUPLICATE_BLIND)
        row = conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks "  # noqa: S608
            f"WHERE fingerprint = ? AND created_at >= ? AND tenant = ? AND status NOT IN ({marks}) "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (fingerprint, self._clock() - within_seconds, tenant, *sorted(DUPLICATE_BLIND)),
        ).fetchone()
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
        """Atomically: answer a duplicate, or use the confirm token, check every budget, and
        write the ``submitting`` row holding the spend, all in ONE write transaction.

        Because the duplicate check, the budget sums and the insert share one
        ``BEGIN IMMEDIATE`` (which every process sharing the file serialises on), N concurrent
        calls can never reserve past a budget, identical calls make one row, and a token is
        used once. Order: a duplicate wins (it costs nothing); then the token; then budgets.
        """
        if not sub.business_id:
            raise ValueError("business_id must be a non-empty string")
        body = json.dumps(sub.payload, ensure_ascii=False, separators=(",", ":"))

        def reserve(conn: sqlite3.Connection) -> Reservation:
            now = self._clock()
            if sub.fingerprint:
                existing = self._duplicate(conn, sub.fingerprint, dedupe_within, sub.tenant)
                if existing is not None:
                    return Duplicate(existing)
            if confirm_token_sha256 is not None:
                refused = self._check_token(conn, confirm_token_sha256, sub.fingerprint, sub.tenant, now)
                if refused is not None:
                    return refused
            for limit in limits:
                spent = self._spent(conn, limit)
                if spent + sub.cost_micro_usd > limit.limit_micro:
                    return OverBudget(limit, spent)  # the token stays unused: nothing was spent
            if confirm_token_sha256 is not None:
                conn.execute("UPDATE confirmations SET used_at = ? WHERE token_sha256 = ?", (now, confirm_token_sha256))
            cur = conn.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, NULL, ?, ?, 'submitting', NULL, "  # noqa: S608
                "?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ?, ?, ?, ?, ?)",
                (
                    *(sub.business_id, sub.model, sub.mode, body, sub.fingerprint, now, now),
                    *(sub.cost_micro_usd, sub.spender, sub.continues, sub.tenant, int(sub.own_key)),
                ),
            )
            assert cur.lastrowid is not None
            return Reserved(self._reload(conn, cur.lastrowid))

        return await self._transaction(reserve, durable=True)

    async def spent(self, limits: Sequence[SpendLimit]) -> builtins.list[int]:
        """Micro-USD counted against each limit now (same rule as :meth:`reserve`)."""

        def work(conn: sqlite3.Connection) -> builtins.list[int]:
            return [self._spent(conn, limit) for limit in limits]

        return await self._call(work)

    @staticmethod
    def _spent(conn: sqlite3.Connection, limit: SpendLimit) -> int:
        where = ["status != 'rejected'"]
        params: builtins.list[object] = []
        if limit.since is not None:
            where.append("created_at >= ?")
            params.append(limit.since)
        if limit.spender is not None:
            where.append("spender = ?")
            params.append(limit.spender)
        if limit.tenant is not None:
            where.append("tenant = ?")
            params.append(limit.tenant)
        row = conn.execute(
            f"SELECT COALESCE(SUM(cost_micro_usd), 0) FROM tasks WHERE {' AND '.join(where)}",  # noqa: S608
            params,
        ).fetchone()
        return int(row[0])

    async def add_confirmation(
        self,
        token_sha256: str,
        *,
        fingerprint: str,
        cost_micro_usd: int,
        expires_at: float,
        tenant: str = LOCAL_TENANT,
    ) -> None:
        """Remember a confirm token (by digest) for ``tenant``'s request with ``fingerprint``; purge old ones."""

        def add(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute("DELETE FROM confirmations WHERE expires_at < ?", (now - 86_400,))
            conn.execute(
                "INSERT INTO confirmations (token_sha256, fingerprint, cost_micro_usd, created_at, expires_at, tenant) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_sha256, fingerprint, cost_micro_usd, now, expires_at, tenant),
            )

        await self._transaction(add, durable=False)

    @staticmethod
    def _check_token(
        conn: sqlite3.Connection, digest: str, fingerprint: str, tenant: str, now: float
    ) -> TokenRefused | None:
        row = conn.execute(
            "SELECT fingerprint, expires_at, used_at FROM confirmations WHERE token_sha256 = ? AND tenant = ?",
            (digest, tenant),
        ).fetchone()
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
        """A joined film, made here: a completed row of its own (mode ``film``, no upstream task).

        ``film_id`` is both its business id and its task id, so every lookup finds it; it costs
        nothing and is never polled (it is terminal from the start).
        """
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

        def insert(conn: sqlite3.Connection) -> TaskRecord:
            now = self._clock()
            cur = conn.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, 'join', ?, 'completed', 100, "  # noqa: S608
                "?, '', ?, ?, NULL, NULL, NULL, NULL, ?, ?, ?, 0, '', NULL, ?, 0)",
                (film_id, film_id, FILM_MODE, body, now, now, local_path, sha256, size_bytes, tenant),
            )
            assert cur.lastrowid is not None
            return self._reload(conn, cur.lastrowid)

        return await self._transaction(insert, durable=True)

    # --- uploads ------------------------------------------------------------------

    async def get_upload(self, sha256: str, kind: str, *, tenant: str = LOCAL_TENANT) -> UploadRecord | None:
        def work(conn: sqlite3.Connection) -> UploadRecord | None:
            row = conn.execute(
                "SELECT sha256, kind, url, mime_type, size_bytes, width, height, created_at, changes, tenant "
                "FROM uploads WHERE tenant = ? AND sha256 = ? AND kind = ?",
                (tenant, sha256, kind),
            ).fetchone()
            return None if row is None else upload_from_row(row)

        return await self._call(work)

    async def put_upload(self, rec: UploadRecord) -> None:
        """Insert or replace: the newest upload of the same bytes is the one whose URL is freshest."""
        changes = json.dumps(list(rec.changes), ensure_ascii=False)

        def work(conn: sqlite3.Connection) -> None:
            def put() -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO uploads "
                    "(sha256, kind, url, mime_type, size_bytes, width, height, created_at, changes, tenant) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rec.sha256,
                        rec.kind,
                        rec.url,
                        rec.mime_type,
                        rec.size_bytes,
                        rec.width,
                        rec.height,
                        rec.created_at,
                        changes,
                        rec.tenant,
                    ),
                )

            self._write(conn, put, durable=False)

        await self._call(work)

    # --- downloads ----------------------------------------------------------------

    async def record_download(
        self, id_or_business_id: str, *, local_path: str, sha256: str, size_bytes: int
    ) -> TaskRecord:
        """Remember where the result file is, so later calls answer from disk, not the network."""

        def record(conn: sqlite3.Connection) -> TaskRecord:
            row = self._require_task(conn, id_or_business_id)
            rid = int(row["rid"])
            self._set(
                conn,
                rid,
                {
                    "local_path": local_path,
                    "sha256": sha256,
                    "size_bytes": size_bytes,
                    "updated_at": self._clock(),
                },
            )
            return self._reload(conn, rid)

        return await self._transaction(record, durable=False)

    async def claim_download(
        self, task_id: str, owner: str, ttl_seconds: float, *, holder_gone: Callable[[str], bool] | None = None
    ) -> bool:
        """Take (or renew) the lease to download ``task_id``'s file; False if someone else holds it.

        A lease, not a lock, because the holder may die mid-download: once ``ttl_seconds``
        pass without renewal, another process may take over. The holder renews by claiming
        again with the same ``owner``. After a successful claim, re-read the task: the
        previous holder may have finished (``local_path`` set) just before releasing.

        ``holder_gone(owner)`` may say that the current holder is provably dead (e.g. its
        process no longer exists), so a restart after a kill -9 takes the lease over at
        once instead of waiting out the TTL. It runs inside the write transaction, so two
        restarted processes cannot both take over.
        """
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")

        def claim(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            row = conn.execute("SELECT owner, expires_at FROM download_leases WHERE task_id = ?", (task_id,)).fetchone()
            if (
                row is not None
                and row["owner"] != owner
                and row["expires_at"] > now
                and (holder_gone is None or not holder_gone(str(row["owner"])))
            ):
                return False
            acquired = now if row is None or row["owner"] != owner else None
            conn.execute(
                "INSERT INTO download_leases (task_id, owner, acquired_at, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at, acquired_at = COALESCE(?, acquired_at)",
                (task_id, owner, now, now + ttl_seconds, acquired),
            )
            return True

        return await self._transaction(claim, durable=False)

    async def release_download(self, task_id: str, owner: str) -> None:
        """Drop the lease if we still hold it; a lease taken over by someone else is left alone."""

        def work(conn: sqlite3.Connection) -> None:
            def release() -> None:
                conn.execute("DELETE FROM download_leases WHERE task_id = ? AND owner = ?", (task_id, owner))

            self._write(conn, release, durable=False)

        await self._call(work)

    async def take_rate_slot(self, name: str, spacing: float) -> float:
        def take(conn: sqlite3.Connection) -> float:
            now = self._clock()
            row = conn.execute("SELECT next_at FROM rate_slots WHERE name = ?", (name,)).fetchone()
            slot, following = rate_slot(None if row is None else float(row["next_at"]), now, spacing)
            conn.execute(
                "INSERT INTO rate_slots (name, next_at) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at",
                (name, following),
            )
            return slot - now

        return await self._transaction(take, durable=False)

    async def server_key(self, name: str) -> bytes:
        def make(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT INTO server_keys (name, key, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_bytes(32), self._clock()),
            )
            row = conn.execute("SELECT key FROM server_keys WHERE name = ?", (name,)).fetchone()
            return bytes(row["key"])

        return await self._transaction(make, durable=True)

    async def listen(self, on_change: Callable[[str], None]) -> None:
        """No feed: SQLite has no notifications between processes (readers re-read the row)."""
        return

    # --- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection (idempotent). Every committed write is already on disk."""

        def work() -> None:
            with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    try:
                        # Fold the WAL back into the main file so a copied/backed-up .sqlite3
                        # is complete on its own; harmless if another process still reads it.
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        pass
                    finally:
                        conn.close()

        await offload.run_sync(work, limiter=self._limiter)

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
