"""The trace store in PostgreSQL (`ORCH_TRACES=postgresql://...`, the postgres extra): one store for a fleet.

Its tables live in their own schema, `orch_traces` (a database shared with the checkpoints, the ledger or the
application keeps its own `runs`), and are those of the SQLite store: the same migrations by name
(`tracing.migrations` declares their columns once; here they get PostgreSQL's types: text, double
precision, bigint), recorded in `orch_traces._migrations`. A process that opens a store not yet at the
current version takes a transaction-level advisory lock, then applies what is still missing in that one
transaction, so processes starting together on several machines migrate it once.

A batch of spans is one statement (a column's values as one array: `insert ... select * from unnest(...) on
conflict (span_id) do nothing returning span_id`), sent in one round trip with its roll-ups (a pipeline), in
one transaction. If fewer spans came back than were sent (some were stored already: an export retried, or
another process), the transaction is rolled back and the batch written again, the roll-ups of only the spans
that came back: a span is counted once, and the roll-ups' `insert ... on conflict do update` adds, so writers
in many processes keep the sums exact. Commits do not wait for the disk (`synchronous_commit = off`, this
connection only).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator._version import DIST_NAME
from orchestrator.errors import ConfigError
from orchestrator.locations import one_line, redact, unreachable
from orchestrator.tracing import rollups
from orchestrator.tracing.backend import Chunks, Result
from orchestrator.tracing.migrations import (
    DROPPED,
    INDEXES,
    M001_RUNS,
    M001_SPANS,
    M002_RUNS,
    M003_SPANS,
    M004_SPANS,
    SPAN_COLUMNS,
    add_rollups,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PG_MIGRATIONS", "SCHEMA", "PostgresBackend", "migrate"]

SCHEMA = "orch_traces"
_LOCK = 0x6F726374  # an advisory lock id ("orct"): one process at a time migrates the trace store
_TYPES = {str: "text", float: "double precision", int: "bigint"}
_CONNECT_TIMEOUT_S = 10


def _psycopg(url: str) -> Any:
    """psycopg, once the postgres extra is known to be installed; else a ConfigError with the fix."""
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"traces {redact(url)!r} need PostgreSQL support, which is not installed "
            f"({exc.name or exc}); pip install '{DIST_NAME}[postgres]'"
        ) from None
    return psycopg


def _sql(text: str) -> str:
    """The store's SQL (`?` placeholders) as psycopg takes it (`%s`; a literal % doubled)."""
    return text.replace("%", "%%").replace("?", "%s")


def _columns(columns: Sequence[tuple[Any, ...]]) -> str:
    return ", ".join(f"{c[0]} {_TYPES[c[1]]}" for c in columns)


def _add_columns(conn: psycopg.Connection[Any], table: str, columns: Sequence[tuple[Any, ...]]) -> None:
    for c in columns:
        conn.execute(f"alter table {table} add column {c[0]} {_TYPES[c[1]]}")


def _indexes(conn: psycopg.Connection[Any], name: str) -> None:
    for table, columns in INDEXES[name]:
        conn.execute(f"create index idx_{table}_{'_'.join(columns)} on {table} ({', '.join(columns)})")


def _from_attributes(conn: psycopg.Connection[Any], columns: Sequence[tuple[str, type, str]]) -> None:
    """Fill new span columns from the JSON attributes of the spans stored before (SQLite's json_extract)."""
    sets = ", ".join(
        f"{column} = (attributes::jsonb ->> '{attr}')::{_TYPES[kind]}" for column, kind, attr in columns
    )
    conn.execute(f"update spans set {sets} where attributes is not null")


def m001_runs_spans(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"create table runs ({_columns(M001_RUNS)}, primary key (run_id))")
    conn.execute(f"create table spans ({_columns(M001_SPANS)}, primary key (span_id))")
    _indexes(conn, "m001_runs_spans")


def m002_run_owner(conn: psycopg.Connection[Any]) -> None:
    _add_columns(conn, "runs", M002_RUNS)


def m003_span_columns(conn: psycopg.Connection[Any]) -> None:
    _add_columns(conn, "spans", M003_SPANS)
    _from_attributes(conn, M003_SPANS)
    _indexes(conn, "m003_span_columns")


def m004_rollups(conn: psycopg.Connection[Any]) -> None:
    _add_columns(conn, "spans", M004_SPANS)
    conn.execute("alter table runs add column compute_ms double precision")
    conn.execute(
        "update runs set compute_ms = (select sum(compute_ms) from spans "
        "where spans.run_id = runs.run_id and kind = 'chat')"
    )
    _from_attributes(conn, M004_SPANS)
    sums = ", ".join(f"{name} double precision not null default 0" for name in rollups.SUMS)
    key = "day bigint not null, graph text not null, dim text not null, key text not null"
    conn.execute(f"create table rollups ({key}, {sums}, primary key (day, graph, dim, key))")
    conn.execute(
        f"create table rollup_hist ({key}, measure text not null, bucket integer not null, "
        "n bigint not null, primary key (day, graph, dim, key, measure, bucket))"
    )
    _indexes(conn, "m004_rollups")
    graphs = {r: g for r, g in conn.execute("select run_id, graph from runs")}
    backend = _Plain(conn)
    for chunk in backend.chunks("select * from spans"):
        add_rollups(backend.executemany, chunk, graphs)


def m005_one_kind_index(conn: psycopg.Connection[Any]) -> None:
    for name in DROPPED["m005_one_kind_index"]:
        conn.execute(f"drop index if exists {name}")
    _indexes(conn, "m005_one_kind_index")


_SPAN_TYPES: dict[str, type] = {
    **dict(M001_SPANS),
    **{c: t for c, t, _ in M003_SPANS},
    **{c: t for c, t, _ in M004_SPANS},
}
_ARRAYS = {str: "text[]", float: "float8[]", int: "int8[]"}
# a batch as one array per column (one statement, however many spans), in span_id order: two writers
# meeting on the same ids lock them in one order
_INSERT_SPANS = (
    f"insert into spans ({', '.join(SPAN_COLUMNS)}) select * from unnest("
    + ", ".join(f"%s::{_ARRAYS[_SPAN_TYPES[c]]}" for c in SPAN_COLUMNS)
    + ") order by 1 on conflict (span_id) do nothing returning span_id"
)
_UPSERT_ROLLUPS = (
    f"insert into rollups (day, graph, dim, key, {', '.join(rollups.SUMS)}) select * from unnest("
    "%s::int8[], %s::text[], %s::text[], %s::text[], "
    + ", ".join("%s::float8[]" for _ in rollups.SUMS)
    + ") on conflict (day, graph, dim, key) do update set "
    + ", ".join(f"{n} = rollups.{n} + excluded.{n}" for n in rollups.SUMS)
)
_UPSERT_HIST = (
    "insert into rollup_hist (day, graph, dim, key, measure, bucket, n) select * from unnest("
    "%s::int8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int4[], %s::int8[]) "
    "on conflict (day, graph, dim, key, measure, bucket) do update set n = rollup_hist.n + excluded.n"
)


def _span_arrays(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Span rows as one list per column, each value of its column's type."""
    out = []
    for column in SPAN_COLUMNS:
        kind = _SPAN_TYPES[column]
        out.append([None if (v := r.get(column)) is None else kind(v) for r in rows])
    return out


class _Duplicates(Exception):
    """A batch held spans already stored."""


# the SQLite migrations, by name, in PostgreSQL (a test holds the two lists to the same names)
PG_MIGRATIONS = [m001_runs_spans, m002_run_owner, m003_span_columns, m004_rollups, m005_one_kind_index]


def _done(conn: psycopg.Connection[Any]) -> set[str] | None:
    """The migrations recorded (None: no store in this database yet)."""
    found = conn.execute("select to_regclass(%s)", (f"{SCHEMA}._migrations",)).fetchone()
    if found is None or found[0] is None:
        return None
    return {name for (name,) in conn.execute("select name from _migrations")}


def migrate(conn: psycopg.Connection[Any], upto: int | None = None) -> list[str]:
    """Apply the pending migrations (the first `upto` of them, for tests), in one transaction under an
    advisory lock; return the names applied now."""
    wanted = PG_MIGRATIONS[:upto]
    done = _done(conn)
    if done is not None and all(fn.__name__ in done for fn in wanted):
        return []
    applied = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(f"create schema if not exists {SCHEMA}")
        conn.execute(
            "create table if not exists _migrations (name text primary key, applied_at double precision)"
        )
        done = {name for (name,) in conn.execute("select name from _migrations")}
        for fn in wanted:
            if fn.__name__ not in done:
                fn(conn)
                conn.execute("insert into _migrations values (%s, %s)", (fn.__name__, time.time()))
                applied.append(fn.__name__)
    return applied


class _Plain:
    """Statements on a psycopg connection, as the store writes them (`?` placeholders)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cur = self.conn.execute(_sql(sql), list(params))
        columns = [c.name for c in cur.description] if cur.description else []
        return Result(columns, cur.fetchall() if columns else [], cur.rowcount)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_sql(sql), rows)

    def chunks(self, sql: str, params: Sequence[Any] = (), size: int = 5000) -> Chunks:
        with self.conn.cursor(name=f"orch_chunks_{id(self)}") as cur:  # a server-side cursor: not all at once
            cur.execute(_sql(sql), list(params))
            while chunk := cur.fetchmany(size):
                names = [c.name for c in cur.description or []]
                yield [dict(zip(names, r, strict=True)) for r in chunk]


class PostgresBackend(_Plain):
    """A trace store in a PostgreSQL database: one connection, reopened when the server dropped it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg = _psycopg(url)
        self.errors: tuple[type[BaseException], ...] = (OSError, self._pg.Error)
        super().__init__(self._open())
        try:
            migrate(self.conn)
        except self._pg.Error as exc:
            self.conn.close()
            raise ConfigError(
                f"trace store {redact(url)!r}: cannot make its tables (schema {SCHEMA}): {one_line(exc)}; "
                f"grant its user CREATE on the database, or point ORCH_TRACES at one where it may"
            ) from None
        except BaseException:
            self.conn.close()
            raise

    def _open(self) -> psycopg.Connection[Any]:
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = conninfo_to_dict(self.url)
        except Exception as exc:
            raise ConfigError(f"traces {redact(self.url)!r}: not a valid PostgreSQL URL: {exc}") from None
        timeout = {} if "connect_timeout" in given else {"connect_timeout": _CONNECT_TIMEOUT_S}
        try:
            conn = self._pg.connect(self.url, autocommit=True, **timeout)
            conn.execute(f"set search_path to {SCHEMA}")
            # a commit does not wait for its WAL to reach the disk (this connection only): a crash of the
            # server may lose the last moment's spans, never mix up the rest, as SQLite's synchronous=NORMAL
            # in WAL mode; waiting cost some 3 ms a batch, most of the ingest time
            conn.execute("set synchronous_commit to off")
        except self._pg.Error as exc:
            raise unreachable(self.url, exc, setting="traces") from None
        return conn  # type: ignore[no-any-return]

    def _ready(self) -> None:
        if self.conn.closed or self.conn.broken:
            self.conn = self._open()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        self._ready()
        return super().execute(sql, params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._ready()
        with self.conn.transaction():
            yield

    def lock_for_prune(self) -> None:
        # writers take row-exclusive locks on these: they wait, and the days summed again stay exact
        self.conn.execute("lock table spans, rollups, rollup_hist in exclusive mode")

    def write_spans(self, rows: Sequence[dict[str, Any]], graphs: dict[str, str]) -> None:
        fresh: dict[str, dict[str, Any]] = {}
        for r in rows:
            fresh.setdefault(r["span_id"], r)  # the first copy of a span given twice, as SQLite keeps it
        spans = _span_arrays(list(fresh.values()))
        for attempt in range(5):
            try:
                self._ready()
                try:
                    # sent at once, in one round trip (a pipeline): the spans, and their roll-ups as if every
                    # span were new; if some were stored already, rolled back and done below without them
                    with self.conn.pipeline() as pipe, self.conn.transaction(), self.conn.cursor() as cur:
                        cur.execute(_INSERT_SPANS, spans)
                        self._upsert(list(fresh.values()), graphs)
                        pipe.sync()
                        if len(cur.fetchall()) != len(fresh):
                            raise _Duplicates
                except _Duplicates:
                    with self.conn.transaction(), self.conn.cursor() as cur:
                        cur.execute(_INSERT_SPANS, spans)
                        stored = {x for (x,) in cur.fetchall()}
                        self._upsert([r for i, r in fresh.items() if i in stored], graphs)
                return
            except self._pg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _upsert(self, rows: list[dict[str, Any]], graphs: dict[str, str]) -> None:
        """Add span rows to the roll-ups: two statements, whatever the rows (arrays, in key order)."""
        sums, hist = rollups.summarize(rows, graphs)
        if sums:
            ordered = sorted(sums.items())
            keys = list(zip(*(k for k, _ in ordered), strict=True))
            values = list(zip(*(v for _, v in ordered), strict=True))
            self.conn.execute(_UPSERT_ROLLUPS, [list(c) for c in (*keys, *values)])
        if hist:
            ordered_hist = sorted(hist.items())
            columns = list(zip(*((*k, n) for k, n in ordered_hist), strict=True))
            self.conn.execute(_UPSERT_HIST, [list(c) for c in columns])

    def close(self) -> None:
        self.conn.close()
