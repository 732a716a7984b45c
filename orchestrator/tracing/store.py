"""The SQLite trace store: runs and spans, written through sqlite-utils, changed only by named migrations."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from orchestrator.errors import ConfigError
from orchestrator.tracing import attrs as A

__all__ = ["MIGRATIONS", "TraceStore", "TraceStoreError", "check_database"]


class TraceStoreError(ConfigError):
    """A store file (traces or checkpoints) can't be opened or written: names the path and the fix."""

    def __init__(
        self, path: str, exc: BaseException, what: str = "trace store", setting: str = "traces"
    ) -> None:
        why = getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            why = "the file is not an SQLite database"
        env = f"ORCH_{setting.upper()}"
        super().__init__(
            f"{what} {path!r}: {why}; point {env} (or --{setting}, or the manifest's {setting}) "
            "at a writable .db file path"
        )


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


MIGRATIONS: list[Migration] = [m001_runs_spans, m002_run_owner, m003_span_columns]

_HOST = socket.gethostname()
_ACTIVE: set[tuple[str, str]] = set()  # (store path, run id) of runs this process is running now


def _process_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart; else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    if pid == os.getpid():
        return False  # our own runs are in _ACTIVE; an older process with our pid is long gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = _process_started(pid)
    return started is None or now is None or now == started


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
)
_INSERT_SPAN = (
    f"insert or replace into spans ({', '.join(SPAN_COLUMNS)}) values ({', '.join('?' * len(SPAN_COLUMNS))})"
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

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._key = self.path if self.path == ":memory:" else os.path.realpath(self.path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                if Path(self.path).is_dir():
                    raise IsADirectoryError(21, "it is a directory")
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            try:
                conn.execute("PRAGMA busy_timeout = 10000")
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
                self.db = sqlite_utils.Database(conn)
                self._lock = threading.Lock()
                with self._lock:
                    migrate(self.db)
            except BaseException:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise TraceStoreError(self.path, exc) from None

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
        owner = {"host": _HOST, "pid": os.getpid(), "pid_started": _process_started(os.getpid())}
        _ACTIVE.add((self._key, run_id))
        with self._lock, self.db.conn:
            existing = self.db.execute("select started_at from runs where run_id = ?", [run_id]).fetchone()
            if existing:
                row["started_at"] = existing[0]
                self.db.table("runs").update(
                    run_id, {"status": "running", "ended_at": None, "error": None, **owner}
                )
            else:
                self.db.table("runs").insert({**row, **owner})

    def end_run(self, run_id: str, **fields: Any) -> None:
        """Record a run's outcome: status, totals, answer, error."""
        _ACTIVE.discard((self._key, run_id))
        with self._lock, self.db.conn:
            started = self.db.execute("select started_at from runs where run_id = ?", [run_id]).fetchone()
            now = time.time()
            fields.setdefault("ended_at", now)
            if started:
                fields.setdefault("duration_ms", (now - started[0]) * 1000)
            self.db.table("runs").update(run_id, fields)

    def write_spans(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert span rows (idempotent on span_id) with one prepared statement: this runs per node."""
        if rows:
            values = [tuple(r.get(c) for c in SPAN_COLUMNS) for r in rows]
            with self._lock, self.db.conn:
                self.db.conn.executemany(_INSERT_SPAN, values)

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
        """Runs left `running` by a process of this host that has ended become `interrupted`; their ids."""
        rows = self._query(
            "select run_id, pid, pid_started from runs where status = 'running' and host = ?", [_HOST]
        )
        dead = [
            r["run_id"]
            for r in rows
            if r["pid"] is not None
            and (self._key, r["run_id"]) not in _ACTIVE
            and not _alive(r["pid"], r["pid_started"])
        ]
        if dead:
            with self._lock, self.db.conn:
                for run_id, pid in ((r["run_id"], r["pid"]) for r in rows if r["run_id"] in dead):
                    self.db.execute(
                        "update runs set status = 'interrupted', error = ? "
                        "where run_id = ? and status = 'running'",
                        [
                            f"its process (pid {pid}) ended before the run did; "
                            f"continue it with `orch run --resume {run_id}`",
                            run_id,
                        ],
                    )
        return dead

    def run_spans(self, run_id: str) -> list[dict[str, Any]]:
        """All spans of a run, in start order."""
        return self._query("select * from spans where run_id = ? order by start_ns", [run_id])

    def spans(self, where: str = "1=1", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Span rows matching a SQL condition."""
        return self._query(f"select * from spans where {where}", list(params))

    def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.db.execute(sql, params)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def decode_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """The span's full attribute map."""
    raw = row.get("attributes")
    return dict(json.loads(raw)) if raw else {}
