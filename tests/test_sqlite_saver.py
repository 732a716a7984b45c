"""The default checkpointer (`orchestrator.run.sqlite_saver`): one store per file per process, group commit,
reads of a run's own writes, several processes on one file, and no acknowledged write lost to a SIGKILL.
Real SQLite files and real child processes throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from orchestrator.errors import StoreBusyError
from orchestrator.run import sqlite_saver
from orchestrator.run.checkpoints import Checkpoints
from orchestrator.run.sqlite_saver import SqliteCheckpointer, SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def _config(thread: str, checkpoint_id: str = "") -> Any:
    configurable = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def _step(saver: Any, thread: str, n: int, parent: Any) -> Any:
    """One step as LangGraph writes it: the task's writes on the parent, then the new checkpoint."""
    if parent["configurable"].get("checkpoint_id"):
        await saver.aput_writes(parent, [("value", f"{thread}-{n}")], task_id=f"task{n}")
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"value": f"{thread}-{n}"}
    return await saver.aput(parent, checkpoint, {"step": n, "source": "loop"}, {})


async def test_many_concurrent_runs_on_one_file_are_all_stored_and_read_back(tmp_path: Path) -> None:
    store = Checkpoints(tmp_path / "c.db")

    async def run(i: int) -> None:
        async with store.open() as saver:
            parent = _config(f"run{i}")
            for n in range(3):
                parent = await _step(saver, f"run{i}", n, parent)
                # a run reads its own writes at once
                latest = await saver.aget_tuple(_config(f"run{i}"))
                assert latest is not None and latest.checkpoint["channel_values"]["value"] == f"run{i}-{n}"

    await asyncio.gather(*(run(i) for i in range(200)))
    store.close()
    # every step of every run, read by LangGraph's own saver from the file
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.db")) as theirs:
        for i in range(200):
            history = [t async for t in theirs.alist(_config(f"run{i}"))]
            assert [t.metadata["step"] for t in history] == [2, 1, 0]
            assert history[0].parent_config == history[1].config
            # the writes of the task that made the next checkpoint are on its parent
            assert [w[1:] for w in history[1].pending_writes] == [("value", f"run{i}-2")]


async def test_writes_that_arrive_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    """Group commit: 100 writes queued behind another process's write lock are committed in one or two
    transactions, not 100 (each of which would fsync)."""
    path = tmp_path / "c.db"
    store = SqliteStore.acquire(path)
    saver = SqliteCheckpointer(store)
    assert await saver.aget_tuple(_config("none")) is None  # set up
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    before = store.commits
    writes = [asyncio.ensure_future(_step(saver, f"t{i}", 0, _config(f"t{i}"))) for i in range(100)]
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in writes)  # not acknowledged before they are committed
    other.execute("COMMIT")
    await asyncio.gather(*writes)
    assert store.commits - before <= 2
    assert other.execute("select count(*) from checkpoints").fetchone() == (100,)
    other.close()
    store.close()


def test_the_store_is_one_per_file_and_process_and_its_thread_ends_with_its_last_user(tmp_path: Path) -> None:
    first = SqliteStore.acquire(tmp_path / "c.db")
    second = SqliteStore.acquire(str(tmp_path / "." / "c.db"))
    other = SqliteStore.acquire(tmp_path / "d.db")
    assert first is second and first is not other
    other.close()
    first.close()
    assert first._thread.is_alive()  # the other user still has it
    second.close()
    assert not first._thread.is_alive()


def test_the_sync_interface_works_from_a_thread(tmp_path: Path) -> None:
    store = SqliteStore.acquire(tmp_path / "c.db")
    saver = SqliteCheckpointer(store)
    found: list[Any] = []

    def use() -> None:
        checkpoint = empty_checkpoint()
        stored = saver.put(_config("t"), checkpoint, {"step": 0}, {})
        saver.put_writes(stored, [("value", 1)], task_id="a")
        found.append(saver.get_tuple(_config("t")))
        found.append([*saver.list(None)])

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    latest, everything = found
    assert latest.checkpoint["id"] == everything[0].checkpoint["id"] and latest.pending_writes == [
        ("a", "value", 1)
    ]
    store.close()


async def test_a_write_waits_for_another_process_holding_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SQLite's own busy wait (shortened here) the batch is tried again until `BUSY_WAIT_S`."""
    monkeypatch.setattr(sqlite_saver, "BUSY_TIMEOUT_MS", 20)
    path = tmp_path / "c.db"
    store = SqliteStore.acquire(path)
    saver = SqliteCheckpointer(store)
    assert await saver.aget_tuple(_config("none")) is None
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, other.execute, ["COMMIT"]).start()
    stored = await _step(saver, "t", 0, _config("t"))
    assert (await saver.aget_tuple(_config("t"))).config == stored  # type: ignore[union-attr]
    other.close()
    store.close()


async def test_a_file_locked_past_the_wait_fails_clearly_and_resumably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_saver, "BUSY_TIMEOUT_MS", 20)
    monkeypatch.setattr(sqlite_saver, "BUSY_WAIT_S", 0.2)
    path = tmp_path / "c.db"
    store = SqliteStore.acquire(path)
    saver = SqliteCheckpointer(store)
    assert await saver.aget_tuple(_config("none")) is None
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreBusyError, match=r"stayed locked by other writers .*; resume the run"):
        await _step(saver, "t", 0, _config("t"))
    other.execute("COMMIT")
    await _step(saver, "t", 0, _config("t"))  # the store goes on once the file is free
    other.close()
    store.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from langgraph.checkpoint.base import empty_checkpoint
    from orchestrator.run.sqlite_saver import SqliteCheckpointer, SqliteStore

    async def main(path, runs):
        saver = SqliteCheckpointer(SqliteStore.acquire(path))

        async def run(i):
            parent = {"configurable": {"thread_id": f"r{i}", "checkpoint_ns": ""}}
            for n in range(10_000):
                checkpoint = empty_checkpoint()
                parent = await saver.aput(parent, checkpoint, {"step": n}, {})
                print(parent["configurable"]["checkpoint_id"], flush=True)  # acknowledged

        await asyncio.gather(*(run(i) for i in range(runs)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_a_killed_process_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """Group commit acknowledges a write only once it is committed: SIGKILL a process that writes from 50
    runs at once, mid-batch, and every checkpoint it said was stored is in the file."""
    path = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), "50"], stdout=subprocess.PIPE, env=env, text=True
    )
    assert child.stdout is not None
    acknowledged = [child.stdout.readline().strip() for _ in range(2000)]
    child.send_signal(signal.SIGKILL)
    acknowledged += child.stdout.read().split()  # what it printed before it died
    child.wait()
    child.stdout.close()
    conn = sqlite3.connect(path)
    stored = {row[0] for row in conn.execute("select checkpoint_id from checkpoints")}
    conn.close()
    assert len(acknowledged) >= 2000 and not set(acknowledged) - stored


def test_two_processes_write_one_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), "20"], stdout=subprocess.PIPE, env=env, text=True
        )
        for _ in range(2)
    ]
    seen: list[str] = []
    for child in children:
        assert child.stdout is not None
        seen += [child.stdout.readline().strip() for _ in range(500)]
    for child in children:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    conn = sqlite3.connect(path)
    stored = {row[0] for row in conn.execute("select checkpoint_id from checkpoints")}
    conn.close()
    assert len(seen) == 1000 and not set(seen) - stored


def _child_writes(store: Checkpoints) -> None:
    async def write() -> None:
        async with store.open() as saver:
            await _step(saver, "child", 0, _config("child"))

    asyncio.run(write())


async def test_a_forked_child_opens_its_own_store(tmp_path: Path) -> None:
    """A forked child has the parent's objects but not its writer thread: it starts its own (its writes
    waited forever for the parent's thread)."""
    import multiprocessing

    store = Checkpoints(tmp_path / "c.db")
    async with store.open() as saver:
        await _step(saver, "parent", 0, _config("parent"))
    child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(store,))
    child.start()
    await asyncio.to_thread(child.join, 30)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0
    async with store.open() as saver:
        assert await saver.aget_tuple(_config("child")) is not None
    store.close()


def test_a_dropped_checkpoints_store_is_let_go_without_taking_the_registry_lock_on_the_gc_thread(
    tmp_path: Path,
) -> None:
    """A `Checkpoints` dropped without `close` lets its store go from a finalizer, which the garbage
    collector may run while this very thread holds the stores' registry lock (`SqliteStore.acquire`
    starting a thread): the test suite hung so. The finalizer now hands the close to a thread of its own."""
    import time

    from orchestrator.run.checkpoints import _release_dropped

    store = SqliteStore.acquire(tmp_path / "c.db")
    store.ready.result(10)
    with SqliteStore._stores_lock:  # as acquire holds it when a collection runs the finalizer
        _release_dropped(store)  # returns at once: it hung here before
        assert store._thread.is_alive()
    deadline = time.monotonic() + 10
    while store._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not store._thread.is_alive() and store.path not in SqliteStore._stores
