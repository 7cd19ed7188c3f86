"""Shared fixtures: the anyio backend, and isolation from the developer's own settings."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.journal_stores import BACKENDS, Store
from tests.pg import PostgresServer
from wan_mcp.core.journal import TaskJournal

# The suite gates every submission, so property tests are derandomized: the same examples
# every run (a new bug then fails every run, never one run in five). Explore beyond them with
# HYPOTHESIS_PROFILE=explore, and add what that finds as an @example.
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's WAN_MCP_* env or config file."""
    for name in list(os.environ):
        if name.startswith("WAN_MCP_"):
            monkeypatch.delenv(name, raising=False)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per CPU.

    Most of the suite waits (on server subprocesses, simulated jobs, real stalls), so two
    workers per core keep the cores busy without oversubscribing them: no test depends on
    scheduling any more (timing rules run on a virtual clock), and on CI's 2 cores this is 4.
    """
    return 2 * (os.cpu_count() or 1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL per test worker, started on first use; skipped (with the reason) if not installed."""
    try:
        server = PostgresServer()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    with server:
        yield server


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty journal storage on each backend (the journal contract runs on both)."""
    if request.param == "sqlite":
        return Store("sqlite", str(tmp_path / "data" / "journal.sqlite3"))
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Store("postgres", server.schema_url())


@pytest.fixture
async def journal(store: Store) -> AsyncIterator[TaskJournal]:
    """An open journal on each backend: a test taking it is part of the journal contract."""
    j = await store.open()
    try:
        yield j
    finally:
        await j.close()
