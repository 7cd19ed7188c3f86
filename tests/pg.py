"""A real PostgreSQL server on loopback for the tests, from the distribution's packages.

Started once per test worker (``initdb`` into a fresh folder, ``pg_ctl start`` on a free
port, unix socket in that folder), stopped at the end. PostgreSQL refuses to run as root, and
CI runs as root: then the cluster is made and run as the ``postgres`` system user (the one
the package creates) through ``runuser``. When no server binaries are installed the PostgreSQL
tests skip, with a reason that names the package to install (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

MISSING = (
    "PostgreSQL server binaries not found (initdb/pg_ctl): install the distribution's package "
    "(Debian: apt-get install postgresql) to run the PostgreSQL journal tests"
)


def _bindir() -> Path | None:
    for candidate in (os.environ.get("WAN_MCP_TEST_PG_BINDIR"), shutil.which("pg_config")):
        if candidate and candidate.endswith("pg_config"):
            out = subprocess.run([candidate, "--bindir"], capture_output=True, text=True, check=False)
            path = Path(out.stdout.strip())
            if (path / "initdb").exists():
                return path
        elif candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` (a superuser ``wan`` on database ``postgres``)."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise FileNotFoundError(MISSING)
        self._bin = bindir
        self._root = Path(tempfile.mkdtemp(prefix="wan-pg-"))
        self._data = self._root / "data"
        self.port = _free_port()
        self.url = f"postgresql://wan@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._root.chmod(0o755)
            shutil.chown(self._root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        out = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")

    def __enter__(self) -> PostgresServer:
        self._run(str(self._bin / "initdb"), "-D", str(self._data), "-U", "wan", "-A", "trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = self._root / "server.log"
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-o", options, "-l", str(log), "-w", "start")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._root, ignore_errors=True)

    def schema_url(self) -> str:
        """A URL whose connections live in a fresh schema of their own (one per test: no shared rows)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"


def running_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
