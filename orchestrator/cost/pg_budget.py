"""One spending cap across a fleet: `SharedBudget`'s interface, kept in PostgreSQL (the postgres extra).

`Budget(shared=PostgresBudget(url, name="daily", usd=5.0))` draws every run of every process on that database
from one cap, as `SharedBudget` does within a process: each call reserves its worst case before it starts
(`BudgetMeter.hold`) and is charged what it cost when it ends, so spend never passes the cap.

Tables (created on first use, one process at a time, beside the checkpoints):

    orch_budgets       name, usd, tokens, spent_usd, spent_tokens, held_usd, held_tokens, period
    orch_budget_holds  id, name, owner, tokens, usd, at            one row per reservation in flight

* `reserve` is one statement: an `update` of the budget's row (its row lock orders racing processes, and
  PostgreSQL checks the condition again on the row a racing update left) that adds the worst case to `held_*`
  only if spent + held + worst case fits, and inserts the reservation's row with its owner. `release`,
  `charge` and `release_owner` are one statement each. A refused call costs one more read, for the reason.
* A reservation's owner is this process (`host:pid:random`, or the `owner=` given, e.g. a worker's id). The
  reservations of an owner that died stay held, so they **count as spent until its runs are recovered**:
  whoever recovers them calls `release_owner(owner)` (`owners()` lists those holding reservations).
* The caps live in the database. A process that opens a name with other caps than the database holds gets
  a `ConfigError` naming both; `set_caps` changes them for every process.
* `reset()` starts a new period for everyone: spent goes back to zero, reservations in flight stay held.
* The connection is synchronous, like `SharedBudget`'s lock: a reservation takes one round trip on the
  caller's thread (the event loop's, in a run: see bench/results/fleet_limits.md for what a call's three
  statements cost). One connection per `PostgresBudget`: open one per name and process, and share it.
* A connection lost mid-statement is opened again and the statement sent again, once. A reservation whose
  commit was not acknowledged may so be held twice: the extra one stays held (never an overspend) until
  `release_owner` of this process's owner lets it go.
"""

from __future__ import annotations

import math
import numbers
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator._version import DIST_NAME
from orchestrator.cost.ledger import over_cap
from orchestrator.errors import ConfigError
from orchestrator.locations import one_line, redact

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresBudget"]

T = TypeVar("T")
_LOCK = 0x6F726267  # an advisory lock id ("orbg"): one process at a time creates the tables
_SCHEMA = (
    "create table if not exists orch_budgets (name text primary key, usd double precision, tokens bigint, "
    "spent_usd double precision not null default 0, spent_tokens bigint not null default 0, "
    "held_usd double precision not null default 0, held_tokens bigint not null default 0, "
    "period integer not null default 0)",
    "create table if not exists orch_budget_holds (id bigserial primary key, name text not null, "
    "owner text not null, tokens bigint not null, usd double precision, at timestamptz not null "
    "default clock_timestamp())",
    "create index if not exists orch_budget_holds_owner on orch_budget_holds (owner)",
)
_RESERVE = """
with b as (
    update orch_budgets
    set held_tokens = held_tokens + %(t)s::bigint, held_usd = held_usd + coalesce(%(u)s::float8, 0)
    where name = %(name)s
      and (tokens is null or spent_tokens + held_tokens + %(t)s::bigint <= tokens)
      and (usd is null or %(u)s::float8 is null or spent_usd + held_usd + %(u)s::float8 <= usd)
    returning name
)
insert into orch_budget_holds (name, owner, tokens, usd)
select name, %(owner)s, %(t)s::bigint, %(u)s::float8 from b
returning id
"""
_RELEASE = """
with d as (delete from orch_budget_holds where id = %(id)s returning name, tokens, usd)
update orch_budgets b set held_tokens = greatest(0, b.held_tokens - d.tokens),
    held_usd = greatest(0, b.held_usd - coalesce(d.usd, 0))
from d where b.name = d.name
"""
_RELEASE_OWNER = """
with d as (delete from orch_budget_holds where owner = %(owner)s returning name, tokens, usd),
s as (select name, count(*) n, sum(tokens) t, sum(coalesce(usd, 0)) u from d group by name)
update orch_budgets b set held_tokens = greatest(0, b.held_tokens - s.t),
    held_usd = greatest(0, b.held_usd - s.u)
from s where b.name = s.name
returning s.n
"""
_CHARGE = (
    "update orch_budgets set spent_tokens = spent_tokens + %(t)s::bigint, "
    "spent_usd = spent_usd + coalesce(%(u)s::float8, 0) where name = %(name)s"
)
_RESET = "update orch_budgets set spent_usd = 0, spent_tokens = 0, period = period + 1 where name = %s"
_CAPS = "update orch_budgets set usd = %s, tokens = %s where name = %s"
_ROW = "select usd, tokens, spent_usd, spent_tokens, held_usd, held_tokens from orch_budgets where name = %s"


def _check(name: str, value: object, *, whole: bool) -> None:
    if value is None:
        return
    kind = "a whole number" if whole else "a finite number"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or (whole and not isinstance(value, numbers.Integral))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"PostgresBudget({name}={value!r}): give {kind}, 0 or more, or None for no limit")


class PostgresBudget:
    """A spending cap that every process on one PostgreSQL database draws from (see the module docstring).

    Example:
        >>> daily = PostgresBudget("postgresql://orch@db/orch", name="daily", usd=5.0)  # doctest: +SKIP
        >>> Budget(usd=0.05, shared=daily)  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        name: str = "shared",
        usd: float | None = None,
        tokens: int | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        _check("usd", usd, whole=False)
        _check("tokens", tokens, whole=True)
        if not isinstance(name, str) or not name:
            raise ValueError(f"PostgresBudget(name={name!r}): give a non-empty name, e.g. 'daily'")
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                f"budget {name!r} in {redact(url)!r} needs PostgreSQL support, which is not installed "
                f"({exc.name or exc}); pip install '{DIST_NAME}[postgres]'"
            ) from None
        self._psycopg = psycopg
        self.url, self.name = url, name
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._usd, self._tokens = None if usd is None else float(usd), tokens
        self._holds: dict[tuple[int, float | None], list[int]] = {}  # reservation ids by (tokens, usd)
        self._lock = threading.Lock()
        self._conn = self._open()
        with self._lock, self._conn.transaction():
            self._conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute(
                "insert into orch_budgets (name, usd, tokens) values (%s, %s, %s) on conflict do nothing",
                (name, self._usd, tokens),
            )
            row = self._conn.execute(_ROW, (name,)).fetchone()
        assert row is not None
        if (row[0], row[1]) != (self._usd, tokens):
            self._conn.close()
            raise ConfigError(
                f"budget {name!r} in {redact(url)!r} has usd={row[0]!r}, tokens={row[1]!r} in the database, "
                f"not usd={usd!r}, tokens={tokens!r}: give every process the same caps, or change them for "
                f"all with PostgresBudget(...).set_caps(usd=..., tokens=...)"
            )

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            conn: psycopg.Connection[tuple[Any, ...]] = self._psycopg.connect(self.url, autocommit=True)
        except self._psycopg.Error as exc:
            raise ConfigError(
                f"budget {self.name!r}: cannot use PostgreSQL at {redact(self.url)!r}: {one_line(exc)}; "
                "start the server or point the budget at one that runs"
            ) from None
        return conn

    def _run(self, work: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """`work` on the connection, under the lock; a dropped connection is opened again, once."""
        with self._lock:
            for again in (True, False):
                if self._conn.closed:
                    self._conn = self._open()
                try:
                    return work(self._conn)
                except self._psycopg.OperationalError as exc:
                    self._conn.close()
                    if not again:
                        raise ConfigError(
                            f"budget {self.name!r}: lost PostgreSQL at {redact(self.url)!r}: "
                            f"{one_line(exc)}; check that the server runs"
                        ) from None
        raise AssertionError("unreachable")

    # --- the caps, and what is spent (read from the database) ---------------------------------------
    @property
    def usd(self) -> float | None:
        return self._usd

    @property
    def tokens(self) -> int | None:
        return self._tokens

    def _row(self) -> tuple[Any, ...]:
        row = self._run(lambda c: c.execute(_ROW, (self.name,)).fetchone())
        if row is None:
            raise ConfigError(f"budget {self.name!r} is gone from {redact(self.url)!r}: open it again")
        return row

    @property
    def spent_usd(self) -> float:
        return float(self._row()[2])

    @property
    def spent_tokens(self) -> int:
        return int(self._row()[3])

    def held(self) -> tuple[int, float]:
        """Tokens and dollars reserved now, by every process (dead owners' included)."""
        row = self._row()
        return int(row[5]), float(row[4])

    def set_caps(self, usd: float | None, tokens: int | None) -> None:
        """Change the caps for every process that uses this budget (each sees them at its next open)."""
        _check("usd", usd, whole=False)
        _check("tokens", tokens, whole=True)
        self._usd, self._tokens = None if usd is None else float(usd), tokens
        self._run(lambda c: c.execute(_CAPS, (self._usd, tokens, self.name)))

    # --- SharedBudget's interface -------------------------------------------------------------------
    def reserve(self, tokens: int, usd: float | None) -> str | None:
        """Hold a call's worst case; if it would break the cap, hold nothing and return why."""
        params = {"name": self.name, "owner": self.owner, "t": tokens, "u": usd}
        for _ in range(3):
            got = self._run(lambda c: c.execute(_RESERVE, params).fetchone())
            if got is not None:
                with self._lock:
                    self._holds.setdefault((tokens, usd), []).append(int(got[0]))
                return None
            row = self._row()  # refused: why, from the figures now (a release meanwhile: try again)
            spent, held = (int(row[3]), float(row[2])), (int(row[5]), float(row[4]))
            reason = over_cap(self.name, (row[1], row[0]), spent, held, tokens, usd)
            if reason is not None:
                return reason
        return f"{self.name} budget: busy, the reservation did not fit three times in a row"

    def release(self, tokens: int, usd: float | None) -> None:
        """Let go of a reservation this process made (its call ended; what it cost is `charge`d apart)."""
        with self._lock:
            ids = self._holds.get((tokens, usd))
            hold = ids.pop() if ids else None
        if hold is not None:
            self._run(lambda c: c.execute(_RELEASE, {"id": hold}))

    def charge(self, tokens: int, usd: float | None) -> None:
        """Count what a call cost."""
        self._run(lambda c: c.execute(_CHARGE, {"name": self.name, "t": tokens, "u": usd}))

    def reset(self) -> None:
        """Start a new period for every process: spent goes back to zero; reservations in flight stay held."""
        self._run(lambda c: c.execute(_RESET, (self.name,)))

    # --- recovery -----------------------------------------------------------------------------------
    def owners(self) -> dict[str, int]:
        """The owners holding reservations of this budget, with how many each holds."""
        rows = self._run(
            lambda c: c.execute(
                "select owner, count(*) from orch_budget_holds where name = %s group by owner", (self.name,)
            ).fetchall()
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def release_owner(self, owner: str) -> int:
        """Let go of every reservation `owner` holds, in every budget (its runs are being recovered, and
        will reserve again as they go); returns how many there were."""
        rows = self._run(lambda c: c.execute(_RELEASE_OWNER, {"owner": owner}).fetchall())
        if owner == self.owner:
            with self._lock:
                self._holds.clear()
        return sum(int(r[0]) for r in rows)

    def close(self) -> None:
        """Close the connection (reservations still held stay held: `release_owner` lets them go)."""
        with self._lock:
            self._conn.close()
