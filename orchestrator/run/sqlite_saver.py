"""The default checkpointer: one SQLite store per file per process, shared by every run, with group commit.

A run's steps are small writes (about 9 commits and 3 reads a run). A connection per run, each with its own
thread, set-up and fsync per write, made 1,000 concurrent runs take twice as long as checkpoints in memory
(bench/load.py). Here, per file and process:

- one writer thread with one connection, the schema set up once when it starts (LangGraph's tables and
  WAL, as `AsyncSqliteSaver` makes them: either reads the other's files);
- **group commit**: every write that arrives while a commit is in progress goes into the next transaction,
  and each `aput` / `aput_writes` returns only once the commit that holds it is done (`synchronous=FULL`):
  a crash loses nothing a run was told was stored;
- reads on the caller's thread, from a small pool of read connections (a committed write is seen by the
  next read: a run reads its own writes); a read is short, and a busy file is waited for without blocking
  the event loop;
- a busy file (another process writing) is waited for (`busy_timeout`) and retried for up to
  `BUSY_WAIT_S`; a full disk releases the file's `Reserve` and commits the batch once more, and then every
  write of it, stored, raises `DiskFull` (see `orchestrator.reserve`).

`SqliteStore.acquire(path)` hands out the process's store of a file, counted; `close()` lets it go, and the
last one out stops its thread once the writes queued are committed.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import json
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite.utils import load_pending_writes, pending_writes_sql, search_where

from orchestrator.errors import StoreBusyError
from orchestrator.reserve import DiskFull, Reserve, disk_full, reserve_for

__all__ = ["BUSY_TIMEOUT_MS", "BUSY_WAIT_S", "SqliteCheckpointer", "SqliteStore"]

BUSY_TIMEOUT_MS = 60_000  # one transaction's wait for the write lock held by another process
BUSY_WAIT_S = 180.0  # one batch's (or read's) wait in all, retries included
MAX_BATCH = 1024  # writes per transaction at most
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    type TEXT,
    checkpoint BLOB,
    metadata BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE TABLE IF NOT EXISTS writes (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task_path TEXT NOT NULL DEFAULT '',
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    type TEXT,
    value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
"""
_PUT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
    "type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_WRITES = (
    "INSERT OR {verb} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
    "channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LATEST = (
    "SELECT thread_id, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints "
    "WHERE thread_id = ? AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1"
)
_ONE = (
    "SELECT thread_id, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints "
    "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
)
Statement = tuple[str, Sequence[Sequence[Any]]]  # SQL and its rows of parameters


def busy(exc: BaseException) -> bool:
    """A lock another connection holds (SQLITE_BUSY / SQLITE_LOCKED)."""
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class _Write:
    """One caller's statements, committed together, and how to tell the caller."""

    __slots__ = ("loop", "statements", "waiter")

    def __init__(
        self,
        statements: list[Statement],
        waiter: asyncio.Future[None] | concurrent.futures.Future[None],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.statements = statements
        self.waiter = waiter
        self.loop = loop


def _settle(outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for waiter, error in outcomes:
        if waiter.done():  # its caller was cancelled; the write is stored all the same
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


class SqliteStore:
    """One checkpoint file's writer thread and read connections in this process (see the module's text)."""

    _stores: ClassVar[dict[str, SqliteStore]] = {}
    _stores_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, path: str | Path) -> SqliteStore:
        """The process's store of the file at `path`, counted: `close()` it when done."""
        key = os.path.realpath(path)
        with cls._stores_lock:
            store = cls._stores.get(key)
            if store is None or not store.usable():
                store = cls._stores[key] = SqliteStore(key)
            store._users += 1
            return store

    def __init__(self, path: str) -> None:
        self.path = path
        self.reserve: Reserve = reserve_for(path)
        self.has_task_path = True
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()  # the schema is set up
        self.commits = 0  # transactions committed (a batch each)
        self.pid = os.getpid()
        self._users = 0
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._thread = threading.Thread(target=self._run, name=f"orch-checkpoints {path}", daemon=True)
        self._thread.start()

    def usable(self) -> bool:
        """False in a forked child (the thread stayed in the parent) or after a failed set-up."""
        if self.pid != os.getpid():
            return False
        return not (self.ready.done() and self.ready.exception() is not None)

    def close(self) -> None:
        """Let the store go; the last user's close commits what is queued and stops the thread."""
        if self.pid != os.getpid():
            return  # a forked child's copy: its thread and connections are the parent's
        with SqliteStore._stores_lock:
            self._users -= 1
            if self._users > 0:
                return
            if SqliteStore._stores.get(self.path) is self:
                del SqliteStore._stores[self.path]
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        while self._readers:
            self._readers.pop().close()

    # --- writes ---------------------------------------------------------------------------------------
    async def write(self, statements: list[Statement]) -> None:
        """Commit `statements` in the next transaction; return once it is committed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Write(statements, waiter, loop))
        await waiter

    def write_sync(self, statements: list[Statement]) -> None:
        """`write`, for a thread that is not running an event loop."""
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put(_Write(statements, waiter, None))
        waiter.result()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self.ready.set_exception(exc)
            conn = None
        else:
            self.ready.set_result(None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                if conn is None:
                    outcomes: list[BaseException | None] = [self.ready.exception()] * len(batch)
                else:
                    try:
                        outcomes = self._commit(conn, batch)
                    except (
                        Exception
                    ) as exc:  # a damaged file, say: each of its callers is told, none waits on
                        with contextlib.suppress(sqlite3.Error):
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                        outcomes = [exc] * len(batch)
                self._tell(batch, outcomes)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            try:
                # WAL needs the file to itself and SQLite does not wait for that: retried while others
                # read or write (they all use WAL already once the first opener switched it)
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if not busy(exc) or time.monotonic() >= deadline:
                    conn.close()
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous = FULL")  # a commit acknowledged is on disk, power loss included
        conn.executescript(_SCHEMA)
        try:
            # databases from before `task_path` (no ADD COLUMN IF NOT EXISTS in SQLite)
            conn.execute("ALTER TABLE writes ADD COLUMN task_path TEXT NOT NULL DEFAULT ''")
        except sqlite3.OperationalError as exc:
            if "readonly database" in str(exc):
                self.has_task_path = False
            elif "duplicate column name" not in str(exc):
                conn.close()
                raise
        return conn

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write]) -> list[BaseException | None]:
        """Commit the batch in one transaction; each write's outcome (None: stored)."""
        deadline = time.monotonic() + BUSY_WAIT_S
        delay = 0.005
        failed: dict[int, BaseException] = {}  # writes refused on their own (bad values): left out
        while True:
            try:
                self._transaction(conn, batch, failed)
                break
            except _Refused as refused:
                failed[refused.index] = refused.error
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:  # SQLite has rolled back already after some errors (a full disk)
                    conn.execute("ROLLBACK")
                if disk_full(exc) and self.reserve.release():
                    continue  # once: the reserve's space takes the batch
                if not busy(exc):
                    return [failed.get(i, exc) for i in range(len(batch))]
                if time.monotonic() >= deadline:
                    return [failed.get(i) or self._busy_error(exc) for i in range(len(batch))]
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        spent = self.reserve.spent  # stored in the reserve's space: every write of it stops its run
        return [failed.get(i) or (DiskFull(self.path) if spent else None) for i in range(len(batch))]

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Write], failed: dict[int, Any]) -> None:
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: no stale read snapshot to upgrade
        for i, write in enumerate(batch):
            if i in failed:
                continue
            try:
                for sql, rows in write.statements:
                    conn.executemany(sql, rows)
            except sqlite3.OperationalError:
                raise
            except (sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
                conn.execute("ROLLBACK")
                raise _Refused(i, exc) from None
        conn.execute("COMMIT")
        self.commits += 1

    @staticmethod
    def _tell(batch: list[_Write], outcomes: list[BaseException | None]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]]
        by_loop = {}
        for write, error in zip(batch, outcomes, strict=True):
            if write.loop is None:
                sync: Any = write.waiter
                if error is None:
                    sync.set_result(None)
                else:
                    sync.set_exception(error)
            else:
                by_loop.setdefault(write.loop, []).append((write.waiter, error))  # type: ignore[arg-type]
        for loop, outcomes_of_loop in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
                loop.call_soon_threadsafe(_settle, outcomes_of_loop)  # one wake-up per loop per batch

    def _busy_error(self, exc: BaseException) -> StoreBusyError:
        return StoreBusyError(
            f"the checkpoint store ({self.path}) stayed locked by other writers for "
            f"{BUSY_WAIT_S:.0f} s ({exc}); resume the run when it is less busy"
        )

    # --- reads ----------------------------------------------------------------------------------------
    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on a read connection of the pool (an error if the file is busy: see `aread`)."""
        try:
            conn = self._readers.pop()
        except IndexError:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 0")  # never block the event loop: waited for in `aread`
        try:
            return fn(conn)
        finally:
            self._readers.append(conn)

    async def aread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`read`, waited for (on the event loop, without blocking it) while the file is busy."""
        if not self.ready.done():
            await asyncio.wrap_future(self.ready)
        self.ready.result()  # its set-up's error, if it failed
        deadline = time.monotonic() + BUSY_WAIT_S
        delay = 0.005
        while True:
            try:
                return self.read(fn)
            except sqlite3.OperationalError as exc:
                if not busy(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise self._busy_error(exc) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`aread` for a thread without an event loop."""
        self.ready.result()
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            try:
                return self.read(fn)
            except sqlite3.OperationalError as exc:
                if not busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)


class _Refused(Exception):
    """One write of a batch failed on its own; the batch is committed without it."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


class SqliteCheckpointer(BaseCheckpointSaver[str]):
    """LangGraph's checkpointer interface on a `SqliteStore` (the same tables as `AsyncSqliteSaver`).

    Example:
        >>> import asyncio, tempfile
        >>> store = SqliteStore.acquire(Path(tempfile.mkdtemp()) / "c.db")
        >>> saver = SqliteCheckpointer(store)
        >>> asyncio.run(saver.aget_tuple({"configurable": {"thread_id": "t"}})) is None
        True
        >>> store.close()
    """

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self.store = store

    # --- reads ----------------------------------------------------------------------------------------
    def _get(self, config: RunnableConfig) -> Callable[[sqlite3.Connection], CheckpointTuple | None]:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        wanted = get_checkpoint_id(config)

        def read(conn: sqlite3.Connection) -> CheckpointTuple | None:
            # fetchall: each statement runs to its end, so the connection keeps no read snapshot open
            if wanted:
                rows = conn.execute(_ONE, (thread_id, ns, wanted)).fetchall()
            else:
                rows = conn.execute(_LATEST, (thread_id, ns)).fetchall()
            if not rows:
                return None
            row = rows[0]
            writes = conn.execute(pending_writes_sql(self.store.has_task_path), (thread_id, ns, row[1]))
            return self._tuple(ns, row, writes.fetchall())

        return read

    def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Callable[[sqlite3.Connection], builtins.list[CheckpointTuple]]:
        where, params = search_where(config, filter, before)
        query = (
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
            f"metadata FROM checkpoints {where} ORDER BY checkpoint_id DESC"
        )
        if limit is not None:
            query += " LIMIT ?"
            params = (*params, limit)

        def read(conn: sqlite3.Connection) -> builtins.list[CheckpointTuple]:
            found = []
            for thread_id, ns, *row in conn.execute(query, params).fetchall():
                writes = conn.execute(pending_writes_sql(self.store.has_task_path), (thread_id, ns, row[0]))
                found.append(self._tuple(ns, (thread_id, *row), writes.fetchall()))
            return found

        return read

    def _tuple(self, ns: str, row: Sequence[Any], writes: builtins.list[Any]) -> CheckpointTuple:
        thread_id, checkpoint_id, parent_id, type_, blob, metadata = row
        return CheckpointTuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            self.serde.loads_typed((type_, blob)),
            json.loads(metadata) if metadata is not None else {},
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent_id}}
            if parent_id
            else None,
            load_pending_writes(writes, self.serde),
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.store.read_sync(self._get(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.store.aread(self._get(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self.store.read_sync(self._list(config, filter, before, limit))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self.store.aread(self._list(config, filter, before, limit)):
            yield item

    # --- writes ---------------------------------------------------------------------------------------
    def _put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> tuple[builtins.list[Statement], RunnableConfig]:
        configurable = config["configurable"]
        thread_id, ns = configurable["thread_id"], configurable["checkpoint_ns"]
        type_, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False)
        row = (
            str(thread_id),
            ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            type_,
            blob,
            meta.encode("utf-8", "ignore"),
        )
        stored: RunnableConfig = {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}
        }
        return [(_PUT, [row])], stored

    def _put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> builtins.list[Statement]:
        configurable = config["configurable"]
        key = (
            str(configurable["thread_id"]),
            str(configurable["checkpoint_ns"]),
            str(configurable["checkpoint_id"]),
        )
        # special channels (errors, interrupts) replace an earlier copy; a task's own writes are kept once
        verb = "REPLACE" if all(channel in WRITES_IDX_MAP for channel, _ in writes) else "IGNORE"
        rows = [
            (
                *key,
                task_id,
                task_path,
                WRITES_IDX_MAP.get(channel, idx),
                channel,
                *self.serde.dumps_typed(value),
            )
            for idx, (channel, value) in enumerate(writes)
        ]
        return [(_WRITES.format(verb=verb), rows)]

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        statements, stored = self._put(config, checkpoint, metadata)
        self.store.write_sync(statements)
        return stored

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        statements, stored = self._put(config, checkpoint, metadata)
        await self.store.write(statements)
        return stored

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.store.write_sync(self._put_writes(config, writes, task_id, task_path))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self.store.write(self._put_writes(config, writes, task_id, task_path))

    def _delete(self, thread_id: str) -> builtins.list[Statement]:
        return [
            ("DELETE FROM checkpoints WHERE thread_id = ?", [(str(thread_id),)]),
            ("DELETE FROM writes WHERE thread_id = ?", [(str(thread_id),)]),
        ]

    def delete_thread(self, thread_id: str) -> None:
        self.store.write_sync(self._delete(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        await self.store.write(self._delete(thread_id))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A channel's next version: a counter, then a random tail (the format of LangGraph's savers)."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"
