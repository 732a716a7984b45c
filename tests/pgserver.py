"""A throwaway PostgreSQL server for tests: `postgres_server` (one per session), `pg_url` (a fresh database).

It starts from the machine's PostgreSQL binaries (initdb + pg_ctl, the newest under /usr/lib/postgresql or on
PATH) on a random loopback port, its data and socket in a temp folder, run as an unprivileged user when the
tests run as root (the server refuses root). Tests that need it skip only where those binaries are missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

__all__ = ["PostgresServer", "pg_url", "postgres_server", "start_postgres"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: the newest under /usr/lib/postgresql, else on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@dataclass
class PostgresServer:
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def start_postgres(max_connections: int = 100) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL on a random loopback port, its data and socket in a temp folder, stopped and
    removed on exit (tests and benchmarks). A `FileNotFoundError` where the server binaries are missing."""
    bindir = _postgres_bin()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or PATH"
        )
    run_as: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(prefix="orch-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        nobody = pwd.getpwnam("nobody")
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(folder), "PGTZ": "UTC"}
    data = folder / "data"

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=folder,
            timeout=120,
            check=False,
            **run_as,
        )

    init = pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr}")
    started = None
    for _ in range(3):  # the free port may be taken between the probe and the start
        port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c full_page_writes=off "
            f"-c max_connections={max_connections}"
        )
        started = pg(
            "pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o", options, "start"
        )
        if started.returncode == 0:
            break
    if started is None or started.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {started and (started.stderr + started.stdout)}")
    try:
        yield PostgresServer(port)
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL for the session (room for a fleet's connections); skipped where PostgreSQL's
    binaries are missing."""
    if _postgres_bin() is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or PATH"
        )
    with start_postgres(max_connections=300) as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the server, for one test."""
    name = f"orch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    return postgres_server.url(name)
