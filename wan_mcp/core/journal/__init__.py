"""The durable task journal: the product's memory of every paid job.

Why it exists: a video costs money the moment the gateway accepts a create call, and an MCP
host may kill us at any instant. So the journal is written *around* the POST: a
``submitting`` row before the request leaves, the gateway's task id before the agent hears of
it (invariant 3), and after a crash the unanswered submissions are reconciled by business id,
never re-POSTed (invariant 2).

Split by concern: :mod:`.records` (the rows and :func:`merge`, the pure rules by which a row
may change), :mod:`.protocol` (the contract every backend honours), :mod:`.sqlite` (the
embedded backend) and :mod:`.schema` (its file, migrations and error wording). Import from here.
"""

from wan_mcp.core.journal.protocol import TaskJournal
from wan_mcp.core.journal.records import (
    ACTIVE,
    DUPLICATE_BLIND,
    FILM_MODE,
    LOCAL_TENANT,
    STATUS_ORDER,
    STATUSES,
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
    UploadKind,
    UploadRecord,
    check_list_status,
    merge,
)
from wan_mcp.core.journal.schema import SCHEMA_VERSION
from wan_mcp.core.journal.sqlite import SqliteJournal

__all__ = [
    "ACTIVE",
    "DUPLICATE_BLIND",
    "FILM_MODE",
    "LOCAL_TENANT",
    "SCHEMA_VERSION",
    "STATUSES",
    "STATUS_ORDER",
    "TERMINAL",
    "UNSETTLED",
    "Duplicate",
    "Observation",
    "OverBudget",
    "Reservation",
    "Reserved",
    "SpendLimit",
    "SqliteJournal",
    "Submission",
    "TaskJournal",
    "TaskRecord",
    "TaskStatus",
    "TokenRefused",
    "UploadKind",
    "UploadRecord",
    "check_list_status",
    "merge",
]
