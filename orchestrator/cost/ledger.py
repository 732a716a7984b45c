"""The cost ledger: one entry per billed call, kept beside the run's checkpoints, for any graph.

Every model or tool call that a run pays for becomes a `LedgerEntry` the moment it ends, through the run's
`BudgetMeter`, which also writes it to the `LedgerBook` (a table in the checkpoint database: a `SqliteLedger`
or a `PostgresLedger`, whichever the run's checkpoints use; see `orchestrator.run.checkpoints`). The graph's
state needs no ledger key. A resumed run starts from the book, so its totals include every earlier attempt,
and LangGraph does not run a finished node again, so a finished node is never paid twice. `Budget` is
checked before every model call against a worst-case estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import numbers
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Budget",
    "BudgetPool",
    "BudgetStop",
    "Ledger",
    "LedgerBook",
    "LedgerEntry",
    "LedgerLine",
    "LedgerStore",
    "NodeCost",
    "PostgresLedger",
    "SqliteLedger",
    "ledger_delta",
    "merge_ledger",
]

Kind = Literal["model", "tool"]
_log = logging.getLogger("orchestrator.ledger")


class LedgerEntry(TypedDict):
    """One model or tool call, as stored in the checkpointed state."""

    node: str
    kind: Kind
    name: str  # model name or tool name
    role: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    wall_ms: float
    ttft_ms: float | None
    compute_ms: float | None
    attempt: NotRequired[str]  # a worker's "repair" or "escalation" call (absent: a first call)


@dataclass(frozen=True)
class Budget:
    """Per-run limits; `None` means unlimited. A stop returns `status="budget_stop"`, it never raises.

    A value that can't be a limit is a `ValueError` naming it: a negative, nan or infinite number, a
    fractional token count, fewer than 1 step.

    Example:
        >>> Budget(usd=0.05, tokens=20_000, seconds=60, steps=8).usd
        0.05
    """

    usd: float | None = None
    tokens: int | None = None
    seconds: float | None = None
    steps: int | None = None
    shared: BudgetPool | None = None  # a cap this run draws from with others (a service's daily cap)

    def __post_init__(self) -> None:
        _check_limit("Budget", "usd", self.usd, whole=False, least=0)
        _check_limit("Budget", "tokens", self.tokens, whole=True, least=0)
        _check_limit("Budget", "seconds", self.seconds, whole=False, least=0)
        # 1 or more, as the manifest's max_steps: no decision at all can't run anything
        _check_limit("Budget", "steps", self.steps, whole=True, least=1)


def _check_limit(owner: str, name: str, value: object, *, whole: bool, least: int) -> None:
    """A `ValueError` naming the value unless it is None (no limit) or a finite number, `least` or more.

    A negative cap stopped every run with "... > $-1"; nan compared false and meant no cap at all; inf is
    no cap spelled another way, and a wrong one: leave the field unset (None) for that.
    """
    if value is None:
        return
    kind = "a whole number" if whole else "a finite number"
    fix = f"give {kind}, {least} or more, or None for no limit"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}({name}={value!r}): {fix}")
    if (whole and not isinstance(value, numbers.Integral)) or not math.isfinite(value) or value < least:
        raise ValueError(f"{owner}({name}={value!r}): {fix}")


class BudgetPool(Protocol):
    """A cap many runs draw from: `SharedBudget` in one process, `pg_budget.PostgresBudget` across a fleet."""

    name: str

    @property
    def usd(self) -> float | None: ...
    @property
    def tokens(self) -> int | None: ...
    @property
    def spent_usd(self) -> float: ...
    @property
    def spent_tokens(self) -> int: ...

    def reserve(self, tokens: int, usd: float | None) -> str | None:
        """Hold a call's worst case; if it would break the cap, hold nothing and return why."""

    def release(self, tokens: int, usd: float | None) -> None:
        """Let go of a reservation."""

    def charge(self, tokens: int, usd: float | None) -> None:
        """Count what a call cost."""

    def reset(self) -> None:
        """Start a new period."""


def over_cap(
    name: str,
    caps: tuple[int | None, float | None],
    spent: tuple[int, float],
    held: tuple[int, float],
    tokens: int,
    usd: float | None,
) -> str | None:
    """Why a call's worst case (`tokens`, `usd`) breaks a pool's (token, usd) `caps`, given what is `spent`
    and `held`; None when it fits."""
    if caps[0] is not None and spent[0] + held[0] + tokens > caps[0]:
        return f"{name} token budget: {spent[0]} spent + {held[0]} reserved + {tokens} worst case > {caps[0]}"
    if caps[1] is not None and usd is not None and spent[1] + held[1] + usd > caps[1]:
        return (
            f"{name} cost budget: ${spent[1]:.6f} spent + ${held[1]:.6f} reserved + ${usd:.6f} worst case "
            f"> ${caps[1]:g}"
        )
    return None


class SharedBudget:
    """A spending cap that many runs draw from, safe under concurrency (threads and tasks alike).

    Each model call reserves its worst case before it starts and settles at its actual cost when it ends,
    so runs racing for the last cents can't jointly overspend: a call that could break the cap is refused
    (its run ends `budget_stop`). Pass it in each run's `Budget(shared=...)`; `reset()` starts a new period.

    Example:
        >>> daily = SharedBudget(usd=5.0)
        >>> Budget(usd=0.05, shared=daily).shared is daily
        True
    """

    def __init__(self, usd: float | None = None, tokens: int | None = None, name: str = "shared") -> None:
        _check_limit("SharedBudget", "usd", usd, whole=False, least=0)
        _check_limit("SharedBudget", "tokens", tokens, whole=True, least=0)
        self.usd, self.tokens, self.name = usd, tokens, name
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self._held_usd = 0.0
        self._held_tokens = 0
        self._lock = threading.Lock()

    def reserve(self, tokens: int, usd: float | None) -> str | None:
        """Hold a call's worst case; if it would break the cap, hold nothing and return why."""
        with self._lock:
            reason = over_cap(
                self.name,
                (self.tokens, self.usd),
                (self.spent_tokens, self.spent_usd),
                (self._held_tokens, self._held_usd),
                tokens,
                usd,
            )
            if reason is not None:
                return reason
            self._held_tokens += tokens
            self._held_usd += usd or 0.0
            return None

    def release(self, tokens: int, usd: float | None) -> None:
        """Let go of a reservation (its call ended; what it cost is `charge`d apart)."""
        with self._lock:
            self._held_tokens = max(0, self._held_tokens - tokens)
            self._held_usd = max(0.0, self._held_usd - (usd or 0.0))

    def charge(self, tokens: int, usd: float | None) -> None:
        """Count what a call cost."""
        with self._lock:
            self.spent_tokens += tokens
            self.spent_usd += usd or 0.0

    def reset(self) -> None:
        """Start a new period (a new day): spent goes back to zero; reservations in flight stay held."""
        with self._lock:
            self.spent_usd, self.spent_tokens = 0.0, 0


class LedgerLine(TypedDict):
    """Totals for one (node, kind, model-or-tool) in the checkpointed state; merged by `merge_ledger`.

    The state keeps totals, not one row per call, so a checkpoint stays the same size however long a run
    is; the per-call detail lives in the trace store.
    """

    node: str
    kind: Kind
    name: str
    role: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float  # the sum of known costs
    unpriced_calls: int  # calls whose cost is unknown: the total is then a lower bound
    wall_ms: float
    ttft_ms_total: float
    ttft_calls: int
    compute_ms: float
    repairs: NotRequired[int]  # calls that repaired a worker's invalid output (absent before 0.3)
    escalations: NotRequired[int]  # calls that took a worker's task up its chain


def _line(e: LedgerEntry) -> LedgerLine:
    return LedgerLine(
        node=e["node"],
        kind=e["kind"],
        name=e["name"],
        role=e["role"],
        calls=1,
        input_tokens=e["input_tokens"],
        output_tokens=e["output_tokens"],
        cost_usd=e["cost_usd"] or 0.0,
        unpriced_calls=int(e["kind"] == "model" and e["cost_usd"] is None),
        wall_ms=e["wall_ms"],
        ttft_ms_total=e["ttft_ms"] or 0.0,
        ttft_calls=int(e["ttft_ms"] is not None),
        compute_ms=e["compute_ms"] or 0.0,
        repairs=int(e.get("attempt") == "repair"),
        escalations=int(e.get("attempt") == "escalation"),
    )


_SUMMED = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced_calls",
    "wall_ms",
    "ttft_ms_total",
    "ttft_calls",
    "compute_ms",
    "repairs",
    "escalations",
)


def merge_ledger(left: dict[str, LedgerLine], right: dict[str, LedgerLine]) -> dict[str, LedgerLine]:
    """Reducer: add the right side's totals into the left's, key by key (order of first appearance)."""
    out = dict(left)
    for key, line in right.items():
        have = out.get(key)
        if have is None:
            out[key] = line
        else:
            merged = dict(have)
            for f in _SUMMED:
                merged[f] = have.get(f, 0) + line.get(f, 0)  # type: ignore[operator]
            out[key] = merged  # type: ignore[assignment]
    return out


def ledger_delta(entries: list[LedgerEntry]) -> dict[str, LedgerLine]:
    """A node's state update for the calls it made."""
    delta: dict[str, LedgerLine] = {}
    for e in entries:
        delta = merge_ledger(delta, {f"{e['node']}|{e['kind']}|{e['name']}": _line(e)})
    return delta


@dataclass(frozen=True)
class NodeCost:
    """The per-node line of a run's cost table."""

    node: str
    model: str | None
    role: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    unpriced_calls: int
    wall_ms: float
    ttft_ms: float | None
    repairs: int = 0  # a worker's calls that repaired an invalid output
    escalations: int = 0  # a worker's calls up its escalation chain


@dataclass(frozen=True)
class Ledger:
    """A run's ledger: totals and the per-node breakdown."""

    run_id: str
    lines: tuple[LedgerLine, ...]

    @classmethod
    def from_state(cls, run_id: str, state: dict[str, LedgerLine] | None) -> Ledger:
        """The ledger of a checkpointed state."""
        return cls(run_id, tuple((state or {}).values()))

    @classmethod
    def from_entries(
        cls, run_id: str, entries: Sequence[LedgerEntry], legacy: dict[str, LedgerLine] | None = None
    ) -> Ledger:
        """The ledger of a run's entries (after the totals a checkpoint of an earlier version held)."""
        return cls.from_state(run_id, merge_ledger(legacy or {}, ledger_delta(list(entries))))

    @property
    def input_tokens(self) -> int:
        return sum(e["input_tokens"] for e in self.lines)

    @property
    def output_tokens(self) -> int:
        return sum(e["output_tokens"] for e in self.lines)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def unpriced_calls(self) -> int:
        """Model calls whose cost is unknown: the total is then a lower bound."""
        return sum(e["unpriced_calls"] for e in self.lines)

    @property
    def cost_usd(self) -> float | None:
        """Sum of known costs; None if no call had a known price."""
        return _cost(self.lines)

    def by_node(self) -> list[NodeCost]:
        """Aggregate per node (in first-seen order)."""
        groups: dict[str, list[LedgerLine]] = {}
        for e in self.lines:
            groups.setdefault(e["node"], []).append(e)
        rows = []
        for node, es in groups.items():
            models = [e for e in es if e["kind"] == "model"]
            counted = models or es
            ttft_calls = sum(e["ttft_calls"] for e in models)
            rows.append(
                NodeCost(
                    node=node,
                    model=", ".join(sorted({e["name"] for e in models})) or None,
                    role=next((e["role"] for e in models if e["role"]), None),
                    calls=sum(e["calls"] for e in counted),
                    input_tokens=sum(e["input_tokens"] for e in es),
                    output_tokens=sum(e["output_tokens"] for e in es),
                    cost_usd=_cost(es),
                    unpriced_calls=sum(e["unpriced_calls"] for e in es),
                    wall_ms=sum(e["wall_ms"] for e in es),
                    ttft_ms=(sum(e["ttft_ms_total"] for e in models) / ttft_calls) if ttft_calls else None,
                    repairs=sum(e.get("repairs", 0) for e in models),
                    escalations=sum(e.get("escalations", 0) for e in models),
                )
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `--json` output and the trace store)."""
        return {
            "run_id": self.run_id,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "nodes": [n.__dict__ for n in self.by_node()],
        }


def _cost(lines: tuple[LedgerLine, ...] | list[LedgerLine]) -> float | None:
    calls = sum(e["calls"] for e in lines if e["kind"] == "model")
    unpriced = sum(e["unpriced_calls"] for e in lines)
    if calls and unpriced == calls:
        return None
    return sum(e["cost_usd"] for e in lines)


class BudgetMeter:
    """Live spend of one run: what earlier attempts spent plus the calls made since (re)start.

    `add` is where every billed call of a run goes: it counts the call against the budget, keeps it in
    `entries` and hands it to `record` (the ledger book) at once, so a crash loses no cost record.
    """

    def __init__(
        self,
        budget: Budget,
        spent_usd: float = 0.0,
        spent_tokens: int = 0,
        record: Callable[[LedgerEntry], None] | None = None,
    ) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self.started = time.monotonic()
        self.entries: list[LedgerEntry] = []
        self._record = record
        self._lock = threading.Lock()
        self._held_tokens = 0
        self._held_usd = 0.0

    def add(self, entry: LedgerEntry) -> None:
        """Count a finished (billed) call, keep it, and record it durably."""
        tokens = entry["input_tokens"] + entry["output_tokens"]
        with self._lock:
            self.spent_usd += entry["cost_usd"] or 0.0
            self.spent_tokens += tokens
            self.entries.append(entry)
        if self.budget.shared is not None:
            self.budget.shared.charge(tokens, entry["cost_usd"])
        if self._record is not None:
            self._record(entry)

    def time_ends_at(self) -> float | None:
        """When the time budget runs out (`time.monotonic()`), or None when it sets none."""
        seconds = self.budget.seconds
        return None if seconds is None else self.started + seconds

    def refusal(self, est_tokens: int, est_usd: float | None) -> str | None:
        """Why a call with this worst case would break the budget, or None if it fits (nothing is held)."""
        with self._lock:
            return self._refusal(est_tokens, est_usd)

    def _refusal(self, est_tokens: int, est_usd: float | None) -> str | None:
        b = self.budget
        if b.seconds is not None and time.monotonic() - self.started >= b.seconds:
            return f"time budget of {b.seconds:g}s used up"
        held = self._held_tokens
        if b.tokens is not None and self.spent_tokens + held + est_tokens > b.tokens:
            return (
                f"token budget: {self.spent_tokens} spent + {held} reserved + {est_tokens} worst case "
                f"> {b.tokens}"
            )
        held_usd = self._held_usd
        if b.usd is not None and est_usd is not None and self.spent_usd + held_usd + est_usd > b.usd:
            return (
                f"cost budget: ${self.spent_usd:.6f} spent + ${held_usd:.6f} reserved + ${est_usd:.6f} "
                f"worst case > ${b.usd:g}"
            )
        return None

    def left(self, tight: float = 1.0) -> list[str]:
        """What is left of each limit the budget sets, in words (none set: an empty list); with `tight`
        below 1, only the limits of which at most that share is left."""
        b, out = self.budget, []

        def show(left: float, limit: float) -> bool:
            return limit <= 0 or left / limit <= tight

        with self._lock:
            if b.usd is not None:
                usd = max(0.0, b.usd - self.spent_usd - self._held_usd)
                if show(usd, b.usd):
                    out.append(f"${usd:.4f}")
            if b.tokens is not None:
                tokens = max(0, b.tokens - self.spent_tokens - self._held_tokens)
                if show(tokens, b.tokens):
                    out.append(f"{tokens} tokens")
        if b.shared is not None and b.shared.usd is not None:
            shared = max(0.0, b.shared.usd - b.shared.spent_usd)
            if show(shared, b.shared.usd):
                out.append(f"${shared:.4f} of the shared budget")
        if b.seconds is not None:
            seconds = max(0.0, b.seconds - (time.monotonic() - self.started))
            if show(seconds, b.seconds):
                out.append(f"{seconds:.0f} s")
        return out

    @contextlib.contextmanager
    def hold(self, est_tokens: int, est_usd: float | None) -> Iterator[str | None]:
        """Reserve a call's worst case for as long as it runs, in this run and in the shared budget.

        Yields why the call can't be made (then nothing is held), or None. Concurrent calls (parallel
        nodes, other runs on a shared budget) see each other's reservations, so together they can't
        overspend.
        """
        with self._lock:
            reason = self._refusal(est_tokens, est_usd)
            if reason is None and self.budget.shared is not None:
                reason = self.budget.shared.reserve(est_tokens, est_usd)
            if reason is None:
                self._held_tokens += est_tokens
                self._held_usd += est_usd or 0.0
        if reason is not None:
            yield reason
            return
        try:
            yield None
        finally:
            with self._lock:
                self._held_tokens -= est_tokens
                self._held_usd -= est_usd or 0.0
            if self.budget.shared is not None:
                self.budget.shared.release(est_tokens, est_usd)


Row = tuple[str, float, str]  # run id, unix time, the entry as JSON


class LedgerStore(Protocol):
    """Where a `LedgerBook` keeps its rows: the `orch_ledger` table of a SQLite file or a PostgreSQL database.

    `insert` runs on the book's writer thread and may retry (a busy file, a dropped connection); what it
    raises is logged, never lost silently.
    """

    name: str  # where the rows go, for messages (a path, or a URL without its password)

    def insert(self, rows: Sequence[Row]) -> None:
        """Commit rows in one transaction."""

    def select(self, run_id: str) -> list[str]:
        """A run's entries as JSON, in the order they were added."""

    def close(self) -> None:
        """Release the connection."""


class LedgerBook:
    """Every run's ledger entries, one row per billed call, in a table beside the run's checkpoints.

    `add` never blocks the caller (it runs on the event loop): a writer thread commits each entry within
    milliseconds, in order. Reads wait for pending writes first. Entries the store refuses (its disk is full)
    are held in memory and written with the next write that succeeds; those still held at `close` are lost
    (and logged as such). Safe to share between threads; several
    processes (or machines, with PostgreSQL) may write one store. A path means the SQLite store.

    Example:
        >>> import tempfile, os
        >>> book = LedgerBook(os.path.join(tempfile.mkdtemp(), "c.db"))
        >>> book.entries("r1")
        []
        >>> book.close()
    """

    def __init__(self, store: str | Path | LedgerStore) -> None:
        self.store: LedgerStore = SqliteLedger(store) if isinstance(store, str | Path) else store
        self._queue: queue.Queue[Row | Callable[[], None] | None] = queue.Queue()  # rows, flushes' wake-ups
        self._writer = threading.Thread(target=self._write_loop, name="orch-ledger", daemon=True)
        self._writer.start()
        self._closed = False

    def add(self, run_id: str, entry: LedgerEntry) -> None:
        """Append one entry to a run's ledger (committed by the writer thread)."""
        self._queue.put((run_id, time.time(), json.dumps(entry)))

    def flush(self) -> None:
        """Wait until every entry added so far is committed."""
        done = threading.Event()
        self._queue.put(done.set)
        while not done.wait(0.5):
            if not self._writer.is_alive():
                return

    async def aflush(self) -> None:
        """`flush` for an event loop: the writer wakes the loop when it has committed (no thread to wait)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake() -> None:  # on the writer's thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(settle)

        self._queue.put(wake)
        while not done.done():
            await asyncio.wait({done}, timeout=0.5)
            if not self._writer.is_alive():  # closed meanwhile: nothing more will be written
                return

    def entries(self, run_id: str) -> list[LedgerEntry]:
        """A run's entries, in the order they were added."""
        self.flush()
        return [json.loads(r) for r in self.store.select(run_id)]

    def totals(self, run_id: str) -> Ledger | None:
        """A run's ledger from its entries; None when it has none (nothing paid, or the book is elsewhere)."""
        entries = self.entries(run_id)
        return Ledger.from_entries(run_id, entries) if entries else None

    def close(self) -> None:
        """Commit what is pending and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self.store.close()

    def _write_loop(self) -> None:
        unwritten: list[Row] = []  # rows the store refused (a full disk): tried again with every later write
        while True:
            items = [self._queue.get()]
            while not self._queue.empty():  # whatever else is waiting goes in the same transaction
                items.append(self._queue.get_nowait())
            rows = unwritten + [i for i in items if isinstance(i, tuple)]
            if rows:
                try:
                    self.store.insert(rows)
                    if unwritten:
                        _log.warning("ledger: %d held entries written to %s", len(unwritten), self.store.name)
                    unwritten = []
                except Exception as exc:  # the thread must outlive any error, or `flush` would wait for ever
                    closing = None in items  # the last try
                    if closing or not unwritten:
                        _log.error(
                            "ledger: %d entries could not be written to %s: %s%s",
                            len(rows),
                            self.store.name,
                            exc,
                            "; they are lost" if closing else "; held, and tried again with each write",
                        )
                    unwritten = rows
            for item in items:
                if callable(item):
                    item()  # a flush's wake-up, after the rows queued before it are committed
            if None in items:
                return


_CREATE = (
    "create table if not exists orch_ledger ({seq}, run_id text not null, at {real} not null, "
    "entry text not null)",
    "create index if not exists orch_ledger_run on orch_ledger (run_id, seq)",
)
_PG_LOCK = 0x6F72636C  # an advisory lock id ("orcl"): one process at a time creates the table


class SqliteLedger:
    """Ledger rows in a SQLite file (the checkpoint file): several processes may write it."""

    def __init__(self, path: str | Path) -> None:
        from orchestrator.locations import use_wal
        from orchestrator.reserve import reserve_for

        self.name = str(path)
        self.reserve = reserve_for(path)  # a full disk: the row is written in its space, once
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.name, check_same_thread=False, timeout=30.0, isolation_level=None)
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout = 30000")
            use_wal(self._conn)
            # A commit reaches the WAL without waiting for the disk: safe from a crash of the process, and
            # the checkpoint saver's next commit (synchronous=FULL, the same file's WAL) syncs these rows with
            # its own. A power cut can lose only rows committed after a run's last checkpoint; a call is
            # never paid twice for it (the checkpoint decides what runs again). Waiting for the disk at every
            # row cost a run of three calls ~3.5 ms of wall time (a ~12 ms run on a scripted model).
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute(_CREATE[0].format(seq="seq integer primary key autoincrement", real="real"))
            self._conn.execute(_CREATE[1])

    def insert(self, rows: Sequence[Row]) -> None:
        """Insert in one transaction; a busy database is waited for and retried (about a minute)."""

        def write() -> None:
            with self._lock:
                self._conn.execute("begin immediate")  # take the write lock now: the busy wait applies
                try:
                    self._conn.executemany(
                        "insert into orch_ledger (run_id, at, entry) values (?, ?, ?)", rows
                    )
                    self._conn.execute("commit")
                except BaseException:
                    if self._conn.in_transaction:  # SQLite already rolled back after some errors (full)
                        self._conn.execute("rollback")
                    raise

        delay = 0.01
        for attempt in range(60):
            try:
                self.reserve.write(write)
                return
            except sqlite3.OperationalError as exc:
                if attempt == 59 or ("locked" not in str(exc) and "busy" not in str(exc)):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def select(self, run_id: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "select entry from orch_ledger where run_id = ? order by seq", (run_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresLedger:
    """Ledger rows in a PostgreSQL database (the postgres extra), so a run resumed on another machine sees
    what its earlier attempts paid. `connect` goes to `psycopg.connect` (e.g. `connect_timeout`)."""

    def __init__(self, url: str, name: str | None = None, **connect: Any) -> None:
        self.url = url
        self.name = name or url
        self._connect = connect
        self._lock = threading.Lock()
        self._conn = self._open()
        with self._lock, self._conn.transaction():
            self._conn.execute("select pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            self._conn.execute(_CREATE[0].format(seq="seq bigserial primary key", real="double precision"))
            self._conn.execute(_CREATE[1])

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, **self._connect)

    def insert(self, rows: Sequence[Row]) -> None:
        """Insert in one transaction; a dropped connection is reopened and the insert retried (a few times:
        losing a billed call would under-report, which is worse than the rare double row of a lost ack)."""
        import psycopg

        delay = 0.1
        for attempt in range(5):
            try:
                with self._lock:
                    if self._conn.closed:
                        self._conn = self._open()
                    with self._conn.transaction(), self._conn.cursor() as cur:
                        cur.executemany(
                            "insert into orch_ledger (run_id, at, entry) values (%s, %s, %s)", rows
                        )
                return
            except psycopg.OperationalError:
                if attempt == 4:
                    raise
                with self._lock:
                    self._conn.close()  # reopened on the next attempt
                time.sleep(delay)
                delay = min(delay * 4, 5.0)

    def select(self, run_id: str) -> list[str]:
        with self._lock:
            if self._conn.closed:
                self._conn = self._open()
            rows = self._conn.execute(
                "select entry from orch_ledger where run_id = %s order by seq", (run_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class BudgetStop(Exception):
    """Raised inside a node when the next call would break the budget or a run limit; becomes a status."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
