"""The index's SQLite file: tools with their content digests and index terms, and their embeddings.

Changed only by named, recorded migrations. The file records the catalog's fingerprint (a hash of every
tool's digest, in order), so opening an unchanged catalog reads the index as it is, and a changed one
re-reads only the tools whose digests changed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MIGRATIONS", "IndexStore"]


def m001_tool_index(db: sqlite3.Connection) -> None:
    db.execute(
        "create table tools (name text primary key, position integer not null, digest text not null, "
        "source text not null, description text not null, parameters text not null, terms text not null)"
    )
    db.execute(
        "create table vectors (name text not null, model text not null, digest text not null, "
        "vector blob not null, primary key (name, model))"
    )
    db.execute("create table meta (key text primary key, value text not null)")


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [m001_tool_index]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; return the names applied now."""
    db.execute("create table if not exists _migrations (name text primary key, applied_at real)")
    done = {row[0] for row in db.execute("select name from _migrations")}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ not in done:
            with db:
                fn(db)
                db.execute("insert into _migrations values (?, ?)", (fn.__name__, time.time()))
            applied.append(fn.__name__)
    return applied


class IndexStore:
    """One index file (or `:memory:`)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        if self.path != ":memory:":
            self.db.execute("pragma journal_mode=wal")
        migrate(self.db)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.db:
            yield self.db

    def meta(self, key: str) -> str | None:
        row = self.db.execute("select value from meta where key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("insert or replace into meta values (?, ?)", (key, value))

    def digests(self) -> dict[str, str]:
        return {n: d for n, d in self.db.execute("select name, digest from tools")}

    def rows(self) -> list[tuple[str, str, str, str, dict[str, Any], dict[str, float]]]:
        """(name, digest, source, description, parameters, terms) in catalog order."""
        return [
            (n, d, s, desc, json.loads(p), json.loads(t))
            for n, d, s, desc, p, t in self.db.execute(
                "select name, digest, source, description, parameters, terms from tools order by position"
            )
        ]

    def vectors(self, model: str) -> dict[str, tuple[str, bytes]]:
        return {
            n: (d, v)
            for n, d, v in self.db.execute(
                "select name, digest, vector from vectors where model = ?", (model,)
            )
        }

    def put_vectors(self, model: str, rows: Iterable[tuple[str, str, bytes]]) -> None:
        self.db.executemany(
            "insert or replace into vectors values (?, ?, ?, ?)", ((n, model, d, v) for n, d, v in rows)
        )
