"""The index's SQLite file: tools with their content digests and index terms, their embeddings, and the
requests a model wrote for each tool (expansions) with their embeddings.

Changed only by named, recorded migrations. The file records the catalog's fingerprint (a hash of every
tool's digest, in order), so opening an unchanged catalog reads the index as it is, and a changed one
re-reads only the tools whose digests changed. An expansion is keyed by the tool's name and digest, the
writer's name and the prompt's version: one written for a tool's old content is never read for its new.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.locations import use_wal

__all__ = ["MIGRATIONS", "Expansion", "IndexStore"]


@dataclass(frozen=True)
class Expansion:
    """Requests a writer wrote for one tool, and what writing them cost."""

    requests: tuple[str, ...]
    writer: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0


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


def m002_expansions(db: sqlite3.Connection) -> None:
    # requests: a JSON array of strings. Vectors of a tool's expansion in use: one row per tool and model,
    # `digest` the hash of the requests embedded (re-made when another expansion comes into use)
    db.execute(
        "create table expansions (name text not null, digest text not null, writer text not null, "
        "prompt text not null, requests text not null, input_tokens integer not null, "
        "output_tokens integer not null, seconds real not null, written_at real not null, "
        "primary key (name, digest, writer, prompt))"
    )
    db.execute(
        "create table expansion_vectors (name text not null, model text not null, digest text not null, "
        "vectors blob not null, primary key (name, model))"
    )


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [m001_tool_index, m002_expansions]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; return the names applied now.

    Each is looked for and applied under the file's write lock, in one transaction: processes that open a
    new index at once (a fleet's workers starting together) apply each migration once, the others wait and
    find it done.
    """
    db.execute("create table if not exists _migrations (name text primary key, applied_at real)")
    applied = []
    for fn in MIGRATIONS:
        db.execute("begin immediate")
        try:
            if db.execute("select 1 from _migrations where name = ?", (fn.__name__,)).fetchone() is None:
                fn(db)
                db.execute("insert into _migrations values (?, ?)", (fn.__name__, time.time()))
                applied.append(fn.__name__)
            db.execute("commit")
        except BaseException:
            if db.in_transaction:
                db.execute("rollback")
            raise
    return applied


class IndexStore:
    """One index file (or `:memory:`)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        if self.path != ":memory:":
            use_wal(self.db)  # the switch is refused at once while another process opens the file: retried
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

    # --- expansions -----------------------------------------------------------------------------------
    def expanded(self, writer: str, prompt: str) -> set[tuple[str, str]]:
        """(name, digest) of every tool this writer has written an expansion for with this prompt."""
        return {
            (n, d)
            for n, d in self.db.execute(
                "select name, digest from expansions where writer = ? and prompt = ?", (writer, prompt)
            )
        }

    def put_expansion(self, name: str, digest: str, writer: str, prompt: str, written: Expansion) -> None:
        """Store one tool's expansion; its expansions of other content go (they would never be read)."""
        self.db.execute("delete from expansions where name = ? and digest != ?", (name, digest))
        self.db.execute(
            "insert or replace into expansions values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                digest,
                writer,
                prompt,
                json.dumps(list(written.requests)),
                written.input_tokens,
                written.output_tokens,
                written.seconds,
                time.time(),
            ),
        )

    def expansions(self) -> dict[str, Expansion]:
        """The expansion in use for each tool that has one: the latest written for its current digest."""
        out: dict[str, Expansion] = {}
        for n, w, r, i, o, s in self.db.execute(
            "select e.name, e.writer, e.requests, e.input_tokens, e.output_tokens, e.seconds "
            "from expansions e join tools t on t.name = e.name and t.digest = e.digest "
            "order by e.written_at, e.rowid"
        ):
            out[n] = Expansion(tuple(json.loads(r)), w, i, o, s)
        return out

    def expansion_vectors(self, model: str) -> dict[str, tuple[str, bytes]]:
        return {
            n: (d, v)
            for n, d, v in self.db.execute(
                "select name, digest, vectors from expansion_vectors where model = ?", (model,)
            )
        }

    def put_expansion_vectors(self, model: str, rows: Iterable[tuple[str, str, bytes]]) -> None:
        self.db.executemany(
            "insert or replace into expansion_vectors values (?, ?, ?, ?)",
            ((n, model, d, v) for n, d, v in rows),
        )
