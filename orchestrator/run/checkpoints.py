"""Where runs keep their checkpoints and their ledger: a SQLite file, a PostgreSQL database, or a saver.

| `checkpoints` setting / argument     | checkpointer                           | ledger, leases             |
|--------------------------------------|----------------------------------------|----------------------------|
| `PATH` or `sqlite:///PATH` (default) | the file's store (`run.sqlite_saver`)  | tables in that file        |
| `postgresql://USER@HOST:PORT/DB`     | `AsyncPostgresSaver` (postgres extra)  | tables in that database    |
| `Orchestrator(checkpointer=saver)`   | the saver, as given (sync or async)    | where `checkpoints` points |

The ledger (`orch_ledger`) holds what each run paid; the leases (`orch_leases`, `orchestrator.run.lease`) who
runs each run now, so a run has one owner at a time across processes and machines.

The setting comes from a keyword, `ORCH_CHECKPOINTS`, `--checkpoints` or the manifest (`orchestrator.config`).
`sqlite:///c.db` is relative to the current (or the manifest's) folder, `sqlite:////var/c.db` absolute, as in
SQLAlchemy. The runner only calls `Checkpoints.open()` per run, `ledger()` and `leases()` once, and `close()`
at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from orchestrator._version import DIST_NAME
from orchestrator.cost.ledger import Ledger, LedgerBook
from orchestrator.errors import ConfigError
from orchestrator.locations import (
    ACCEPTED,
    Location,
    checkpoints_location,
    describe,
    one_line,
    redact,
    unreachable,
)
from orchestrator.reserve import reserve_for
from orchestrator.run.lease import Leases, PostgresLeases, SqliteLeases
from orchestrator.run.sqlite_saver import SqliteCheckpointer, SqliteStore

__all__ = ["ACCEPTED", "Checkpoints", "Location", "checkpoints_location", "describe"]

_CONNECT_TIMEOUT_S = 10  # unless the URL sets connect_timeout: an unreachable host fails, it does not hang
_PG_LOCK = 0x6F726373  # an advisory lock id ("orcs"): one process at a time runs the saver's migrations
_log = logging.getLogger("orchestrator.checkpoints")


class Checkpoints:
    """One orchestrator's checkpoint store: the run's checkpointer, opened per run, and the ledger book.

    Example:
        >>> import tempfile
        >>> store = Checkpoints(Path(tempfile.mkdtemp()) / "c.db")
        >>> book = store.ledger()
        >>> book.entries("r1")
        []
        >>> book.close()
    """

    def __init__(self, location: Location, saver: BaseCheckpointSaver[Any] | None = None) -> None:
        if saver is not None and not isinstance(saver, BaseCheckpointSaver):
            raise ConfigError(
                f"checkpointer must be a LangGraph checkpointer (a BaseCheckpointSaver); "
                f"got {type(saver).__name__}"
            )
        self.location = location
        self.saver = saver
        self._ready: BaseCheckpointSaver[Any] | None = None  # the given saver, set up (and made async)
        self._sqlite: SqliteCheckpointer | None = None  # the file's store in this process, once opened
        self._release: weakref.finalize[Any, Any] | None = None

    def describe(self) -> str:
        """Where the checkpoints are, for messages."""
        if self.saver is not None:
            return f"the given checkpointer ({type(self.saver).__name__})"
        return describe(self.location)

    def ledger(self) -> LedgerBook:
        """The ledger book, where the setting points (also with a given saver: its storage is not ours to
        reach). Raises a `ConfigError` now for an unusable file or an unreachable server."""
        from orchestrator.cost.ledger import PostgresLedger, SqliteLedger

        return LedgerBook(self._store_beside(SqliteLedger, PostgresLedger))

    def leases(self) -> Leases:
        """Who runs each run now, where the setting points (beside the ledger). A `ConfigError` now for an
        unusable file or an unreachable server."""
        return Leases(self._store_beside(SqliteLeases, PostgresLeases))

    def _store_beside(self, sqlite: Callable[[Path], Any], postgres: Callable[..., Any]) -> Any:
        """A store in the checkpoints' database: `sqlite(path)` or `postgres(url, name, **connect)`, with the
        one error each failure to open it gets."""
        if isinstance(self.location, Path):
            from orchestrator.tracing.store import TraceStoreError, check_database

            check_database(self.location, "checkpoint store", "checkpoints")
            try:
                return sqlite(self.location)
            except (OSError, sqlite3.Error) as exc:  # a full disk: its table can't be made
                raise TraceStoreError(str(self.location), exc, "checkpoint store", "checkpoints") from None
        psycopg = _psycopg(self.location)
        try:
            return postgres(self.location, redact(self.location), **_connect_args(self.location))
        except psycopg.Error as exc:
            raise unreachable(self.location, exc) from None

    def totals(self, run_id: str) -> Ledger | None:
        """What a run paid so far, read from the ledger (None: no entries, no ledger there yet, or it can't
        be read). Opens the ledger for this one read: for readers of the trace store, not for runs."""
        if isinstance(self.location, Path) and not self.location.is_file():
            return None  # nothing was ever run with these checkpoints: don't make the file
        try:
            book = self.ledger()
            try:
                return book.totals(run_id)
            finally:
                book.close()
        except Exception as exc:  # the row keeps what it has; the ledger is still the record
            _log.warning("the ledger in %s could not be read for run %r: %s", self.describe(), run_id, exc)
            return None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        """The checkpointer for one run: set up, and closed at the end unless it was given."""
        if self.saver is not None:
            yield await self._given(self.saver)
        elif isinstance(self.location, Path):
            yield await self._sqlite_saver(self.location)
        else:
            async with _postgres_saver(self.location) as saver:
                yield saver

    async def _sqlite_saver(self, path: Path) -> SqliteCheckpointer:
        """The process's checkpointer of the file (set up once), its reserve made again for this run."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            reserve_for(path).ensure()  # room for the step in flight if the disk fills during the run
        except OSError as exc:  # no room even for that: refused before anything is spent
            from orchestrator.tracing.store import TraceStoreError

            raise TraceStoreError(str(path), exc, "checkpoint store", "checkpoints") from None
        if self._sqlite is None or self._sqlite.store.pid != os.getpid():  # none yet, or a forked child
            store = SqliteStore.acquire(path)
            self._sqlite = SqliteCheckpointer(store)
            self._release = weakref.finalize(self, _release_dropped, store)  # when we are dropped
        ready = self._sqlite.store.ready
        if not ready.done():
            await asyncio.wrap_future(ready)
        if ready.exception() is not None:  # its set-up failed: the next run tries it again
            self.close()
            ready.result()
        return self._sqlite

    def close(self) -> None:
        """Let this process's store of the checkpoint file go (a given saver is the caller's to close)."""
        if self._release is not None and self._release.detach() is not None and self._sqlite is not None:
            self._sqlite.store.close()
        self._sqlite, self._release = None, None

    async def _given(self, saver: BaseCheckpointSaver[Any]) -> BaseCheckpointSaver[Any]:
        if self._ready is not None:
            return self._ready
        async with _setup_lock(f"given:{id(saver)}"):
            if self._ready is None:
                setup = getattr(saver, "setup", None)  # savers with tables make them here (idempotent)
                if inspect.iscoroutinefunction(setup):
                    await setup()
                elif callable(setup):
                    await asyncio.to_thread(setup)
                probe: RunnableConfig = {"configurable": {"thread_id": "orch-probe", "checkpoint_ns": ""}}
                try:
                    await saver.aget_tuple(probe)
                    self._ready = saver
                except NotImplementedError:  # a sync-only saver (SqliteSaver, PostgresSaver)
                    self._ready = _Threaded(saver)
        return self._ready


_set_up: set[str] = set()  # PostgreSQL URLs whose migrations this process has run
_POOL_MAX = 8  # connections per pool: a checkpoint read or write holds one only while it runs


def _release_dropped(store: SqliteStore) -> None:
    """A dropped `Checkpoints`' store, let go on a thread of its own. A finalizer runs inside whatever
    allocation set off the garbage collector, also one made while this thread holds the stores' registry
    lock (`SqliteStore.acquire` starting a store's thread): closing here took that lock again and hung."""
    threading.Thread(target=store.close, name="orch-checkpoints-release", daemon=True).start()


class _Pool:
    """A connection pool to one PostgreSQL URL on one event loop, shared by the runs in flight on it."""

    def __init__(self, pool: Any, saver: BaseCheckpointSaver[Any]) -> None:
        self.pool, self.saver, self.users = pool, saver, 0


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Pool]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _postgres_saver(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The checkpointer of the runs in flight on this loop: one pool (and one migrations check) for them
    all, not a connection each; closed with the last of them, on its loop (a pool is bound to its loop)."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    async with _setup_lock(url):
        entry = pools.get(url)
        if entry is None:
            entry = pools[url] = await _open_pool(url)
        entry.users += 1
    try:
        yield entry.saver
    finally:
        entry.users -= 1
        if entry.users == 0 and pools.get(url) is entry:
            del pools[url]
            await entry.pool.close()


async def _open_pool(url: str) -> _Pool:
    psycopg = _psycopg(url)
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, **_connect_args(url)}
    try:  # one connection first: an unreachable server fails now, with its own reason
        conn = await psycopg.AsyncConnection.connect(url, **options)
    except psycopg.Error as exc:
        raise unreachable(url, exc) from None
    async with conn:
        if url not in _set_up:
            # processes on several machines may start at once: the migrations run one at a time.
            # Asked for without waiting inside the server: LangGraph's migrations build an index
            # CONCURRENTLY, which waits for every open transaction, a blocked lock request included
            # (PostgreSQL then reports a deadlock and a worker's first run failed)
            while not await _try_lock(conn):
                await asyncio.sleep(0.05)
            try:
                await AsyncPostgresSaver(conn).setup()
            finally:
                await conn.execute("select pg_advisory_unlock(%s)", (_PG_LOCK,))
            _set_up.add(url)
    pool: Any = AsyncConnectionPool(url, kwargs=options, min_size=1, max_size=_POOL_MAX, open=False)
    await pool.open()
    return _Pool(pool, AsyncPostgresSaver(pool))


async def _try_lock(conn: Any) -> bool:
    row = await (await conn.execute("select pg_try_advisory_lock(%s) as taken", (_PG_LOCK,))).fetchone()
    return bool(row and row["taken"])


def _psycopg(url: str) -> Any:
    """psycopg, once the postgres extra is known to be installed; else a ConfigError with the fix."""
    try:
        import langgraph.checkpoint.postgres.aio  # noqa: F401
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"checkpoints {redact(url)!r} need PostgreSQL support, which is not installed "
            f"({exc.name or exc}); pip install '{DIST_NAME}[postgres]'"
        ) from None
    return psycopg


def _connect_args(url: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(url)
    except Exception as exc:
        raise ConfigError(
            f"checkpoints {redact(url)!r}: not a valid PostgreSQL URL: {one_line(exc)}"
        ) from None
    return {} if "connect_timeout" in given else {"connect_timeout": _CONNECT_TIMEOUT_S}


_setup_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _setup_lock(key: str) -> asyncio.Lock:
    """One lock per (event loop, store) for a checkpointer's schema set-up."""
    locks = _setup_locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(key, asyncio.Lock())


class _Wrapper(BaseCheckpointSaver[Any]):
    """A checkpointer around another: its serializer, config specs and versions are the inner one's."""

    def __init__(self, inner: Any) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    @property
    def config_specs(self) -> list[Any]:
        return list(self.inner.config_specs)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)


class _Threaded(_Wrapper):
    """A sync-only checkpointer made usable by async runs: each call runs in a worker thread."""

    inner: BaseCheckpointSaver[Any]

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.inner.put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.inner.put_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        self.inner.delete_thread(thread_id)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.inner.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def read() -> list[CheckpointTuple]:
            return [*self.inner.list(config, filter=filter, before=before, limit=limit)]

        for item in await asyncio.to_thread(read):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.inner.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await asyncio.to_thread(self.inner.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.inner.delete_thread, thread_id)

    def with_allowlist(self, extra_allowlist: Any) -> BaseCheckpointSaver[Any]:
        return _Threaded(self.inner.with_allowlist(extra_allowlist))
