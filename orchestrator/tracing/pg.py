"""The trace store in PostgreSQL (`ORCH_TRACES=postgresql://...`, the postgres extra): one store for a fleet.

Its tables live in their own schema, `orch_traces` (a database shared with the checkpoints, the ledger or the
application keeps its own `runs`), and are those of the SQLite store: the same migrations by name
(`tracing.migrations` declares their columns once; here they get PostgreSQL's types: text, double
precision, bigint), recorded in `orch_traces._migrations`. A process that opens a store not yet at the
current version takes a transaction-level advisory lock, then applies what is still missing in that one
transaction, so processes starting together on several machines migrate it once.

A batch of spans is copied into a temporary table (`COPY`), inserted from there with `on conflict (span_id)
do nothing returning span_id`, and only the spans that came back are added to the roll-ups, in the same
transaction: a span written twice (an export retried) or by two processes at once is counted once, and the
roll-ups' `insert ... on conflict do update` adds, so writers in many processes keep the sums exact.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator._version import DIST_NAME
from orchestrator.errors import ConfigError
from orchestrator.locations import redact, unreachable
from orchestrator.tracing import rollups
from orchestrator.tracing.backend import Chunks, Result
from orchestrator.tracing.migrations import (
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


# the SQLite migrations, by name, in PostgreSQL (a test holds the two lists to the same names)
PG_MIGRATIONS = [m001_runs_spans, m002_run_owner, m003_span_columns, m004_rollups]


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
        except self._pg.Error as exc:
            raise unreachable(self.url, exc, setting="traces") from None
        self._incoming = False  # the temporary table a batch is copied into, made once per connection
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
        names = ", ".join(SPAN_COLUMNS)
        for attempt in range(5):
            try:
                with self.transaction():
                    if not self._incoming:
                        self.conn.execute(
                            "create temporary table if not exists _incoming "
                            "(like spans including defaults) on commit delete rows"
                        )
                        self._incoming = True
                    with self.conn.cursor() as cur:
                        with cur.copy(f"copy _incoming ({names}) from stdin") as copy:
                            for r in fresh.values():
                                copy.write_row(tuple(map(r.get, SPAN_COLUMNS)))
                        # in span_id order: two writers meeting on the same ids lock them in one order
                        cur.execute(
                            f"insert into spans ({names}) select {names} from _incoming order by span_id "
                            "on conflict (span_id) do nothing returning span_id"
                        )
                        stored = {x for (x,) in cur.fetchall()}
                    add_rollups(self.executemany, [r for i, r in fresh.items() if i in stored], graphs)
                return
            except BaseException as exc:
                self._incoming = False  # made in a transaction rolled back: gone again
                if not isinstance(exc, self._pg.errors.DeadlockDetected) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def close(self) -> None:
        self.conn.close()
