"""The trace store: runs and spans, in a SQLite file or a PostgreSQL database, changed only by named
migrations (`tracing.migrations`; the SQL seam between the two databases is `tracing.backend`)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from orchestrator.cost.ledger import Ledger
from orchestrator.errors import ConfigError, TraceStoreError
from orchestrator.locations import describe, traces_location
from orchestrator.procs import HOST, alive, process_started
from orchestrator.reserve import disk_full, reserve_for
from orchestrator.tracing import damage, rollups
from orchestrator.tracing.backend import Backend, SqliteBackend
from orchestrator.tracing.damage import TraceStoreDamaged
from orchestrator.tracing.migrations import (
    MIGRATIONS,
    SPAN_COLUMNS,
    add_rollups,
    exclusive,
    m001_runs_spans,
    migrate,
    up_to_date,
)

__all__ = [
    "MIGRATIONS",
    "SPAN_COLUMNS",
    "TraceStore",
    "TraceStoreDamaged",
    "TraceStoreError",
    "check_database",
    "disk_full",
    "m001_runs_spans",
    "migrate",
    "run_totals",
]


def check_database(path: str | Path, what: str, setting: str) -> None:
    """Raise `TraceStoreError` now if `path` can't serve as an SQLite file (a folder, junk, unwritable)."""
    try:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(21, "it is a directory")
        conn = sqlite3.connect(target)
        try:
            conn.execute("pragma schema_version").fetchone()
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise TraceStoreError(str(path), exc, what, setting) from None


_ACTIVE: set[tuple[str, str]] = set()  # (store path, run id) of runs this process is running now


_RUN_COLUMNS = (
    "run_id",
    "graph",
    "status",
    "started_at",
    "config_hash",
    "version",
    "host",
    "pid",
    "pid_started",
)
_START_RUN = (
    f"insert into runs ({', '.join(_RUN_COLUMNS)}) values ({', '.join('?' * len(_RUN_COLUMNS))}) "
    "on conflict (run_id) do update set ended_at = null, error = null, "
    + ", ".join(f"{c} = excluded.{c}" for c in ("status", "host", "pid", "pid_started"))
)
_PROCESS: tuple[int, int | None] | None = None  # this process's pid and start time (read once per pid)


def _this_process() -> tuple[int, int | None]:
    """This process's pid and start time, read from /proc once (again in a forked child)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS is None or _PROCESS[0] != pid:
        _PROCESS = (pid, process_started(pid))
    return _PROCESS


def _alive(pid: int, started: int | None) -> bool:
    if pid == os.getpid():
        return False  # our own runs are in _ACTIVE; an older process with our pid is long gone
    return alive(pid, started)


class TraceStore:
    """A trace store: a SQLite file (the default) or a PostgreSQL database (`tracing.pg`), safe to share
    between threads of one process and between processes (WAL; PostgreSQL's transactions), and, in
    PostgreSQL, between machines.

    Example:
        >>> store = TraceStore(":memory:")
        >>> store.list_runs()
        []
    """

    def __init__(
        self, path: str | os.PathLike[str], totals: Callable[[str], Ledger | None] | None = None
    ) -> None:
        self.location = ":memory:" if str(path) == ":memory:" else traces_location(path)
        self.path = describe(self.location)  # for messages: a URL's password is never shown
        self.totals = totals  # a run's ledger: read for a run whose process is found dead
        self.damage: str | None = None  # why the file is damaged, once known: nothing more is written
        self._lock = threading.Lock()
        self._graphs: dict[str, str] = {}  # run id -> graph, for the roll-ups
        self._pending: list[list[Any]] = []  # rows of runs started with `defer`, not written yet
        self._pending_lock = threading.Lock()
        self.reserve = None
        if isinstance(self.location, str) and self.location != ":memory:":
            from orchestrator.tracing.pg import PostgresBackend

            self._key = self.path
            self._b: Backend = PostgresBackend(self.location)
            return
        self.path = str(path)
        self._key = self.path if self.path == ":memory:" else os.path.realpath(self.path)
        self.reserve = None if self.path == ":memory:" else reserve_for(self.path)  # for a full disk
        self._b = self._open_file()

    def _open_file(self) -> SqliteBackend:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                if Path(self.path).is_dir():
                    raise IsADirectoryError(21, "it is a directory")
                known = damage.known_damage(self.path)  # found by an earlier process: no scan, no write
                if known is not None:
                    self.damage = known
                    raise TraceStoreDamaged(self.path, known)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            try:
                conn.execute("PRAGMA busy_timeout = 10000")
                backend = SqliteBackend(conn)
                self._check_small(conn)
                if self.path == ":memory:":
                    migrate(backend.db)
                elif not up_to_date(conn):
                    # a new or older file: one process at a time switches it to WAL and migrates it (SQLite
                    # does not wait on those locks: several processes opening a new store at once failed)
                    with exclusive(self.path + ".lock"):
                        conn.execute("PRAGMA journal_mode = WAL")
                        migrate(backend.db)
                if self.path != ":memory:":
                    conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            why = damage.damage_of(exc)
            if why is not None:
                self._damaged(why)
                raise TraceStoreDamaged(self.path, why) from None
            raise TraceStoreError(self.path, exc) from None
        return backend

    @property
    def db(self) -> sqlite_utils.Database:
        """The SQLite file through sqlite-utils (a SQLite store only; `rows` and `query` read either)."""
        if not isinstance(self._b, SqliteBackend):
            raise ConfigError(f"trace store {self.path!r} is PostgreSQL: read it with .rows() or .query()")
        return self._b.db

    def _check_small(self, conn: sqlite3.Connection) -> None:
        """SQLite's quick check of a store file small enough for it to cost nothing (`damage`)."""
        if self.path == ":memory:":
            return
        size = os.path.getsize(self.path)
        if 0 < size <= damage.QUICK_CHECK_MAX_BYTES:
            problems = damage.quick_check(conn)
            if problems:
                self._damaged(problems[0])
                raise TraceStoreDamaged(self.path, problems[0])

    def _damaged(self, why: str) -> None:
        """Note the file as damaged, here and beside it (for the next process)."""
        self.damage = why
        if self.path != ":memory:" and isinstance(self.location, Path):
            damage.remember(self.path, why)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around any read or write of the file: SQLite's word that it is damaged becomes one
        `TraceStoreDamaged` line, and the file, known damaged, is not touched again."""
        if self.damage is not None:
            raise TraceStoreDamaged(self.path, self.damage)
        try:
            yield
        except sqlite3.DatabaseError as exc:
            why = damage.damage_of(exc)
            if why is None:
                raise
            self._damaged(why)
            raise TraceStoreDamaged(self.path, why) from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._b.close()

    # --- writing ---------------------------------------------------------------------------------------
    def start_run(
        self, run_id: str, graph: str, *, config_hash: str, version: str, defer: bool = False
    ) -> None:
        """Record a run as running (a resumed run goes back to running, and keeps its start time).

        With `defer`, the row is written by the next `write_spans` (the span writer's thread, in its own
        transaction before the spans), not by a commit of its own here: a service starting many runs
        at once commits their rows together, off its event loop. What can refuse a run (a store known
        damaged, no room for its reserve on a full disk) is still checked here, before anything is spent."""
        pid, started = _this_process()
        values = [run_id, graph, "running", time.time(), config_hash, version, HOST, pid, started]
        _ACTIVE.add((self._key, run_id))
        self._graphs[run_id] = graph  # for the roll-ups of its spans, whenever its row is written
        try:
            with self.guard():
                if self.reserve is not None:
                    self.reserve.ensure()  # room for a run's last records if the disk fills while it runs
                if defer:
                    with self._pending_lock:
                        self._pending.append(values)
                    return
                self._write(lambda: self._write_starts([values]))
        except TraceStoreDamaged:
            _ACTIVE.discard((self._key, run_id))
            raise
        except self._b.errors as exc:  # a full disk: one clear line, before anything is spent
            _ACTIVE.discard((self._key, run_id))
            raise TraceStoreError(self.path, exc) from None

    def end_run(self, run_id: str, **fields: Any) -> None:
        """Record a run's outcome: status, totals, answer, error (`TraceStoreError` when it can't)."""
        _ACTIVE.discard((self._key, run_id))

        def write() -> None:
            with self._lock, self._b.transaction():
                started = self._b.execute("select started_at from runs where run_id = ?", [run_id]).rows
                now = time.time()
                fields.setdefault("ended_at", now)
                if started:
                    fields.setdefault("duration_ms", (now - started[0][0]) * 1000)
                sets = ", ".join(f"{column} = ?" for column in fields)
                self._b.execute(f"update runs set {sets} where run_id = ?", [*fields.values(), run_id])

        try:
            with self.guard():
                self._write(write)
        except self._b.errors as exc:
            raise TraceStoreError(self.path, exc) from None

    def disk_was_full(self) -> TraceStoreError | None:
        """The error to end a run with when this store's disk filled since its reserve was made: what was
        written is stored (in the reserve's space), but the next run would find no room."""
        if self.reserve is None or not self.reserve.spent:
            return None
        return TraceStoreError(self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def _write(self, fn: Callable[[], None]) -> None:
        """A write; if the disk is full, once more in the reserve's space (`orchestrator.reserve`)."""
        if self.reserve is None:
            fn()
        else:
            self.reserve.write(fn)

    def write_spans(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert span rows and add them to the roll-ups, in one transaction. A span already stored (the
        same span_id) is skipped, and counted once. The rows of runs started with `defer` are written
        first (an empty `rows` writes just those)."""
        with self._pending_lock:
            starts, self._pending = self._pending, []
        if not rows and not starts:
            return
        try:
            with self.guard():
                if starts:
                    self._write(lambda: self._write_starts(starts))
                    starts = []
                if rows:
                    self._write(lambda: self._write_spans(rows))
        finally:
            if starts:  # not written: kept for the next write, ahead of any started since
                with self._pending_lock:
                    self._pending[:0] = starts

    def pending_starts(self) -> int:
        """How many rows of runs started with `defer` are waiting to be written."""
        return len(self._pending)

    def _write_starts(self, starts: list[list[Any]]) -> None:
        """Runs' rows as running, in one transaction (`start_run`'s, now or deferred)."""
        with self._lock, self._b.transaction():
            self._b.executemany(_START_RUN, [tuple(v) for v in starts])

    def _write_spans(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            self._b.write_spans(rows, self._graphs_of(rows))

    def graphs_of_runs(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Each run's graph (runs not recorded are left out)."""
        ids = list(run_ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            found = self.query(
                f"select run_id, graph from runs where run_id in ({','.join('?' * len(part))})", part
            )
            out.update({r["run_id"]: r["graph"] or "?" for r in found})
        return out

    def _graphs_of(self, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
        """The graph of each run the rows belong to: from the runs table (a run is recorded when it starts),
        else from a run span in the rows, else "?". Cached: a run's graph never changes."""
        wanted = {r.get("run_id") for r in rows} - self._graphs.keys() - {None}
        if wanted:
            marks = ",".join("?" * len(wanted))
            found = self._b.execute(f"select run_id, graph from runs where run_id in ({marks})", list(wanted))
            self._graphs.update({str(k): v for k, v in found.rows})
            for r in rows:
                run_id = r.get("run_id")
                if (
                    isinstance(run_id, str)
                    and run_id in wanted
                    and run_id not in self._graphs
                    and r.get("kind") == "run"
                ):
                    self._graphs[run_id] = str(r.get("name") or "").removeprefix("invoke_workflow ") or "?"
            if len(self._graphs) > 100_000:
                self._graphs.clear()
        return self._graphs

    def prune(self, before: float) -> tuple[int, int]:
        """Delete the runs that ended before `before` (epoch seconds; runs still running are kept), their
        spans, and spans of no recorded run that ended before it. The roll-ups of every day a deleted span
        was in are summed again from the spans left. Returns (runs, spans) deleted."""
        self.mark_interrupted()
        cut_ns = int(before * 1e9)
        day = rollups.DAY_NS
        b = self._b
        with self.guard(), self._lock, b.transaction():
            b.lock_for_prune()
            old = [
                r[0]
                for r in b.execute(
                    "select run_id from runs where coalesce(ended_at, started_at) < ? "
                    "and status != 'running'",
                    [before],
                ).rows
            ]
            b.execute("create temp table if not exists _pruned (span_id text primary key)")
            b.execute("delete from _pruned")
            for i in range(0, len(old), 500):
                part = old[i : i + 500]
                marks = ",".join("?" * len(part))
                b.execute(f"insert into _pruned select span_id from spans where run_id in ({marks})", part)
            b.execute(
                "insert into _pruned select span_id from spans where end_ns < ? "
                "and (run_id is null or run_id not in (select run_id from runs)) on conflict do nothing",
                [cut_ns],
            )
            days = [
                int(d)
                for (d,) in b.execute(
                    f"select distinct start_ns / {day} from spans "
                    "where span_id in (select span_id from _pruned)"
                ).rows
            ]
            spans = b.execute("delete from spans where span_id in (select span_id from _pruned)").rowcount
            for i in range(0, len(old), 500):
                part = old[i : i + 500]
                b.execute(f"delete from runs where run_id in ({','.join('?' * len(part))})", part)
            graphs = {str(k): v for k, v in b.execute("select run_id, graph from runs").rows}
            for d in days:  # those days' roll-ups again, from the spans kept
                b.execute("delete from rollups where day = ?", [d])
                b.execute("delete from rollup_hist where day = ?", [d])
                for chunk in b.chunks(
                    "select * from spans where start_ns >= ? and start_ns < ?", [d * day, (d + 1) * day]
                ):
                    add_rollups(b.executemany, chunk, graphs)
            b.execute("delete from _pruned")
        return len(old), spans

    # --- reading ---------------------------------------------------------------------------------------
    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Most recent runs first."""
        self.mark_interrupted()
        sql = "select * from runs order by started_at desc limit ?"
        return self.query(sql, [limit])

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run row, by full id or unique prefix (a `ConfigError` if the prefix fits several runs)."""
        self.mark_interrupted()
        exact = self.query("select * from runs where run_id = ?", [run_id])
        if exact:
            return exact[0]
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.query(
            "select * from runs where run_id like ? escape '\\' order by started_at desc limit 6", [pattern]
        )
        if len(rows) > 1:
            shown = ", ".join(r["run_id"] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise ConfigError(f"run id prefix {run_id!r} fits several runs ({shown}); give more of the id")
        return rows[0] if rows else None

    def mark_interrupted(self) -> list[str]:
        """Runs left `running` by a process of this host that has ended become `interrupted`; their ids.

        Their cost and tokens come from the ledger (`totals`, where given): the process died before it
        could write them, but the ledger holds each call it paid for."""
        rows = self.query(
            "select run_id, pid, pid_started from runs where status = 'running' and host = ?", [HOST]
        )
        dead = [
            r
            for r in rows
            if r["pid"] is not None
            and (self._key, r["run_id"]) not in _ACTIVE
            and not _alive(r["pid"], r["pid_started"])
        ]
        if not dead:
            return []
        paid = {r["run_id"]: self.totals(r["run_id"]) if self.totals else None for r in dead}
        try:
            with self.guard(), self._lock, self._b.transaction():
                for r in dead:
                    run_id = r["run_id"]
                    error = (
                        f"its process (pid {r['pid']}) ended before the run did; "
                        f"continue it with `orch run --resume {run_id}`"
                    )
                    fields: dict[str, Any] = {"status": "interrupted", "error": error}
                    ledger = paid[run_id]
                    if ledger is not None:
                        fields.update(run_totals(ledger))
                    sets = ", ".join(f"{column} = ?" for column in fields)
                    self._b.execute(
                        f"update runs set {sets} where run_id = ? and status = 'running'",
                        [*fields.values(), run_id],
                    )
        except self._b.errors:  # a full disk: reading goes on; the next read marks them
            return []  # (a damaged file raised TraceStoreDamaged through the guard)
        return [r["run_id"] for r in dead]

    def run_spans(self, run_id: str) -> list[dict[str, Any]]:
        """All spans of a run, in start order."""
        return self.query("select * from spans where run_id = ? order by start_ns", [run_id])

    def spans(self, where: str = "1=1", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Span rows matching a SQL condition (`?` placeholders, in either database)."""
        return self.query(f"select * from spans where {where}", list(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query (`?` placeholders, SQL both databases speak), as dicts."""
        with self.guard(), self._lock:
            return self._b.execute(sql, list(params)).dicts()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query, as tuples."""
        with self.guard(), self._lock:
            return self._b.execute(sql, list(params)).rows


def run_totals(ledger: Ledger) -> dict[str, Any]:
    """A run row's totals, from its ledger (as the runner writes them at a run's end)."""
    return {
        "cost_usd": ledger.cost_usd,
        "unpriced_calls": ledger.unpriced_calls,
        "input_tokens": ledger.input_tokens,
        "output_tokens": ledger.output_tokens,
        "compute_ms": sum(line["compute_ms"] or 0.0 for line in ledger.lines),
    }


def decode_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """The span's full attribute map."""
    raw = row.get("attributes")
    return dict(json.loads(raw)) if raw else {}
