"""One concurrency cap and one `Retry-After` per model across a fleet of processes, held in PostgreSQL.

`use_fleet_limits(url)` installs a `FleetLimits` under every `ModelState` of the process (see
`http.FleetLimiter`). Before each request the process takes, after its own AIMD slot, one of the model's
`max_concurrency` slots in PostgreSQL, and gives it back after; a 429's `Retry-After` (or an exhausted
rate-limit window) blocks the whole fleet's next requests to that model until the database's clock passes it.

Tables (created on first use, one process at a time, beside the checkpoints):

    orch_fleet_owners  owner, host, pid, beat   one row per process, `beat` refreshed every ttl/5 by a thread
    orch_fleet_slots   key, i, owner, since     rows 0..max_concurrency-1 per "base URL|model"
    orch_fleet_models  key, blocked_until       the fleet-wide block of a model

* A slot is free when it has no owner or its owner's `beat` is older than the TTL. So a process killed with
  SIGKILL (or a machine gone) gives its slots back at most `ttl_s` later, while a live process keeps a slot
  for as long as its request runs (a stream may last minutes: the lease is on the process, not the slot).
  The TTL, 30 s by default, is six beats: a thread starved for a few seconds on a busy machine, or a database
  fail-over of some seconds, does not lose the process its slots, and a dead process costs the fleet its
  slots for 30 s at most. A clean exit (`close`) deletes the owner row: its slots are free at once.
* Every time is the database's clock (`clock_timestamp()`): machines whose clocks disagree agree on it.
* Taking a slot is one statement (`for update skip locked`: racing processes take different rows, none
  waits on another's lock); giving it back is one statement that also `NOTIFY`s the model's key.
* Waiting does not spin: in each process one task per model asks the database at a time (the others wait
  behind it in the process); it asks again when a slot is given back anywhere (`LISTEN`, woken by the
  thread), else after a backoff from 50 ms to 1 s (a slot freed by a dead owner's TTL sends no notice), or,
  when the model is blocked, when the block ends.
* Connections: two per process, whatever its concurrency: the thread's (heartbeat and `LISTEN`) and one
  per event loop for the slots (a worker has one loop). `LISTEN` needs a session: behind PgBouncer, point
  the URL at a session-pooled port.
* Processes that give one model different `max_concurrency` each take only slots below their own cap: the
  fleet never passes the largest cap, nor the requests a process takes part in its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator._version import DIST_NAME
from orchestrator.errors import ConfigError, ProviderError
from orchestrator.locations import one_line, redact
from orchestrator.providers.http import FleetLimiter, ModelState, set_fleet_limiter
from orchestrator.sync import on_loop_end

if TYPE_CHECKING:
    import psycopg

__all__ = ["FleetLimits", "use_fleet_limits"]

_log = logging.getLogger("orchestrator.fleet_limits")
_LOCK = 0x6F72666C  # an advisory lock id ("orfl"): one process at a time creates the tables
_CHANNEL = "orch_fleet"
T = TypeVar("T")

_SCHEMA = (
    "create table if not exists orch_fleet_owners (owner text primary key, host text not null, "
    "pid integer not null, beat timestamptz not null)",
    "create table if not exists orch_fleet_slots (key text not null, i integer not null, owner text, "
    "since timestamptz, primary key (key, i))",
    "create table if not exists orch_fleet_models (key text primary key, "
    "blocked_until timestamptz not null default '-infinity')",
)
_BEAT = (
    "insert into orch_fleet_owners (owner, host, pid, beat) values (%s, %s, %s, clock_timestamp()) "
    "on conflict (owner) do update set beat = excluded.beat"
)
_ENSURE = (
    "insert into orch_fleet_models (key) values (%(key)s) on conflict do nothing",
    "insert into orch_fleet_slots (key, i) select %(key)s, g from generate_series(0, %(cap)s - 1) g "
    "on conflict do nothing",
)
# one statement: the model's block if any, else the lowest free slot below the cap, taken
_ACQUIRE = """
with blocked as (
    select extract(epoch from blocked_until - clock_timestamp())::float8 as wait
    from orch_fleet_models where key = %(key)s and blocked_until > clock_timestamp()
), free as (
    select s.i from orch_fleet_slots s
    where s.key = %(key)s and s.i < %(cap)s and not exists (select from blocked)
      and (s.owner is null or not exists (
          select from orch_fleet_owners o
          where o.owner = s.owner and o.beat > clock_timestamp() - make_interval(secs => %(ttl)s)))
    order by s.i limit 1
    for update skip locked
), took as (
    update orch_fleet_slots s set owner = %(me)s, since = clock_timestamp()
    from free where s.key = %(key)s and s.i = free.i
    returning s.i
)
select (select i from took), (select wait from blocked)
"""
_RELEASE = """
with r as (
    update orch_fleet_slots set owner = null, since = null
    where key = %(key)s and i = %(i)s and owner = %(me)s returning key
)
select pg_notify('orch_fleet', key) from r
"""
_BLOCK = (
    "insert into orch_fleet_models (key, blocked_until) "
    "values (%(key)s, clock_timestamp() + make_interval(secs => %(s)s)) on conflict (key) do update "
    "set blocked_until = greatest(orch_fleet_models.blocked_until, excluded.blocked_until)"
)
_PRUNE = (  # owners gone for 10 TTLs: their rows go, their slots were free since one TTL
    "delete from orch_fleet_owners where beat < clock_timestamp() - make_interval(secs => %s)"
)


def _psycopg(url: str) -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"fleet limits {redact(url)!r} need PostgreSQL support, which is not installed "
            f"({exc.name or exc}); pip install '{DIST_NAME}[postgres]'"
        ) from None
    return psycopg


def _unreachable(url: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"fleet limits {redact(url)!r}: cannot use PostgreSQL: {one_line(exc)}; start the server or point "
        "the fleet at one that runs"
    )


def _key(state: ModelState) -> str:
    base_url, model = state.key
    return f"{base_url.rstrip('/')}|{model}"


@dataclass
class _Side:
    """What the limiter keeps per event loop: its connection, a gate and a wake-up event per model."""

    loop: asyncio.AbstractEventLoop
    conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
    connecting: asyncio.Lock = field(default_factory=asyncio.Lock)
    gates: dict[str, asyncio.Lock] = field(default_factory=dict)
    wake: dict[str, asyncio.Event] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class FleetLimits(FleetLimiter):
    """Slots and blocks of every model in PostgreSQL, for all the processes that use the same database.

    `ttl_s`: how long a process that stopped beating keeps its slots (see the module docstring).
    `stats` counts this process's statements: `tries` (slot requests sent), `granted`, `blocked` (tries
    answered with a block), for measuring what waiting costs the database.

    Example:
        >>> limits = use_fleet_limits("postgresql://orch@db/orch")  # doctest: +SKIP
        >>> use_fleet_limits(None)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, ttl_s: float = 30.0) -> None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s):
            raise ValueError(f"FleetLimits(ttl_s={ttl_s!r}): give a number of seconds, 1 or more")
        if ttl_s < 1:
            raise ValueError(f"FleetLimits(ttl_s={ttl_s!r}): give a number of seconds, 1 or more")
        self._psycopg = _psycopg(url)
        self.url, self.ttl_s = url, float(ttl_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = {"tries": 0, "granted": 0, "blocked": 0}
        self._held: dict[str, list[int]] = {}
        self._orphans: list[tuple[str, int]] = []  # slots whose release failed: the thread retries them
        self._ready: set[tuple[str, int]] = set()  # (key, cap) whose slot rows this process has made
        self._sides: dict[int, _Side] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn = self._listen(create=True)
        self._thread = threading.Thread(target=self._run, name="orch-fleet-limits", daemon=True)
        self._thread.start()

    # --- the thread: heartbeat and LISTEN -----------------------------------------------------------
    def _listen(self, *, create: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            conn: psycopg.Connection[tuple[Any, ...]] = self._psycopg.connect(self.url, autocommit=True)
        except self._psycopg.Error as exc:
            raise _unreachable(self.url, exc) from None
        if create:
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)
        conn.execute(_BEAT, (self.owner, socket.gethostname(), os.getpid()))
        conn.execute(f"listen {_CHANNEL}")
        return conn

    def _run(self) -> None:
        beat_every = self.ttl_s / 5
        next_beat = time.monotonic() + beat_every
        next_prune = time.monotonic()
        delay = 0.5
        while not self._stop.is_set():
            try:
                if self._conn.closed:
                    self._conn = self._listen()
                now = time.monotonic()
                if now >= next_beat:
                    self._conn.execute(_BEAT, (self.owner, socket.gethostname(), os.getpid()))
                    next_beat = now + beat_every
                with self._lock:
                    orphans, self._orphans = self._orphans, []
                for key, slot in orphans:
                    try:
                        self._conn.execute(_RELEASE, {"key": key, "i": slot, "me": self.owner})
                    except self._psycopg.Error:
                        with self._lock:
                            self._orphans.append((key, slot))
                        raise
                if now >= next_prune:
                    self._conn.execute(_PRUNE, (10 * self.ttl_s,))
                    next_prune = now + 10 * self.ttl_s
                for note in self._conn.notifies(timeout=min(0.5, max(0.0, next_beat - time.monotonic()))):
                    self._wake(note.payload)
                delay = 0.5
            except Exception as exc:  # the thread outlives any error: without beats the slots would be lost
                _log.warning("fleet limits: heartbeat to %s failed: %s", redact(self.url), one_line(exc))
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._stop.wait(delay)
                delay = min(delay * 2, self.ttl_s / 5)
        with contextlib.suppress(Exception):  # a clean exit: the slots are free at once
            if not self._conn.closed:
                self._conn.execute("delete from orch_fleet_owners where owner = %s", (self.owner,))
        with contextlib.suppress(Exception):
            self._conn.close()

    def _wake(self, key: str) -> None:
        with self._lock:
            sides = list(self._sides.values())
        for side in sides:
            event = side.wake.get(key)
            if event is not None:
                with contextlib.suppress(RuntimeError):  # that loop has ended
                    side.loop.call_soon_threadsafe(event.set)

    # --- per event loop ---------------------------------------------------------------------------
    def _side(self) -> _Side:
        loop = asyncio.get_running_loop()
        with self._lock:
            side = self._sides.get(id(loop))
            if side is None or side.loop is not loop:
                for k, old in list(self._sides.items()):
                    if old.loop.is_closed():
                        del self._sides[k]
                        if old.conn is not None:
                            old.conn.pgconn.finish()  # that loop can't close it any more
                side = self._sides[id(loop)] = _Side(loop)
            return side

    async def _connection(self, side: _Side) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        conn = side.conn
        if conn is not None and not conn.closed:
            return conn
        async with side.connecting:
            if side.conn is None or side.conn.closed:
                try:
                    side.conn = await self._psycopg.AsyncConnection.connect(self.url, autocommit=True)
                except self._psycopg.Error as exc:
                    raise _unreachable(self.url, exc) from None
            assert side.conn is not None
            return side.conn

    async def _execute(self, side: _Side, query: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """One statement on this loop's connection; a dropped connection is opened again, once."""
        for again in (True, False):
            conn = await self._connection(side)
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchone() if cur.description else None
            except self._psycopg.OperationalError as exc:
                await conn.close()
                if not again:
                    raise ProviderError(
                        f"{params.get('key', '')}: the fleet's model limits in {redact(self.url)!r} can't be "
                        f"reached: {one_line(exc)}; check that PostgreSQL runs",
                        [],
                    ) from None
        raise AssertionError("unreachable")

    def _spawn(self, side: _Side, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = side.loop.create_task(coro)
        side.tasks.add(task)
        task.add_done_callback(side.tasks.discard)
        return task

    # --- FleetLimiter ----------------------------------------------------------------------------
    async def acquire(self, state: ModelState) -> None:
        side, key, cap = self._side(), _key(state), state.max_concurrency
        if (key, cap) not in self._ready:  # shielded, as every statement: a cancel can't cut one in two
            await asyncio.shield(self._spawn(side, self._ensure(side, key, cap)))
        gate = side.gates.setdefault(key, asyncio.Lock())
        wake = side.wake.setdefault(key, asyncio.Event())
        async with gate:  # one task per process and model asks the database; the others wait here
            delay = 0.05
            while True:
                wake.clear()  # a slot given back while the try runs wakes the next wait at once
                slot, wait = await self._try(side, key, cap)
                if slot is not None:
                    with self._lock:
                        self._held.setdefault(key, []).append(slot)
                    return
                if wait is not None and wait > 0:
                    await asyncio.sleep(wait)  # the fleet is blocked: nothing to ask before it ends
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
                delay = min(delay * 2, 1.0)

    async def _ensure(self, side: _Side, key: str, cap: int) -> None:
        """The model's row and its slot rows below `cap` exist (once per process, model and cap)."""
        for statement in _ENSURE:
            await self._execute(side, statement, {"key": key, "cap": cap})
        self._ready.add((key, cap))

    async def _try(self, side: _Side, key: str, cap: int) -> tuple[int | None, float | None]:
        """One slot request; shielded, so a caller cancelled meanwhile leaves no slot taken."""
        self.stats["tries"] += 1
        params = {"key": key, "cap": cap, "me": self.owner, "ttl": self.ttl_s}
        task = self._spawn(side, self._execute(side, _ACQUIRE, params))
        try:
            row = await asyncio.shield(task)
        except asyncio.CancelledError:

            def give_back(done: asyncio.Task[tuple[Any, ...] | None]) -> None:
                if not done.cancelled() and done.exception() is None:
                    got = done.result()
                    if got is not None and got[0] is not None:
                        self._spawn(side, self._execute(side, _RELEASE, {**params, "i": got[0]}))

            task.add_done_callback(give_back)
            raise
        assert row is not None
        slot, wait = row[0], row[1]
        if slot is not None:
            self.stats["granted"] += 1
        elif wait is not None:
            self.stats["blocked"] += 1
        return slot, wait

    async def release(self, state: ModelState) -> None:
        side, key = self._side(), _key(state)
        with self._lock:
            held = self._held.get(key)
            slot = held.pop() if held else None
        if slot is None:
            return
        params = {"key": key, "i": slot, "me": self.owner}
        try:  # shielded: a call cancelled at its deadline still gives its slot back
            await asyncio.shield(self._spawn(side, self._execute(side, _RELEASE, params)))
        except ProviderError as exc:  # the call itself went well: the thread gives the slot back later
            _log.warning("fleet limits: slot %d of %s kept for now: %s", slot, key, exc)
            with self._lock:
                self._orphans.append((key, slot))
        wake = side.wake.get(key)
        if wake is not None:
            wake.set()  # this process's next waiter need not wait for the notice to come back

    def block(self, state: ModelState, seconds: float) -> None:
        try:
            side = self._side()
        except RuntimeError:  # no event loop: the process's own block still holds
            return
        self._spawn(side, self._execute(side, _BLOCK, {"key": _key(state), "s": float(seconds)}))

    # --- ending ---------------------------------------------------------------------------------
    async def aclose_loop(self) -> None:
        """Close this event loop's connection (its block writes and releases in flight finish first)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            side = self._sides.pop(id(loop), None)
        if side is None:
            return
        if side.tasks:
            await asyncio.gather(*side.tasks, return_exceptions=True)
        if side.conn is not None:
            await side.conn.close()

    def close(self) -> None:
        """Stop the heartbeat and delete this process's owner row: its slots are free at once."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            sides, self._sides = list(self._sides.values()), {}
        for side in sides:
            if side.conn is not None and not side.conn.closed:
                side.conn.pgconn.finish()


_installed: FleetLimits | None = None


def use_fleet_limits(url: str | None, *, ttl_s: float = 30.0) -> FleetLimits | None:
    """Hold every model's `max_concurrency` and `Retry-After` across the processes on PostgreSQL `url`
    (None: back to per-process limits). Replaces (and closes) a limiter installed before.

    Example:
        >>> use_fleet_limits(os.environ["ORCH_CHECKPOINTS"])  # doctest: +SKIP
    """
    global _installed
    new = FleetLimits(url, ttl_s=ttl_s) if url is not None else None
    old, _installed = _installed, new
    set_fleet_limiter(new)
    if old is not None:
        old.close()
    return new


async def _close_loop() -> None:
    if _installed is not None:
        await _installed.aclose_loop()


on_loop_end(_close_loop)  # the sync bridge closes this loop's connection before the loop ends
