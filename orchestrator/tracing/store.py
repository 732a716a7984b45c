"""The SQLite trace store: runs and spans, written through sqlite-utils, changed only by named migrations."""

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
from orchestrator.procs import HOST, alive, process_started
from orchestrator.reserve import disk_full, reserve_for
from orchestrator.tracing import attrs as A
from orchestrator.tracing import damage, rollups
from orchestrator.tracing.damage import TraceStoreDamaged

__all__ = [
    "MIGRATIONS",
    "TraceStore",
    "TraceStoreDamaged",
    "TraceStoreError",
    "check_database",
    "disk_full",
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


Migration = Callable[[sqlite_utils.Database], None]


def m001_runs_spans(db: sqlite_utils.Database) -> None:
    """Runs (written at start, so a killed run is still listed) and spans (one row per ended span)."""
    db.table("runs").create(
        {
            "run_id": str,
            "graph": str,
            "status": str,
            "started_at": float,
            "ended_at": float,
            "duration_ms": float,
            "cost_usd": float,
            "unpriced_calls": int,
            "input_tokens": int,
            "output_tokens": int,
            "answer": str,
            "error": str,
            "config_hash": str,
            "version": str,
        },
        pk="run_id",
    )
    db.table("spans").create(
        {
            "span_id": str,
            "trace_id": str,
            "parent_id": str,
            "run_id": str,
            "name": str,
            "kind": str,
            "node": str,
            "model": str,
            "tool": str,
            "role": str,
            "action": str,
            "start_ns": int,
            "end_ns": int,
            "duration_ms": float,
            "status": str,
            "status_message": str,
            "input_tokens": int,
            "output_tokens": int,
            "cache_read_tokens": int,
            "cache_write_tokens": int,
            "cost_usd": float,
            "ttft_ms": float,
            "attributes": str,
        },
        pk="span_id",
    )
    db.table("spans").create_index(["run_id", "start_ns"])
    db.table("spans").create_index(["kind", "node"])
    db.table("runs").create_index(["started_at"])


def m002_run_owner(db: sqlite_utils.Database) -> None:
    """The process that runs a run (host, pid and its start time), so a run whose process died is detected."""
    runs = db.table("runs")
    runs.add_column("host", str)
    runs.add_column("pid", int)
    runs.add_column("pid_started", int)


# the columns m003 adds, and the span attribute each is read from (for spans stored before it)
_M003_COLUMNS: tuple[tuple[str, type, str], ...] = (
    ("slot", str, A.SLOT),
    ("provider", str, A.PROVIDER),
    ("compute_ms", float, A.COMPUTE_MS),
    ("cache_write_1h_tokens", int, A.CACHE_WRITE_1H),
    ("reasoning_tokens", int, A.REASONING),
    ("tokens_per_s", float, A.TOKENS_PER_S),
)


def m003_span_columns(db: sqlite_utils.Database) -> None:
    """What the cost reports read, as columns: the slot and provider of a model call, its compute time, and
    every kind of token (so stored calls can be priced again). Spans stored before are filled in from their
    attributes; indexes for the reports' groupings."""
    spans = db.table("spans")
    for column, kind, _ in _M003_COLUMNS:
        spans.add_column(column, kind)
    sets = ", ".join(
        f"{column} = json_extract(attributes, '$.\"{attr}\"')" for column, _, attr in _M003_COLUMNS
    )
    db.execute(f"update spans set {sets} where attributes is not null")
    spans.create_index(["kind", "model"])
    spans.create_index(["kind", "tool"])
    spans.create_index(["kind", "slot"])


_M004_COLUMNS: tuple[tuple[str, type, str], ...] = (
    ("node_path", str, A.NODE_PATH),
    ("repairs", int, A.WORKER_REPAIRS),
    ("escalations", int, A.WORKER_ESCALATIONS),
)


def m004_rollups(db: sqlite_utils.Database) -> None:
    """Roll-ups written at ingest (`tracing.rollups`): per day, graph, and node, model, slot or tool, the
    sums the cost reports read instead of every span, and histograms for their percentiles. A span's node
    path (a subgraph's node under its parent's) and a worker's repairs and escalations become columns.
    Filled in for the spans already stored."""
    spans = db.table("spans")
    for column, kind, _ in _M004_COLUMNS:
        spans.add_column(column, kind)
    db.table("runs").add_column("compute_ms", float)  # a run's model compute time, beside its cost
    db.execute(
        "update runs set compute_ms = (select sum(compute_ms) from spans "
        "where spans.run_id = runs.run_id and kind = 'chat')"
    )
    sets = ", ".join(
        f"{column} = json_extract(attributes, '$.\"{attr}\"')" for column, _, attr in _M004_COLUMNS
    )
    db.execute(f"update spans set {sets} where attributes is not null")
    sums = ", ".join(f"{name} real not null default 0" for name in rollups.SUMS)
    db.execute(
        "create table rollups (day integer not null, graph text not null, dim text not null, "
        f"key text not null, {sums}, primary key (day, graph, dim, key)) without rowid"
    )
    db.execute(
        "create table rollup_hist (day integer not null, graph text not null, dim text not null, "
        "key text not null, measure text not null, bucket integer not null, n integer not null, "
        "primary key (day, graph, dim, key, measure, bucket)) without rowid"
    )
    spans.create_index(["start_ns"])
    graphs = dict(db.execute("select run_id, graph from runs").fetchall())
    cur = db.execute("select * from spans")
    names = [c[0] for c in cur.description]
    while chunk := cur.fetchmany(5000):
        _add_rollups(db.conn, [dict(zip(names, r, strict=True)) for r in chunk], graphs)


def _add_rollups(conn: sqlite3.Connection, rows: Sequence[dict[str, Any]], graphs: dict[str, str]) -> None:
    """Sum span rows into the roll-up tables (inside the caller's transaction)."""
    sums, hist = rollups.summarize(rows, graphs)
    if sums:
        conn.executemany(_UPSERT_ROLLUP, [(*k, *v) for k, v in sums.items()])
    if hist:
        conn.executemany(_UPSERT_HIST, [(*k, n) for k, n in hist.items()])


_UPSERT_ROLLUP = (
    f"insert into rollups (day, graph, dim, key, {', '.join(rollups.SUMS)}) "
    f"values (?, ?, ?, ?, {', '.join('?' * len(rollups.SUMS))}) "
    "on conflict (day, graph, dim, key) do update set "
    + ", ".join(f"{n} = {n} + excluded.{n}" for n in rollups.SUMS)
)
_UPSERT_HIST = (
    "insert into rollup_hist (day, graph, dim, key, measure, bucket, n) values (?, ?, ?, ?, ?, ?, ?) "
    "on conflict (day, graph, dim, key, measure, bucket) do update set n = n + excluded.n"
)


MIGRATIONS: list[Migration] = [m001_runs_spans, m002_run_owner, m003_span_columns, m004_rollups]

_ACTIVE: set[tuple[str, str]] = set()  # (store path, run id) of runs this process is running now


def _alive(pid: int, started: int | None) -> bool:
    if pid == os.getpid():
        return False  # our own runs are in _ACTIVE; an older process with our pid is long gone
    return alive(pid, started)


SPAN_COLUMNS = (
    "span_id",
    "trace_id",
    "parent_id",
    "run_id",
    "name",
    "kind",
    "node",
    "model",
    "tool",
    "role",
    "action",
    "start_ns",
    "end_ns",
    "duration_ms",
    "status",
    "status_message",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "ttft_ms",
    "attributes",
    *(column for column, _, _ in _M003_COLUMNS),
    *(column for column, _, _ in _M004_COLUMNS),
)
_INSERT_SPAN = (
    # a span is written once: a second copy (an export retried) is ignored, so the roll-ups count it once
    f"insert or ignore into spans ({', '.join(SPAN_COLUMNS)}) values ({', '.join('?' * len(SPAN_COLUMNS))})"
)


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations in order; return the names applied now."""
    if "_migrations" not in db.table_names():
        db.table("_migrations").create({"name": str, "applied_at": float}, pk="name")
    done = {row["name"] for row in db.table("_migrations").rows}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ not in done:
            with db.conn:
                fn(db)
                db.table("_migrations").insert({"name": fn.__name__, "applied_at": time.time()})
            applied.append(fn.__name__)
    return applied


class TraceStore:
    """A trace store file, safe to share between threads of one process and between processes (WAL).

    Example:
        >>> store = TraceStore(":memory:")
        >>> store.list_runs()
        []
    """

    def __init__(self, path: str | Path, totals: Callable[[str], Ledger | None] | None = None) -> None:
        self.path = str(path)
        self.totals = totals  # a run's ledger: read for a run whose process is found dead
        self.damage: str | None = None  # why the file is damaged, once known: nothing more is written
        self._key = self.path if self.path == ":memory:" else os.path.realpath(self.path)
        self.reserve = None if self.path == ":memory:" else reserve_for(self.path)  # for a full disk
        self._lock = threading.Lock()
        self._graphs: dict[str, str] = {}  # run id -> graph, for the roll-ups
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
                self.db = sqlite_utils.Database(conn)
                self._check_small(conn)
                if self.path == ":memory:":
                    migrate(self.db)
                elif not _up_to_date(conn):
                    # a new or older file: one process at a time switches it to WAL and migrates it (SQLite
                    # does not wait on those locks: several processes opening a new store at once failed)
                    with _exclusive(self.path + ".lock"):
                        conn.execute("PRAGMA journal_mode = WAL")
                        migrate(self.db)
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
        if self.path != ":memory:":
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
            self.db.conn.close()

    # --- writing ---------------------------------------------------------------------------------------
    def start_run(self, run_id: str, graph: str, *, config_hash: str, version: str) -> None:
        """Record a run as running (a resumed run goes back to running)."""
        row = {
            "run_id": run_id,
            "graph": graph,
            "status": "running",
            "started_at": time.time(),
            "config_hash": config_hash,
            "version": version,
        }
        owner = {"host": HOST, "pid": os.getpid(), "pid_started": process_started(os.getpid())}
        _ACTIVE.add((self._key, run_id))

        def write() -> None:
            with self._lock, self.db.conn:
                sql = "select started_at from runs where run_id = ?"
                existing = self.db.execute(sql, [run_id]).fetchone()
                if existing:
                    row["started_at"] = existing[0]
                    self.db.table("runs").update(
                        run_id, {"status": "running", "ended_at": None, "error": None, **owner}
                    )
                else:
                    self.db.table("runs").insert({**row, **owner})

        try:
            with self.guard():
                if self.reserve is not None:
                    self.reserve.ensure()  # room for a run's last records if the disk fills while it runs
                self._write(write)
        except TraceStoreDamaged:
            _ACTIVE.discard((self._key, run_id))
            raise
        except (OSError, sqlite3.Error) as exc:  # a full disk: one clear line, before anything is spent
            _ACTIVE.discard((self._key, run_id))
            raise TraceStoreError(self.path, exc) from None

    def end_run(self, run_id: str, **fields: Any) -> None:
        """Record a run's outcome: status, totals, answer, error (`TraceStoreError` when it can't)."""
        _ACTIVE.discard((self._key, run_id))

        def write() -> None:
            with self._lock, self.db.conn:
                started = self.db.execute("select started_at from runs where run_id = ?", [run_id]).fetchone()
                now = time.time()
                fields.setdefault("ended_at", now)
                if started:
                    fields.setdefault("duration_ms", (now - started[0]) * 1000)
                self.db.table("runs").update(run_id, fields)

        try:
            with self.guard():
                self._write(write)
        except (OSError, sqlite3.Error) as exc:
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
        same span_id) is skipped, and counted once."""
        if not rows:
            return
        with self.guard():
            self._write(lambda: self._write_spans(rows))

    def _write_spans(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            graphs = self._graphs_of(rows)
            conn = self.db.conn
            try:
                with conn:
                    cur = conn.executemany(_INSERT_SPAN, [tuple(map(r.get, SPAN_COLUMNS)) for r in rows])
                    if cur.rowcount != len(rows):
                        raise _Duplicates  # rolls the batch back; written again below without them
                    _add_rollups(conn, rows, graphs)
            except _Duplicates:
                with conn:
                    ids = list({r["span_id"] for r in rows})
                    known: set[str] = set()
                    for i in range(0, len(ids), 500):
                        part = ids[i : i + 500]
                        marks = ",".join("?" * len(part))
                        known.update(
                            x
                            for (x,) in conn.execute(
                                f"select span_id from spans where span_id in ({marks})", part
                            )
                        )
                    fresh: dict[str, dict[str, Any]] = {}
                    for r in rows:
                        if r["span_id"] not in known:
                            fresh.setdefault(r["span_id"], r)
                    new = list(fresh.values())
                    conn.executemany(_INSERT_SPAN, [tuple(map(r.get, SPAN_COLUMNS)) for r in new])
                    _add_rollups(conn, new, graphs)

    def graphs_of_runs(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Each run's graph (runs not recorded are left out)."""
        ids = list(run_ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            found = self._query(
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
            found = self.db.execute(f"select run_id, graph from runs where run_id in ({marks})", list(wanted))
            self._graphs.update(dict(found.fetchall()))
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
        with self.guard(), self._lock, self.db.conn as conn:
            old = [
                r[0]
                for r in conn.execute(
                    "select run_id from runs where coalesce(ended_at, started_at) < ? "
                    "and status != 'running'",
                    [before],
                )
            ]
            conn.execute("create temp table if not exists _pruned (span_id text primary key)")
            conn.execute("delete from _pruned")
            for i in range(0, len(old), 500):
                part = old[i : i + 500]
                marks = ",".join("?" * len(part))
                conn.execute(f"insert into _pruned select span_id from spans where run_id in ({marks})", part)
            conn.execute(
                "insert or ignore into _pruned select span_id from spans where end_ns < ? "
                "and (run_id is null or run_id not in (select run_id from runs))",
                [cut_ns],
            )
            days = [
                int(d)
                for (d,) in conn.execute(
                    f"select distinct start_ns / {day} from spans "
                    "where span_id in (select span_id from _pruned)"
                )
            ]
            spans = conn.execute("delete from spans where span_id in (select span_id from _pruned)").rowcount
            for i in range(0, len(old), 500):
                part = old[i : i + 500]
                conn.execute(f"delete from runs where run_id in ({','.join('?' * len(part))})", part)
            graphs = dict(conn.execute("select run_id, graph from runs").fetchall())
            for d in days:  # those days' roll-ups again, from the spans kept
                conn.execute("delete from rollups where day = ?", [d])
                conn.execute("delete from rollup_hist where day = ?", [d])
                cur = conn.execute(
                    "select * from spans where start_ns >= ? and start_ns < ?", [d * day, (d + 1) * day]
                )
                names = [c[0] for c in cur.description]
                while chunk := cur.fetchmany(5000):
                    _add_rollups(conn, [dict(zip(names, r, strict=True)) for r in chunk], graphs)
            conn.execute("delete from _pruned")
        return len(old), spans

    # --- reading ---------------------------------------------------------------------------------------
    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Most recent runs first."""
        self.mark_interrupted()
        sql = "select * from runs order by started_at desc limit ?"
        return self._query(sql, [limit])

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run row, by full id or unique prefix (a `ConfigError` if the prefix fits several runs)."""
        self.mark_interrupted()
        exact = self._query("select * from runs where run_id = ?", [run_id])
        if exact:
            return exact[0]
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._query(
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
        rows = self._query(
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
            with self.guard(), self._lock, self.db.conn:
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
                    self.db.execute(
                        f"update runs set {sets} where run_id = ? and status = 'running'",
                        [*fields.values(), run_id],
                    )
        except (OSError, sqlite3.Error):  # a full disk: reading goes on; the next read marks them
            return []  # (a damaged file raised TraceStoreDamaged through the guard)
        return [r["run_id"] for r in dead]

    def run_spans(self, run_id: str) -> list[dict[str, Any]]:
        """All spans of a run, in start order."""
        return self._query("select * from spans where run_id = ? order by start_ns", [run_id])

    def spans(self, where: str = "1=1", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Span rows matching a SQL condition."""
        return self._query(f"select * from spans where {where}", list(params))

    def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self.guard(), self._lock:
            cur = self.db.execute(sql, params)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def run_totals(ledger: Ledger) -> dict[str, Any]:
    """A run row's totals, from its ledger (as the runner writes them at a run's end)."""
    return {
        "cost_usd": ledger.cost_usd,
        "unpriced_calls": ledger.unpriced_calls,
        "input_tokens": ledger.input_tokens,
        "output_tokens": ledger.output_tokens,
        "compute_ms": sum(line["compute_ms"] or 0.0 for line in ledger.lines),
    }


def _up_to_date(conn: sqlite3.Connection) -> bool:
    """Whether a store file is in WAL mode with every migration applied (read only: no lock needed)."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return False
    try:
        done = {name for (name,) in conn.execute("select name from _migrations")}
    except sqlite3.OperationalError:  # no _migrations table yet
        return False
    return all(fn.__name__ in done for fn in MIGRATIONS)


@contextlib.contextmanager
def _exclusive(lock_path: str) -> Iterator[None]:
    """Hold an exclusive lock on a lock file beside the store, across processes (POSIX; elsewhere none).
    A separate file: closing a descriptor of the database file itself would drop SQLite's own locks."""
    try:
        import fcntl
    except ImportError:  # Windows: migrations are still one transaction each
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class _Duplicates(Exception):
    """A batch held spans already stored."""


def decode_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """The span's full attribute map."""
    raw = row.get("attributes")
    return dict(json.loads(raw)) if raw else {}
