"""The SQLite file: its schema and migrations, how it is opened, and what its errors mean."""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Final

from wan_mcp.errors import ErrorCode, WanError

_APPLICATION_ID: Final = 0x57414E4D  # "WANM": tells our file apart from any other SQLite database

# One table for submissions and tasks, keyed by OUR business id: the row exists before the
# gateway has named the task, and a separate tasks table would need a two-table transaction
# (and a join for every list) for what is a 1:1 relation. task_id is unique where present.
# Each migration runs in one IMMEDIATE transaction together with the user_version bump, so
# two processes starting at once cannot both apply it. Append only; never edit a shipped one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"PRAGMA application_id = {_APPLICATION_ID}",
        """
        CREATE TABLE tasks (
            business_id   TEXT PRIMARY KEY,
            task_id       TEXT,
            model         TEXT NOT NULL,
            mode          TEXT NOT NULL,
            status        TEXT NOT NULL CHECK (status IN ('submitting', 'unconfirmed', 'rejected',
                                                          'queued', 'in_progress', 'completed', 'failed')),
            progress      INTEGER,
            payload       TEXT NOT NULL,
            fingerprint   TEXT NOT NULL,
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            video_url     TEXT,
            expires_at    INTEGER,
            error_code    TEXT,
            error_message TEXT,
            local_path    TEXT,
            sha256        TEXT,
            size_bytes    INTEGER
        )
        """,
        "CREATE UNIQUE INDEX tasks_task_id ON tasks (task_id) WHERE task_id IS NOT NULL",
        "CREATE INDEX tasks_created ON tasks (created_at)",
        "CREATE INDEX tasks_status_created ON tasks (status, created_at)",
        "CREATE INDEX tasks_fingerprint ON tasks (fingerprint, created_at)",
        """
        CREATE TABLE uploads (
            sha256     TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('image', 'video')),
            url        TEXT NOT NULL,
            mime_type  TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            width      INTEGER,
            height     INTEGER,
            created_at REAL NOT NULL,
            changes    TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (sha256, kind)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE download_leases (
            task_id     TEXT PRIMARY KEY,
            owner       TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at  REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 2: spending. Each task row carries the spend reserved for it (integer micro-USD, so sums
    # are exact) and who spent it; confirm tokens are stored as digests, single-use.
    (
        "ALTER TABLE tasks ADD COLUMN cost_micro_usd INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN spender TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX tasks_spender ON tasks (spender, created_at)",
        """
        CREATE TABLE confirmations (
            token_sha256   TEXT PRIMARY KEY,
            fingerprint    TEXT NOT NULL,
            cost_micro_usd INTEGER NOT NULL,
            created_at     REAL NOT NULL,
            expires_at     REAL NOT NULL,
            used_at        REAL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX confirmations_expiry ON confirmations (expires_at)",
    ),
    # 3: films. A shot made with continue_from names the task it continues; a joined film is a row
    # of its own (mode 'film', its parts in payload) so list_tasks and get_task_status show it.
    ("ALTER TABLE tasks ADD COLUMN continues TEXT",),
    # 4: tenants. Every row belongs to one principal (stdio's one user, and every older row, is
    # 'local'); own_key marks a task made with the tenant's own gateway key. An upload is reused
    # only by the tenant that sent it, and a confirm token answers only the tenant it was given to.
    (
        "ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local'",
        "ALTER TABLE tasks ADD COLUMN own_key INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at)",
        "ALTER TABLE confirmations ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local'",
        """
        CREATE TABLE uploads_by_tenant (
            tenant     TEXT NOT NULL,
            sha256     TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('image', 'video')),
            url        TEXT NOT NULL,
            mime_type  TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            width      INTEGER,
            height     INTEGER,
            created_at REAL NOT NULL,
            changes    TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (tenant, sha256, kind)
        ) WITHOUT ROWID
        """,
        "INSERT INTO uploads_by_tenant SELECT 'local', sha256, kind, url, mime_type, size_bytes, width, height, "
        "created_at, changes FROM uploads",
        "DROP TABLE uploads",
        "ALTER TABLE uploads_by_tenant RENAME TO uploads",
    ),
    # 5: shared by every process on the journal: the next free slot of each upstream rate budget,
    # and the key that signs download links (made once, so every replica checks every link).
    (
        """
        CREATE TABLE rate_slots (
            name    TEXT PRIMARY KEY,
            next_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE server_keys (
            name       TEXT PRIMARY KEY,
            key        BLOB NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)

#: The schema version this code writes; a file with a higher ``user_version`` is refused.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_TASK_COLUMNS: Final = (
    "business_id, task_id, model, mode, status, progress, payload, fingerprint, created_at, updated_at, "
    "video_url, expires_at, error_code, error_message, local_path, sha256, size_bytes, cost_micro_usd, spender, "
    "continues, tenant, own_key"
)


def _list_sql(*, by_status: bool, paged: bool, by_tenant: bool = False) -> str:
    """The SQL behind :meth:`SqliteJournal.list`; a function so a test can EXPLAIN exactly it.

    ``ORDER BY created_at DESC, rowid DESC`` is satisfied by walking ``tasks_created`` (or
    ``tasks_status_created``) backwards, as an index entry ends with the rowid: no sort step,
    so the cost is O(limit) however long the journal grows.
    """
    where: builtins.list[str] = []
    if by_tenant:
        where.append("tenant = :tenant")
    if by_status:
        where.append("status = :status")
    if paged:
        where.append("created_at < :before")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_TASK_COLUMNS} FROM tasks{clause} ORDER BY created_at DESC, rowid DESC LIMIT :limit"  # noqa: S608


_HINT_CORRUPT = (
    "the file is corrupt: move it aside (e.g. rename it to '{name}.corrupt') and restart wan-mcp, which "
    "starts a fresh journal; tasks already submitted can be recovered by id from the gateway "
    "with get_task_status"
)
_HINT_LOCKED = (
    "another process holds a lock on the journal (probably a second wan-mcp using the same data dir); "
    "retry in a moment, or give each server its own WAN_MCP_DATA_DIR"
)
_HINT_UNWRITABLE = (
    "check that the directory exists and is writable by this user and the disk is not full, "
    "or set WAN_MCP_DATA_DIR to a writable directory"
)


def _translate(exc: sqlite3.Error, path: Path, busy_timeout: float) -> WanError:
    """Turn a sqlite3 failure into the one error type, with the file and the fix in it."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    detail = str(exc)
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        primary is None and ("not a database" in detail or "malformed" in detail)
    ):
        return WanError(
            ErrorCode.JOURNAL,
            f"the task journal {path} is corrupt or not a SQLite database ({detail})",
            hint=_HINT_CORRUPT.format(name=path.name),
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or (primary is None and "locked" in detail):
        return WanError(
            ErrorCode.JOURNAL,
            f"the task journal {path} stayed locked for more than {busy_timeout:g}s ({detail})",
            hint=_HINT_LOCKED,
        )
    if primary in (
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_AUTH,
    ):
        return WanError(ErrorCode.JOURNAL, f"cannot write the task journal {path} ({detail})", hint=_HINT_UNWRITABLE)
    return WanError(
        ErrorCode.JOURNAL,
        f"the task journal {path} failed: {detail}",
        hint=f"restart wan-mcp; if this repeats, {_HINT_CORRUPT.format(name=path.name)}",
    )


def _secure_file(path: Path) -> None:
    """Create the DB file 0600 before SQLite does: it holds every prompt the user wrote.

    SQLite gives the -wal/-shm files the main file's mode, so securing this one suffices;
    an existing file with looser permissions (older version, copied in) is tightened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.name == "posix" and stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open, configure and migrate; blocking, so it runs on a worker thread."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _secure_file(path)
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # used from anyio worker threads, serialised by our lock
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # The first statement that reads the file: garbage bytes fail here as NOTADB.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise WanError(
                ErrorCode.JOURNAL,
                f"the task journal {path} cannot use write-ahead logging (journal_mode={mode})",
                hint="put WAN_MCP_DATA_DIR on a local disk (network file systems cannot share WAL journals)",
            )
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_identity(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse a file from a newer wan-mcp or from another application before touching it."""
    if version > SCHEMA_VERSION:
        raise WanError(
            ErrorCode.JOURNAL,
            f"the task journal {path} has schema version {version}, newer than this wan-mcp understands "
            f"({SCHEMA_VERSION})",
            hint="upgrade wan-mcp, or set WAN_MCP_DATA_DIR to another directory; do not delete the file, "
            "it lists tasks that were paid for",
        )
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    foreign = app_id not in (0, _APPLICATION_ID)
    if not foreign and version == 0:
        # An un-migrated file must be empty; tables in it mean someone else's database.
        foreign = conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None
    if foreign:
        raise WanError(
            ErrorCode.JOURNAL,
            f"{path} is a SQLite database but not a wan-mcp task journal",
            hint="point WAN_MCP_DATA_DIR at a directory of its own; wan-mcp will not modify this file",
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply pending migrations, each atomically with its ``user_version`` bump.

    Runs on every open, also for an up-to-date file: the IMMEDIATE transaction is what
    makes the version/identity check race-free against a second process starting.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read under the write lock: another process may be migrating at the same moment,
            # and identity checks must see one consistent snapshot.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            _check_identity(conn, path, version)
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
            raise
