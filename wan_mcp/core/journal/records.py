"""What the journal stores, and the rules by which a row may change: pure, no I/O.

:func:`merge` is the whole of "status never goes back": every backend applies it to fold an
observation into a row, and the tracker uses it to tell news from a repeat, so the rules
cannot differ between the two (nor between SQLite and a second backend).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, cast, get_args

from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.gateway.wire import unix_seconds

__all__ = [
    "ACTIVE",
    "DUPLICATE_BLIND",
    "FILM_MODE",
    "LOCAL_TENANT",
    "RATE_SLOT_HORIZON",
    "STATUSES",
    "STATUS_ORDER",
    "TERMINAL",
    "UNSETTLED",
    "Duplicate",
    "Observation",
    "OverBudget",
    "Reservation",
    "Reserved",
    "RowLike",
    "SpendLimit",
    "Submission",
    "TaskRecord",
    "TaskStatus",
    "TokenRefused",
    "UploadKind",
    "UploadRecord",
    "attach_changes",
    "check_list_status",
    "check_status",
    "expiry_seconds",
    "merge",
    "rate_slot",
    "task_from_row",
    "token_refusal",
    "upload_from_row",
]

TaskStatus = Literal["submitting", "unconfirmed", "rejected", "queued", "in_progress", "completed", "failed"]
UploadKind = Literal["image", "video"]

#: Every status, in lifecycle order (the one list: list_tasks' schema and errors use it).
STATUS_ORDER: Final[tuple[str, ...]] = get_args(TaskStatus)
STATUSES: Final[frozenset[str]] = frozenset(STATUS_ORDER)
#: No further change is expected upstream; a row in one of these never leaves it.
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "rejected"})
#: The POST outcome is not known yet: reconcile these by business id at start-up.
UNSETTLED: Final[frozenset[str]] = frozenset({"submitting", "unconfirmed"})
#: A task exists upstream and is still running: the tracker resumes polling these.
ACTIVE: Final[frozenset[str]] = frozenset({"queued", "in_progress"})

#: The one principal of a stdio server (and of every row written before tenants existed).
LOCAL_TENANT: Final = "local"

#: A shared rate budget never books a slot further ahead than this: a replica whose clock once ran
#: far ahead cannot stall every other replica's requests for longer.
RATE_SLOT_HORIZON: Final = 60.0

#: The ``mode`` of a joined film's row (its parts are in ``payload["parts"]``; nothing upstream).
FILM_MODE: Final = "film"
#: A duplicate of one of these is no duplicate: nothing was made (rejected) or it failed, so the
#: same request again is a fresh attempt.
DUPLICATE_BLIND: Final[frozenset[str]] = frozenset({"rejected", "failed"})

# Status only moves forward. A stale poll (another replica, a lagging gateway cache) must
# not turn "in_progress" back into "queued", and nothing leaves a terminal state.
RANK: Final[Mapping[str, int]] = {
    "submitting": 0,
    "unconfirmed": 0,
    "queued": 1,
    "in_progress": 2,
    "completed": 3,
    "failed": 3,
    "rejected": 3,
}


@dataclass(frozen=True)
class TaskRecord:
    """One submission and, once the gateway answered, its task: everything an agent may ask later."""

    business_id: str
    task_id: str | None
    model: str
    mode: str
    status: TaskStatus
    progress: int | None
    payload: dict[str, Any]  # the exact wire body sent (it contains no secrets)
    fingerprint: str  # hash of the canonical request, for duplicate detection
    created_at: float  # unix seconds
    updated_at: float  # unix seconds
    video_url: str | None
    expires_at: int | None
    error_code: str | None
    error_message: str | None
    local_path: str | None
    sha256: str | None
    size_bytes: int | None
    #: The spend reserved for this job in micro-USD (0 for tasks imported from elsewhere).
    cost_micro_usd: int = 0
    #: Who spent it: the server process's session id (the session budget counts these).
    spender: str = ""
    #: The task whose last frame this shot starts from (generate_video's continue_from).
    continues: str | None = None
    #: The principal that owns the row: nobody else sees it, waits on it or is told it exists.
    tenant: str = LOCAL_TENANT
    #: Created with the tenant's own gateway key: polled only while that key is in memory.
    own_key: bool = False

    @property
    def id(self) -> str:
        """The id an agent should use: the gateway's once known, else ours (still resolvable)."""
        return self.task_id or self.business_id

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class UploadRecord:
    """A file already uploaded, keyed by content hash so the same bytes are never paid for twice."""

    sha256: str
    kind: UploadKind
    url: str
    mime_type: str
    size_bytes: int
    width: int | None
    height: int | None
    created_at: float
    changes: tuple[str, ...]  # what we did to the file before uploading (e.g. "converted HEIC to JPEG")
    #: Who uploaded it: the cache answers only that tenant (another learns nothing of its files).
    tenant: str = LOCAL_TENANT


@dataclass(frozen=True)
class Observation:
    """One sighting of a task's state (a poll, a reconcile, a create answer). ``None`` = no news."""

    status: TaskStatus
    progress: int | None = None
    video_url: str | None = None
    expires_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None


_NEWS_FIELDS: Final = ("video_url", "expires_at", "error_code", "error_message")


def merge(row: TaskRecord, news: Observation) -> dict[str, Any]:
    """The field changes ``news`` makes to ``row`` under the monotonic rules; ``{}`` = stale or repeated.

    Observations arrive out of order (several waiters, replicas, retried polls), so a row
    only moves forward: the status never goes back and a terminal one never changes (nor
    takes a contradicting story); progress never decreases; ``None`` means "no news", never
    "erase" (a completed row keeps its URL). A repeated terminal observation may fill or
    refresh non-empty fields (e.g. a re-signed URL with a later expiry). Reaching
    ``completed`` clears an error noted on the way (e.g. an unconfirmed create).
    """
    current = row.status
    changes: dict[str, Any] = {}
    if current in TERMINAL and news.status != current:
        return changes
    moves_forward = RANK[news.status] >= RANK[current]
    if current not in TERMINAL and moves_forward and news.status != current:
        changes["status"] = news.status
        if news.status == "completed":
            changes.update(error_code=None, error_message=None)
    if news.progress is not None and (row.progress is None or news.progress > row.progress):
        changes["progress"] = news.progress
    if moves_forward:
        for name in _NEWS_FIELDS:
            value = getattr(news, name)
            if value is not None and value != getattr(row, name):
                changes[name] = value
    return changes


class RowLike(Protocol):
    """A stored row read by column name (``sqlite3.Row``, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


def task_from_row(row: RowLike) -> TaskRecord:
    """A ``tasks`` row as every backend stores it (payload as JSON text) -> :class:`TaskRecord`."""
    return TaskRecord(
        business_id=row["business_id"],
        task_id=row["task_id"],
        model=row["model"],
        mode=row["mode"],
        status=cast(TaskStatus, row["status"]),
        progress=row["progress"],
        payload=json.loads(row["payload"]),
        fingerprint=row["fingerprint"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        video_url=row["video_url"],
        expires_at=expiry_seconds(row["expires_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        local_path=row["local_path"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        cost_micro_usd=int(row["cost_micro_usd"] or 0),
        spender=row["spender"] or "",
        continues=row["continues"],
        tenant=row["tenant"],
        own_key=bool(row["own_key"]),
    )


def upload_from_row(row: RowLike) -> UploadRecord:
    return UploadRecord(
        sha256=row["sha256"],
        kind=cast(UploadKind, row["kind"]),
        url=row["url"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        created_at=row["created_at"],
        changes=tuple(json.loads(row["changes"])),
        tenant=row["tenant"],
    )


def attach_changes(row: TaskRecord, status: TaskStatus, progress: int | None) -> dict[str, Any]:
    """The fields attaching the gateway's task id changes (besides the id itself).

    An unsettled or ``rejected`` row is settled now: a task id is proof the gateway accepted
    the job, so the earlier "unconfirmed"/"rejected" diagnosis no longer applies (a paid job
    must never stay hidden behind a wrong "nothing was billed"). Otherwise :func:`merge`.
    """
    if row.status in UNSETTLED or row.status == "rejected":
        return {
            "status": status,
            "error_code": None,
            "error_message": None,
            "progress": progress if progress is not None else row.progress,
        }
    return merge(row, Observation(status=status, progress=progress))


def expiry_seconds(value: object) -> int | None:
    """A stored URL expiry as whole unix seconds, normalised on read by every backend: an older build
    stored microseconds (read as the year 57877) and every view of such a task failed; the row heals."""
    seconds = unix_seconds(value)
    return None if seconds is None else int(seconds)


def check_list_status(status: str | None) -> None:
    """Refuse a status filter that names no status: the agent's input, answered with the allowed values."""
    if status is not None and status not in STATUSES:
        raise WanError(
            ErrorCode.INVALID_REQUEST,
            f"{status!r} is not a task status",
            field="status",
            allowed=list(STATUS_ORDER),
            hint="omit status to list every task",
        )


def check_status(status: str) -> None:
    """Refuse an unknown status before it reaches storage (a typo would write a broken row)."""
    if status not in STATUSES:
        raise ValueError(f"unknown task status {status!r}; allowed: {sorted(STATUSES)}")


# --- spending: what a reservation is asked and what it answers -----------------------------------


@dataclass(frozen=True)
class Submission:
    """A paid request about to be POSTed: the row :meth:`TaskJournal.reserve` writes."""

    business_id: str
    model: str
    mode: str
    payload: dict[str, Any]
    fingerprint: str
    cost_micro_usd: int
    spender: str
    continues: str | None = None
    tenant: str = LOCAL_TENANT
    own_key: bool = False


@dataclass(frozen=True)
class SpendLimit:
    """A budget: at most ``limit_micro`` over the rows created since ``since`` (if set) by
    ``spender`` (if set). Every status but ``rejected`` counts: only a create the gateway
    provably refused is released; an unconfirmed one stays spent until reconciled."""

    name: Literal["daily", "session"]
    limit_micro: int
    since: float | None
    spender: str | None
    #: Only this tenant's rows count (``None``: every row; the stdio server's one user).
    tenant: str | None = None


@dataclass(frozen=True)
class Reserved:
    record: TaskRecord


@dataclass(frozen=True)
class Duplicate:
    """An identical request inside the window already exists: no new row, no new spend."""

    record: TaskRecord


@dataclass(frozen=True)
class OverBudget:
    limit: SpendLimit
    spent_micro: int


@dataclass(frozen=True)
class TokenRefused:
    reason: Literal["unknown", "expired", "used", "other_request"]


Reservation = Reserved | Duplicate | OverBudget | TokenRefused


def token_refusal(row: RowLike | None, fingerprint: str, now: float) -> TokenRefused | None:
    """Why a confirm token (its stored ``confirmations`` row, or None) cannot pay for this request.

    Another tenant's token is looked up as absent, so it is as unknown as a forged one.
    """
    if row is None:
        return TokenRefused("unknown")
    if row["used_at"] is not None:
        return TokenRefused("used")
    if row["fingerprint"] != fingerprint:
        return TokenRefused("other_request")
    if row["expires_at"] <= now:
        return TokenRefused("expired")
    return None


def rate_slot(next_at: float | None, now: float, spacing: float) -> tuple[float, float]:
    """The slot a caller of a shared rate budget gets, and the next free one after it.

    ``next_at`` is the stored next free slot (``None``: the budget was never used). Slots are
    ``spacing`` apart, never in the past, and at most :data:`RATE_SLOT_HORIZON` ahead.
    """
    if spacing <= 0:
        raise ValueError("spacing must be positive")
    slot = now if next_at is None else min(max(next_at, now), now + RATE_SLOT_HORIZON)
    return slot, slot + spacing
