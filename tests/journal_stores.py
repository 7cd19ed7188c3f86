"""The journal backends the contract tests run against: the same tests, each backend a parameter.

A :class:`Store` is one journal's storage (a SQLite file, or a fresh PostgreSQL schema); its
``open()`` connects another journal to the same storage, which is how the tests stand for two
server processes (or two replicas) sharing one journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wan_mcp.core.journal import SqliteJournal, TaskJournal

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class Store:
    kind: Literal["sqlite", "postgres"]
    target: str  # the SQLite file, or a PostgreSQL URL whose search_path is the test's own schema

    async def open(self, *, clock: Callable[[], float] | None = None) -> TaskJournal:
        if self.kind == "sqlite":
            if clock is None:
                return await SqliteJournal.open(Path(self.target))
            return await SqliteJournal.open(Path(self.target), clock=clock)
        from wan_mcp.core.journal.postgres import PostgresJournal

        return await PostgresJournal.open(self.target, clock=clock)
