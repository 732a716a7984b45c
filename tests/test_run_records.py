"""What the store keeps about a run: never left `running`, answers only with capture, old stores migrate."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from orchestrator import Settings, SlotConfig
from orchestrator.tracing.store import TraceStore, m001_runs_spans
from support import MakeOrch, act

TASK = "How many days from 2026-03-02 to 2026-03-20?"
STEPS = [
    '{"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]}',
    act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"}),
    act(action="final", answer="18 days"),
]


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    script = (
        "import os, sys; from orchestrator.tracing.store import TraceStore; "
        f"TraceStore({str(db)!r}).start_run('dead', 'g', config_hash='h', version='v'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    store = TraceStore(db)
    store.start_run("alive", "g", config_hash="h", version="v")  # this process runs it: left alone
    runs = {r["run_id"]: r for r in store.list_runs()}
    assert runs["dead"]["status"] == "interrupted"
    assert "orch run --resume dead" in runs["dead"]["error"]
    assert runs["alive"]["status"] == "running"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are read from /proc (Linux)")
def test_a_run_whose_process_is_a_zombie_reads_as_interrupted(tmp_path: Path) -> None:
    """A killed process that its parent has not reaped yet (or ever: a container's PID 1 that never reaps)
    has ended: its run is not `running`."""
    db = tmp_path / "t.db"
    script = (
        "import os; from orchestrator.tracing.store import TraceStore; "
        f"TraceStore({str(db)!r}).start_run('zombie', 'g', config_hash='h', version='v'); os._exit(0)"
    )
    child = subprocess.Popen([sys.executable, "-c", script])  # never waited for until the end: a zombie
    try:
        deadline = time.monotonic() + 60
        while _state(child.pid) != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        (run,) = TraceStore(db).list_runs()
        assert _state(child.pid) == "Z"  # still unreaped
        assert run["status"] == "interrupted" and "orch run --resume zombie" in run["error"]
    finally:
        child.wait()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_a_stale_run_with_this_processes_pid_is_interrupted(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    store.start_run("mine", "g", config_hash="h", version="v")
    store.end_run("mine", status="ok")
    # an earlier process that had our pid left a run behind
    store.db.execute("update runs set status = 'running' where run_id = 'mine'")
    store.db.conn.commit()
    assert store.get_run("mine")["status"] == "interrupted"  # type: ignore[index]


def test_a_store_from_the_first_schema_migrates_in_place(tmp_path: Path) -> None:
    db_path = tmp_path / "old.db"
    old = sqlite_utils.Database(db_path)
    m001_runs_spans(old)
    old.table("_migrations").insert({"name": "m001_runs_spans", "applied_at": 0.0}, pk="name")
    old.table("runs").insert({"run_id": "old", "graph": "g", "status": "running", "started_at": 1.0})
    old.conn.commit()
    old.conn.close()
    store = TraceStore(db_path)
    (row,) = store.list_runs()
    assert row["run_id"] == "old" and row["pid"] is None
    assert row["status"] == "running"  # no owner recorded: nothing to judge it by


async def test_a_consumer_that_crashes_mid_run_still_ends_the_run(make_orch: MakeOrch) -> None:
    orch = make_orch(STEPS, by_turn=True)
    events = orch.astream("agent", TASK, run_id="crashy")
    with pytest.raises(RuntimeError, match="renderer broke"):
        async with contextlib.aclosing(events):
            async for event in events:
                if event.kind == "node":
                    raise RuntimeError("renderer broke")
    assert orch.store is not None
    assert orch.store.get_run("crashy")["status"] == "cancelled"  # type: ignore[index]


@pytest.mark.parametrize("capture", [False, True])
async def test_the_answer_is_stored_only_with_content_capture(
    make_orch: MakeOrch, settings: Settings, capture: bool
) -> None:
    orch = make_orch(STEPS, by_turn=True, settings=dataclasses.replace(settings, capture_content=capture))
    result = await orch.arun("agent", TASK)
    assert result.answer == "18 days"
    assert orch.store is not None
    stored = orch.store.get_run(result.run_id)["answer"]  # type: ignore[index]
    assert stored == ("18 days" if capture else None)
    raw = sqlite3.connect(settings.traces_path).execute("select group_concat(attributes) from spans")
    assert ("18 days" in (raw.fetchone()[0] or "")) == capture


async def test_a_prompt_past_the_context_window_fails_before_the_call(make_orch: MakeOrch) -> None:
    orch = make_orch(STEPS, by_turn=True)
    binding = orch.slots["controller"]
    orch.slots["controller"] = dataclasses.replace(
        binding, profile=dataclasses.replace(binding.profile, context_window=1024)
    )
    result = await orch.arun("agent", TASK + " " + "filler words " * 2000)
    assert result.status == "failed"
    assert "(1024 tokens)" in (result.error or "")
    assert result.error and result.error.startswith("node 'controller' of graph 'agent': PromptTooLongError")
    assert result.ledger.input_tokens == 0  # no call was made


def test_the_context_window_is_the_one_used_and_the_manifest_sets_it() -> None:
    from orchestrator.models.binding import bind_slot
    from orchestrator.profiles import LOCAL_CONTEXT

    assert LOCAL_CONTEXT == 4096
    assert bind_slot("c", SlotConfig(model="local:qwen2.5-1.5b")).profile.context_window == 4096
    bigger = bind_slot("c", SlotConfig(model="local:qwen2.5-1.5b", context_window=8192))
    assert bigger.profile.context_window == 8192


async def test_a_runs_ledger_rows_are_in_the_store_when_the_run_returns(
    make_orch: MakeOrch, settings: Settings
) -> None:
    """A resume in another process or `Orchestrator` reads the ledger from the store: a row still queued in
    the first book's writer when its run returned was a paid call missing from the books (seen under load).
    Here the store is made slow, as a busy disk is."""
    orch = make_orch(STEPS, by_turn=True)
    store = orch.book.store
    insert = store.insert

    def slow_insert(rows: Any) -> None:
        time.sleep(0.5)
        insert(rows)

    store.insert = slow_insert  # type: ignore[method-assign]
    result = await orch.arun("agent", TASK, run_id="slow-disk")
    billed = sum(line["calls"] for line in result.ledger.lines)
    assert result.status == "ok" and billed > 0
    raw = sqlite3.connect(settings.checkpoints_path)
    (count,) = raw.execute("select count(*) from orch_ledger where run_id = 'slow-disk'").fetchone()
    assert count == billed


async def test_a_runs_checkpointer_sets_up_while_another_connection_writes(tmp_path: Path) -> None:
    """The ledger, the leases and each run's checkpointer share one file. LangGraph's set-up switches it to
    WAL, which SQLite refuses at once ("database is locked", no busy wait) while another connection holds
    a lock: 20 concurrent runs on the local model failed so. The first connection (the ledger's, when an
    `Orchestrator` starts) now makes the file WAL, and the set-up waits its turn like any write."""
    import threading

    from orchestrator.cost.ledger import LedgerBook
    from orchestrator.run.checkpoints import Checkpoints

    path = tmp_path / "c.db"
    book = LedgerBook(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("begin immediate")  # another writer holds the write lock for a second
    threading.Timer(1.0, other.execute, ["commit"]).start()
    async with Checkpoints(path).open() as saver:
        assert await saver.aget_tuple({"configurable": {"thread_id": "none", "checkpoint_ns": ""}}) is None
    assert other.execute("pragma journal_mode").fetchone() == ("wal",)
    other.close()
    book.close()


async def test_the_ledger_commits_without_waiting_for_the_disk_and_an_async_flush_sees_its_rows(
    tmp_path: Path,
) -> None:
    """The ledger's rows reach the WAL without an fsync of their own (the checkpoint saver's commits, on the
    same file, sync them); `aflush` returns once every row added before it is committed."""
    from orchestrator.cost.ledger import LedgerBook

    book = LedgerBook(tmp_path / "c.db")
    assert book.store._conn.execute("pragma synchronous").fetchone() == (1,)  # type: ignore[attr-defined]
    entry: Any = {"node": "n", "kind": "model", "name": "m", "usd": 0.5}
    for _ in range(3):
        book.add("r1", entry)
    await book.aflush()
    raw = sqlite3.connect(tmp_path / "c.db")
    assert raw.execute("select count(*) from orch_ledger where run_id = 'r1'").fetchone() == (3,)
    raw.close()
    book.close()
    await asyncio.wait_for(book.aflush(), 5)  # closed: returns, never waits for a writer that is gone
