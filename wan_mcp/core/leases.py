"""The cross-process download lease: one server process fetches a task's file, the others wait.

Why: two host windows (or a restarted server and the one it replaced) share one data dir and
may both see a task complete; the file must be fetched once. The lease lives in the journal
(so every process sharing it sees it), names its holder as ``host:pid:nonce`` so a lease left
by a killed process is taken over at once instead of after its expiry, and is renewed by
claiming again.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from wan_mcp.core.clock import SYSTEM_CLOCK, Clock
from wan_mcp.core.journal import TaskJournal, TaskRecord

__all__ = ["DownloadLeases", "holder_gone", "lease_owner"]

#: How long a lease holds without renewal (a download of a large file fits easily).
LEASE_SECONDS = 600.0
#: How long a process waits for another one's download before fetching the file itself.
WAIT_FOR_OTHER_SECONDS = 60.0
#: How often a waiting process looks at the journal (another process has no way to wake it).
RECHECK_SECONDS = 0.5

_HOST = socket.gethostname()


def lease_owner() -> str:
    """A lease holder's name: ``host:pid:nonce`` (what :func:`holder_gone` can check)."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_gone(owner: str) -> bool:
    """Whether the download lease ``owner`` (``host:pid:nonce``) is provably dead.

    A server killed mid-download (kill -9, a host closing its window) leaves its lease in
    the shared journal; without this a restarted server waited a minute before fetching
    the file itself. Only a process on this host that no longer exists (or is a zombie)
    counts as gone; anything we cannot check (another host, an unreadable owner, our own
    process) is treated as alive and left to the lease's expiry.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, under another user
        return False
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]


class DownloadLeases:
    """This process's side of the download lease for every task."""

    def __init__(self, journal: TaskJournal, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._journal = journal
        self._clock = clock
        self.owner = lease_owner()

    async def claim(self, task_id: str) -> bool:
        """Take (or renew) the lease; False while a live process holds it."""
        return await self._journal.claim_download(task_id, self.owner, LEASE_SECONDS, holder_gone=holder_gone)

    async def release(self, task_id: str) -> None:
        await self._journal.release_download(task_id, self.owner)

    async def wait_for_other(self, task_id: str) -> TaskRecord | None:
        """Wait for the holder's result: the saved record, or None once the lease is ours (or we gave up)."""
        with self._clock.move_on_after(WAIT_FOR_OTHER_SECONDS):
            while True:
                await self._clock.sleep(RECHECK_SECONDS)
                fresh = await self._journal.get(task_id)
                if fresh is not None and fresh.local_path:
                    return fresh
                if await self.claim(task_id):
                    return None
        return None
