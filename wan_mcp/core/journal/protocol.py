"""The journal's contract: what every backend guarantees, method by method.

SQLite (:mod:`.sqlite`) is the embedded default and the reference semantics; a backend for
several replicas (PostgreSQL) implements the same protocol and must pass the same contract
tests. Common to all: a write is durable when the call returns; rows change only through
:func:`~wan_mcp.core.journal.records.merge` (status never goes back, a terminal row never
changes status, progress never decreases, a completed row keeps its URL); ids may be the
gateway's task id or our business id.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from wan_mcp.core.journal.records import (
    LOCAL_TENANT,
    Observation,
    Reservation,
    SpendLimit,
    Submission,
    TaskRecord,
    TaskStatus,
    UploadRecord,
)

__all__ = ["TaskJournal"]


class TaskJournal(Protocol):
    """What the service and tracker need from durable state."""

    async def record_submission(
        self,
        *,
        business_id: str,
        model: str,
        mode: str,
        payload: dict[str, Any],
        fingerprint: str,
        tenant: str = LOCAL_TENANT,
    ) -> TaskRecord: ...

    async def attach_task(
        self, business_id: str, *, task_id: str, status: TaskStatus, progress: int | None = None
    ) -> TaskRecord: ...

    async def mark_unconfirmed(self, business_id: str, *, error_code: str, error_message: str) -> TaskRecord: ...

    async def mark_rejected(self, business_id: str, *, error_code: str, error_message: str) -> TaskRecord: ...

    async def observe(self, id_or_business_id: str, news: Observation) -> TaskRecord:
        """Fold ``news`` into the row with ``merge()`` atomically; return the row as now stored."""
        ...

    async def get(self, id_or_business_id: str, *, tenant: str | None = None) -> TaskRecord | None:
        """The row, or ``None``; with ``tenant``, a row owned by another tenant is ``None`` too."""
        ...

    async def list(
        self, *, status: str | None = None, limit: int = 20, before: float | None = None, tenant: str | None = None
    ) -> builtins.list[TaskRecord]: ...

    async def unsettled(self) -> builtins.list[TaskRecord]: ...

    async def active(self) -> builtins.list[TaskRecord]: ...

    async def find_recent_duplicate(
        self, fingerprint: str, within_seconds: float, *, tenant: str = LOCAL_TENANT
    ) -> TaskRecord | None:
        """``tenant``'s newest row with ``fingerprint`` inside the window, ignoring rejected and failed ones."""
        ...

    async def reserve(
        self,
        sub: Submission,
        *,
        limits: Sequence[SpendLimit],
        dedupe_within: float,
        confirm_token_sha256: str | None = None,
    ) -> Reservation:
        """In ONE atomic step: a duplicate (of ``sub.tenant``'s own rows) inside the window is returned
        (nothing written); else a given confirm token must be that tenant's, unused, unexpired and
        for this fingerprint; else every
        limit must hold with this cost added; then the token is marked used and the
        ``submitting`` row (holding the cost) is written durably. Concurrent callers, in any
        process sharing the journal, are serialised: no budget is ever exceeded, one row per
        request, one use per token."""
        ...

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
        """Write a joined film as a completed row of its own (``film_id`` is its business and task id)."""
        ...

    async def spent(self, limits: Sequence[SpendLimit]) -> builtins.list[int]:
        """Micro-USD counted against each limit (every status but ``rejected``; a limit's tenant only)."""
        ...

    async def add_confirmation(
        self,
        token_sha256: str,
        *,
        fingerprint: str,
        cost_micro_usd: int,
        expires_at: float,
        tenant: str = LOCAL_TENANT,
    ) -> None: ...

    async def get_upload(self, sha256: str, kind: str, *, tenant: str = LOCAL_TENANT) -> UploadRecord | None:
        """``tenant``'s upload of these bytes: another tenant's upload of the same file is not found."""
        ...

    async def put_upload(self, rec: UploadRecord) -> None: ...

    async def record_download(
        self, id_or_business_id: str, *, local_path: str, sha256: str, size_bytes: int
    ) -> TaskRecord: ...

    async def claim_download(
        self, task_id: str, owner: str, ttl_seconds: float, *, holder_gone: Callable[[str], bool] | None = None
    ) -> bool: ...

    async def release_download(self, task_id: str, owner: str) -> None: ...

    async def take_rate_slot(self, name: str, spacing: float) -> float:
        """Book the next slot of the rate budget ``name`` shared by every process on this journal
        (one request every ``spacing`` seconds in all, see :func:`~.records.rate_slot`); return the
        seconds until it (0 when it is now). Concurrent callers get distinct slots."""
        ...

    async def server_key(self, name: str) -> bytes:
        """A random 32-byte secret made the first time ``name`` is asked for, then the same for every
        process on this journal (replicas check each other's signed links with it)."""
        ...

    async def listen(self, on_change: Callable[[str], None]) -> None:
        """Call ``on_change(id)`` (the business id, and the task id once known) whenever any process
        changes a task row, until cancelled; reconnects by itself after a failure. A backend with no
        change feed returns at once: its readers find changes by reading the row."""
        ...

    async def close(self) -> None: ...
