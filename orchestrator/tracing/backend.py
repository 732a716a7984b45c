"""The trace store's seam between SQLite and PostgreSQL: one `TraceStore`, two small backends.

The store's queries are written once, in the SQL both databases speak, with `?` placeholders (PostgreSQL's
backend turns them into `%s`); upserts are `insert ... on conflict`, results come back as `Result`. What
differs sits behind `Backend`: opening and migrating (`tracing.migrations` for SQLite, `tracing.pg` for
PostgreSQL), writing a batch of spans (SQLite inserts them, PostgreSQL copies them in and keeps those it did
not have, with `returning`), and locking the tables for a prune.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlite_utils

from orchestrator.tracing.migrations import SPAN_COLUMNS, add_rollups

__all__ = ["Backend", "Chunks", "Result", "SqliteBackend"]

Chunks = Iterator[list[dict[str, Any]]]

_INSERT_SPAN = (
    # a span is written once: a second copy (an export retried) is ignored, so the roll-ups count it once
    f"insert or ignore into spans ({', '.join(SPAN_COLUMNS)}) values ({', '.join('?' * len(SPAN_COLUMNS))})"
)


@dataclass(frozen=True)
class Result:
    """A statement's rows (all fetched), their column names, and the rows it changed."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rowcount: int = -1

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


class Backend(Protocol):
    """What the store needs of a database; the caller holds the store's lock around every call."""

    errors: tuple[type[BaseException], ...]  # what a failing read or write raises (a lock, a full disk)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def write_spans(self, rows: Sequence[dict[str, Any]], graphs: dict[str, str]) -> None:
        """Store the spans not stored yet (by span_id) and add those to the roll-ups, in one transaction."""
        ...

    def chunks(self, sql: str, params: Sequence[Any] = (), size: int = 5000) -> Chunks:
        """A big read, a chunk of rows at a time (inside a transaction)."""
        ...

    def lock_for_prune(self) -> None:
        """Inside a prune's transaction: no span is written until it commits."""
        ...

    def close(self) -> None: ...


class SqliteBackend:
    """A store file through sqlite3 (and sqlite-utils for its migrations)."""

    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.db = sqlite_utils.Database(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cur = self.conn.execute(sql, list(params))
        columns = [c[0] for c in cur.description] if cur.description else []
        return Result(columns, cur.fetchall() if columns else [], cur.rowcount)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn:
            yield

    def chunks(self, sql: str, params: Sequence[Any] = (), size: int = 5000) -> Chunks:
        cur = self.conn.execute(sql, list(params))
        names = [c[0] for c in cur.description]
        while chunk := cur.fetchmany(size):
            yield [dict(zip(names, r, strict=True)) for r in chunk]

    def lock_for_prune(self) -> None:
        return None  # a write transaction holds the whole file

    def write_spans(self, rows: Sequence[dict[str, Any]], graphs: dict[str, str]) -> None:
        conn = self.conn
        try:
            with conn:
                cur = conn.executemany(_INSERT_SPAN, [tuple(map(r.get, SPAN_COLUMNS)) for r in rows])
                if cur.rowcount != len(rows):
                    raise _Duplicates  # rolls the batch back; written again below without them
                add_rollups(conn.executemany, rows, graphs)
        except _Duplicates:
            with conn:
                ids = list({r["span_id"] for r in rows})
                known: set[str] = set()
                for i in range(0, len(ids), 500):
                    part = ids[i : i + 500]
                    marks = ",".join("?" * len(part))
                    sql = f"select span_id from spans where span_id in ({marks})"
                    known.update(x for (x,) in conn.execute(sql, part))
                fresh: dict[str, dict[str, Any]] = {}
                for r in rows:
                    if r["span_id"] not in known:
                        fresh.setdefault(r["span_id"], r)
                new = list(fresh.values())
                conn.executemany(_INSERT_SPAN, [tuple(map(r.get, SPAN_COLUMNS)) for r in new])
                add_rollups(conn.executemany, new, graphs)

    def close(self) -> None:
        self.conn.close()


class _Duplicates(Exception):
    """A batch held spans already stored."""
