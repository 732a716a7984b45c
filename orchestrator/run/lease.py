"""One owner per run: a lease row beside the run's checkpoints and ledger, taken before anything is spent.

A run (a start, or a resume) takes its lease first, in one transaction, in the `orch_leases` table of the
checkpoint database (the SQLite file, or the PostgreSQL database a fleet shares), and gives it back when it
ends, however it ends. While it runs, a thread refreshes the lease's heartbeat every `HEARTBEAT_S`.

| the lease's row says                          | a new attempt at the same run id           |
|-----------------------------------------------|--------------------------------------------|
| nothing (no row: never run, or ended)          | takes the lease                            |
| this host, a process that runs                 | is refused: `RunOwnedError` (host, pid)    |
| this host, a process that ended (or a zombie)  | takes the lease over (the owner crashed)   |
| another host, a heartbeat younger than `TTL_S` | is refused                                 |
| another host, an older heartbeat               | takes the lease over                       |

A process is named by (host, pid, the pid's start time), so a pid reused by another process is no owner.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import RunOwnedError
from orchestrator.locations import unreachable, use_wal
from orchestrator.procs import HOST, alive, process_started

if TYPE_CHECKING:
    import psycopg

__all__ = ["HEARTBEAT_S", "TTL_S", "Lease", "Leases", "Owner", "PostgresLeases", "SqliteLeases"]

HEARTBEAT_S = 10.0  # how often a live run's lease is refreshed
TTL_S = 60.0  # a lease of another host not refreshed for this long is taken over
_log = logging.getLogger("orchestrator.lease")
_HELD: set[str] = set()  # the tokens of the leases this process holds now
_HELD_LOCK = threading.Lock()

_CREATE = (
    "create table if not exists orch_leases (run_id text primary key, host text not null, "
    "pid integer not null, pid_started bigint, heartbeat {real} not null, token text not null)"
)
_SELECT = "select host, pid, pid_started, heartbeat, token from orch_leases where run_id = ?"
_TAKE = (
    "insert into orch_leases (run_id, host, pid, pid_started, heartbeat, token) values (?, ?, ?, ?, ?, ?) "
    "on conflict (run_id) do update set host = excluded.host, pid = excluded.pid, "
    "pid_started = excluded.pid_started, heartbeat = excluded.heartbeat, token = excluded.token"
)
_DROP = "delete from orch_leases where run_id = ? and token = ?"
_PG_LOCK = 0x6F72636B  # an advisory lock id ("orck"): the table is made, and each run's lease taken, alone


@dataclass(frozen=True)
class Owner:
    """Who holds a run's lease: a process on a host, and when it last said it was alive."""

    host: str
    pid: int
    pid_started: int | None
    heartbeat: float
    token: str

    def runs(self, now: float, ttl_s: float) -> bool:
        """Whether this owner still runs the run (see the module's table)."""
        if self.host != HOST:
            return now - self.heartbeat < ttl_s
        if self.pid == os.getpid() and self.pid_started == process_started(self.pid):
            with _HELD_LOCK:
                return self.token in _HELD  # this process: a run of ours that has not ended
        return alive(self.pid, self.pid_started)


@dataclass(frozen=True)
class Lease:
    """A run's lease, as held by this process."""

    run_id: str
    token: str


class LeaseStore(Protocol):
    """The `orch_leases` table of a SQLite file or a PostgreSQL database."""

    name: str

    def take(self, run_id: str, me: Owner, runs: Callable[[Owner], bool]) -> Owner | None:
        """In one transaction: the owner that still `runs` the run, or None once `me` holds its lease.
        A store that can't be written (a full disk, a server gone) is a `ConfigError` naming it."""

    def beat(self, tokens: Sequence[str], now: float) -> int:
        """Refresh these leases' heartbeat; how many are still held."""

    def drop(self, run_id: str, token: str) -> None:
        """Give a lease back (if it is still ours)."""

    def close(self) -> None:
        """Release the connection."""


def _beat_sql(n: int) -> str:
    return f"update orch_leases set heartbeat = ? where token in ({', '.join('?' * n)})"


class SqliteLeases:
    """Leases in a SQLite file (the checkpoint file), for the processes of one host."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.name, check_same_thread=False, timeout=60.0, isolation_level=None)
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout = 60000")
            use_wal(self._conn)
            self._conn.execute(_CREATE.format(real="real"))

    def take(self, run_id: str, me: Owner, runs: Callable[[Owner], bool]) -> Owner | None:
        try:
            return self._take(run_id, me, runs)
        except (OSError, sqlite3.Error) as exc:  # a full disk: refused before anything is spent
            from orchestrator.tracing.store import TraceStoreError

            raise TraceStoreError(self.name, exc, "checkpoint store", "checkpoints") from None

    def _take(self, run_id: str, me: Owner, runs: Callable[[Owner], bool]) -> Owner | None:
        with self._lock:
            self._conn.execute("begin immediate")  # the write lock first: one taker at a time
            try:
                row = self._conn.execute(_SELECT, (run_id,)).fetchone()
                if row is not None and runs(Owner(*row)):
                    self._conn.execute("rollback")
                    return Owner(*row)
                self._conn.execute(_TAKE, (run_id, me.host, me.pid, me.pid_started, me.heartbeat, me.token))
                self._conn.execute("commit")
                return None
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("rollback")
                raise

    def beat(self, tokens: Sequence[str], now: float) -> int:
        with self._lock:
            return int(self._conn.execute(_beat_sql(len(tokens)), (now, *tokens)).rowcount)

    def drop(self, run_id: str, token: str) -> None:
        with self._lock:
            self._conn.execute(_DROP, (run_id, token))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresLeases:
    """Leases in a PostgreSQL database (the postgres extra), for the processes of any number of hosts."""

    def __init__(self, url: str, name: str | None = None, **connect: Any) -> None:
        self.url = url
        self.name = name or url
        self._connect = connect
        self._lock = threading.Lock()
        self._conn = self._open()
        with self._lock, self._conn.transaction():
            self._conn.execute("select pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            self._conn.execute(_CREATE.format(real="double precision"))

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, **self._connect)

    def _call(self, op: Callable[[psycopg.Connection[tuple[Any, ...]]], Any]) -> Any:
        """`op` on the connection; a dropped connection is reopened and `op` tried once more."""
        import psycopg

        for attempt in range(2):
            try:
                with self._lock:
                    if self._conn.closed:
                        self._conn = self._open()
                    return op(self._conn)
            except psycopg.OperationalError:
                if attempt:
                    raise
                with self._lock:
                    self._conn.close()
        raise AssertionError("unreachable")

    def take(self, run_id: str, me: Owner, runs: Callable[[Owner], bool]) -> Owner | None:
        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> Owner | None:
            with conn.transaction():
                # takers of one run id queue here until the transaction ends (a row lock can't cover a
                # row that does not exist yet)
                conn.execute("select pg_advisory_xact_lock(%s::integer, hashtext(%s))", (_PG_LOCK, run_id))
                row = conn.execute(_pg(_SELECT), (run_id,)).fetchone()
                if row is not None and runs(Owner(*row)):
                    return Owner(*row)
                conn.execute(_pg(_TAKE), (run_id, me.host, me.pid, me.pid_started, me.heartbeat, me.token))
                return None

        import psycopg

        try:
            found: Owner | None = self._call(op)
        except psycopg.Error as exc:
            raise unreachable(self.url, exc) from None
        return found

    def beat(self, tokens: Sequence[str], now: float) -> int:
        n: int = self._call(lambda conn: conn.execute(_pg(_beat_sql(len(tokens))), (now, *tokens)).rowcount)
        return n

    def drop(self, run_id: str, token: str) -> None:
        self._call(lambda conn: conn.execute(_pg(_DROP), (run_id, token)))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class Leases:
    """The leases of one orchestrator's runs: taken, kept alive by a heartbeat thread, given back.

    Example:
        >>> import tempfile, os
        >>> leases = Leases(SqliteLeases(os.path.join(tempfile.mkdtemp(), "c.db")))
        >>> lease = leases.acquire("r1")
        >>> leases.acquire("r1")
        Traceback (most recent call last):
        ...
        orchestrator.errors.RunOwnedError: run 'r1' is already running...
        >>> leases.release(lease); leases.close()
    """

    def __init__(self, store: LeaseStore, *, ttl_s: float = TTL_S, beat_s: float = HEARTBEAT_S) -> None:
        self.store = store
        self.ttl_s, self.beat_s = ttl_s, beat_s
        self._held: dict[str, Lease] = {}  # token -> lease
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, run_id: str) -> Lease:
        """Take the run's lease, or raise `RunOwnedError` naming the process that runs it (blocking)."""
        pid = os.getpid()
        now = time.time()
        me = Owner(HOST, pid, process_started(pid), now, uuid.uuid4().hex)
        with _HELD_LOCK:  # ours before the row says so: a run of this process that reads it sees it held
            _HELD.add(me.token)
        try:
            owner = self.store.take(run_id, me, lambda o: o.runs(now, self.ttl_s))
        except BaseException:
            with _HELD_LOCK:
                _HELD.discard(me.token)
            raise
        if owner is not None:
            with _HELD_LOCK:
                _HELD.discard(me.token)
            raise RunOwnedError(run_id, owner.host, owner.pid, now - owner.heartbeat)
        lease = Lease(run_id, me.token)
        with self._lock:
            self._held[me.token] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat_loop, name="orch-lease", daemon=True)
                self._thread.start()
        return lease

    def release(self, lease: Lease) -> None:
        """Give the lease back; never raises (a lease left behind is taken over once its owner is gone)."""
        with self._lock:
            self._held.pop(lease.token, None)
        with _HELD_LOCK:
            _HELD.discard(lease.token)
        try:
            self.store.drop(lease.run_id, lease.token)
        except Exception as exc:
            _log.warning(
                "lease of run %r could not be given back in %s: %s", lease.run_id, self.store.name, exc
            )

    def close(self) -> None:
        """Stop the heartbeat, give back what is still held, and release the connection."""
        with self._lock:
            held = list(self._held.values())
        for lease in held:
            self.release(lease)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.store.close()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.beat_s):
            with self._lock:
                tokens = list(self._held)
            if not tokens:
                continue
            try:
                kept = self.store.beat(tokens, time.time())
            except Exception as exc:  # the thread must outlive a busy or unreachable store
                _log.warning("run leases could not be refreshed in %s: %s", self.store.name, exc)
                continue
            if kept < len(tokens):
                _log.error(
                    "%d run lease(s) in %s were taken over by another process (no heartbeat for %g s)",
                    len(tokens) - kept,
                    self.store.name,
                    self.ttl_s,
                )
