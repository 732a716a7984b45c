"""The trace store's schema, as named migrations (`m001_runs_spans`, ...), recorded in `_migrations`.

The columns each migration adds are declared once here, as (name, Python type) pairs: the SQLite migrations
below create them through sqlite-utils, and the PostgreSQL ones (`tracing.pg`) translate the same pairs to
its types, so both stores have the same tables, columns (in the same order) and indexes. The roll-up upserts
are one statement for both (`?` placeholders; `tracing.pg` turns them into `%s`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlite_utils

from orchestrator.tracing import attrs as A
from orchestrator.tracing import rollups

__all__ = [
    "DROPPED",
    "INDEXES",
    "M001_RUNS",
    "M001_SPANS",
    "M002_RUNS",
    "M003_SPANS",
    "M004_SPANS",
    "MIGRATIONS",
    "SPAN_COLUMNS",
    "UPSERT_HIST",
    "UPSERT_ROLLUP",
    "add_rollups",
    "migrate",
]

Migration = Callable[[sqlite_utils.Database], None]
Columns = tuple[tuple[str, type], ...]

M001_RUNS: Columns = (
    ("run_id", str),
    ("graph", str),
    ("status", str),
    ("started_at", float),
    ("ended_at", float),
    ("duration_ms", float),
    ("cost_usd", float),
    ("unpriced_calls", int),
    ("input_tokens", int),
    ("output_tokens", int),
    ("answer", str),
    ("error", str),
    ("config_hash", str),
    ("version", str),
)
M001_SPANS: Columns = (
    ("span_id", str),
    ("trace_id", str),
    ("parent_id", str),
    ("run_id", str),
    ("name", str),
    ("kind", str),
    ("node", str),
    ("model", str),
    ("tool", str),
    ("role", str),
    ("action", str),
    ("start_ns", int),
    ("end_ns", int),
    ("duration_ms", float),
    ("status", str),
    ("status_message", str),
    ("input_tokens", int),
    ("output_tokens", int),
    ("cache_read_tokens", int),
    ("cache_write_tokens", int),
    ("cost_usd", float),
    ("ttft_ms", float),
    ("attributes", str),
)
M002_RUNS: Columns = (("host", str), ("pid", int), ("pid_started", int))
# the span columns m003 and m004 add, and the span attribute each is read from (for spans stored before)
M003_SPANS: tuple[tuple[str, type, str], ...] = (
    ("slot", str, A.SLOT),
    ("provider", str, A.PROVIDER),
    ("compute_ms", float, A.COMPUTE_MS),
    ("cache_write_1h_tokens", int, A.CACHE_WRITE_1H),
    ("reasoning_tokens", int, A.REASONING),
    ("tokens_per_s", float, A.TOKENS_PER_S),
)
M004_SPANS: tuple[tuple[str, type, str], ...] = (
    ("node_path", str, A.NODE_PATH),
    ("repairs", int, A.WORKER_REPAIRS),
    ("escalations", int, A.WORKER_ESCALATIONS),
)
# each migration's indexes: (table, columns); named as sqlite-utils names them, idx_<table>_<columns>
INDEXES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "m001_runs_spans": (
        ("spans", ("run_id", "start_ns")),
        ("spans", ("kind", "node")),
        ("runs", ("started_at",)),
    ),
    "m003_span_columns": (
        ("spans", ("kind", "model")),
        ("spans", ("kind", "tool")),
        ("spans", ("kind", "slot")),
    ),
    "m004_rollups": (("spans", ("start_ns",)),),
    "m005_one_kind_index": (("spans", ("kind",)),),
}
# indexes a later migration dropped: (the migration, the index names)
DROPPED: dict[str, tuple[str, ...]] = {
    "m005_one_kind_index": tuple(f"idx_spans_kind_{c}" for c in ("node", "model", "tool", "slot")),
}


def _indexes(db: sqlite_utils.Database, name: str) -> None:
    for table, columns in INDEXES[name]:
        db.table(table).create_index(list(columns))


def m001_runs_spans(db: sqlite_utils.Database) -> None:
    """Runs (written at start, so a killed run is still listed) and spans (one row per ended span)."""
    db.table("runs").create(dict(M001_RUNS), pk="run_id")
    db.table("spans").create(dict(M001_SPANS), pk="span_id")
    _indexes(db, "m001_runs_spans")


def m002_run_owner(db: sqlite_utils.Database) -> None:
    """The process that runs a run (host, pid and its start time), so a run whose process died is detected."""
    runs = db.table("runs")
    for column, kind in M002_RUNS:
        runs.add_column(column, kind)


def m003_span_columns(db: sqlite_utils.Database) -> None:
    """What the cost reports read, as columns: the slot and provider of a model call, its compute time, and
    every kind of token (so stored calls can be priced again). Spans stored before are filled in from their
    attributes; indexes for the reports' groupings."""
    spans = db.table("spans")
    for column, kind, _ in M003_SPANS:
        spans.add_column(column, kind)
    sets = ", ".join(f"{column} = json_extract(attributes, '$.\"{attr}\"')" for column, _, attr in M003_SPANS)
    db.execute(f"update spans set {sets} where attributes is not null")
    _indexes(db, "m003_span_columns")


def m004_rollups(db: sqlite_utils.Database) -> None:
    """Roll-ups written at ingest (`tracing.rollups`): per day, graph, and node, model, slot or tool, the
    sums the cost reports read instead of every span, and histograms for their percentiles. A span's node
    path (a subgraph's node under its parent's) and a worker's repairs and escalations become columns.
    Filled in for the spans already stored."""
    spans = db.table("spans")
    for column, kind, _ in M004_SPANS:
        spans.add_column(column, kind)
    db.table("runs").add_column("compute_ms", float)  # a run's model compute time, beside its cost
    db.execute(
        "update runs set compute_ms = (select sum(compute_ms) from spans "
        "where spans.run_id = runs.run_id and kind = 'chat')"
    )
    sets = ", ".join(f"{column} = json_extract(attributes, '$.\"{attr}\"')" for column, _, attr in M004_SPANS)
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
    _indexes(db, "m004_rollups")
    graphs = dict(db.execute("select run_id, graph from runs").fetchall())
    cur = db.execute("select * from spans")
    names = [c[0] for c in cur.description]
    while chunk := cur.fetchmany(5000):
        add_rollups(db.conn.executemany, [dict(zip(names, r, strict=True)) for r in chunk], graphs)


def m005_one_kind_index(db: sqlite_utils.Database) -> None:
    """One index on a span's kind instead of four on (kind, node / model / tool / slot). The reports read
    the roll-ups; the SQL recipes of `orch traces` find a kind's spans through it about as fast (100,000
    spans: 0.9-1.4x the time, each under 110 ms), and every span written touches three b-trees fewer
    (ingest with one producer: ~20,000 spans/s -> ~22,300)."""
    for name in DROPPED["m005_one_kind_index"]:
        db.execute(f"drop index if exists {name}")
    _indexes(db, "m005_one_kind_index")


def add_rollups(
    executemany: Callable[[str, list[tuple[Any, ...]]], Any],
    rows: Sequence[dict[str, Any]],
    graphs: dict[str, str],
) -> None:
    """Sum span rows into the roll-up tables (inside the caller's transaction). The rows are upserted in key
    order: two PostgreSQL writers adding to the same keys then lock them in the same order (no deadlock)."""
    sums, hist = rollups.summarize(rows, graphs)
    if sums:
        executemany(UPSERT_ROLLUP, [(*k, *v) for k, v in sorted(sums.items())])
    if hist:
        executemany(UPSERT_HIST, [(*k, n) for k, n in sorted(hist.items())])


# the old value is named by its table (`rollups.spans`): PostgreSQL reads a bare name as ambiguous
UPSERT_ROLLUP = (
    f"insert into rollups (day, graph, dim, key, {', '.join(rollups.SUMS)}) "
    f"values (?, ?, ?, ?, {', '.join('?' * len(rollups.SUMS))}) "
    "on conflict (day, graph, dim, key) do update set "
    + ", ".join(f"{n} = rollups.{n} + excluded.{n}" for n in rollups.SUMS)
)
UPSERT_HIST = (
    "insert into rollup_hist (day, graph, dim, key, measure, bucket, n) values (?, ?, ?, ?, ?, ?, ?) "
    "on conflict (day, graph, dim, key, measure, bucket) do update set n = rollup_hist.n + excluded.n"
)


MIGRATIONS: list[Migration] = [
    m001_runs_spans,
    m002_run_owner,
    m003_span_columns,
    m004_rollups,
    m005_one_kind_index,
]

SPAN_COLUMNS = (
    *(column for column, _ in M001_SPANS),
    *(column for column, _, _ in M003_SPANS),
    *(column for column, _, _ in M004_SPANS),
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


def up_to_date(conn: sqlite3.Connection) -> bool:
    """Whether a store file is in WAL mode with every migration applied (read only: no lock needed)."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return False
    try:
        done = {name for (name,) in conn.execute("select name from _migrations")}
    except sqlite3.OperationalError:  # no _migrations table yet
        return False
    return all(fn.__name__ in done for fn in MIGRATIONS)


@contextlib.contextmanager
def exclusive(lock_path: str) -> Iterator[None]:
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
