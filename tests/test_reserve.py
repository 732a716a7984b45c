"""The spare space beside each SQLite store (`orchestrator.reserve`), and the writers that use it: the span
exporter's held rows, the ledger's, and the checkpointer's retried writes. The full disks are real (a small
tmpfs, skipped where it can't be mounted); the runs on them are in tests/test_faults.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bench.faults import fill, free, small_disk
from orchestrator.cost.ledger import LedgerBook
from orchestrator.reserve import DiskFull, Reserve, reserve_for
from orchestrator.run.checkpoints import Checkpoints, _Guarded
from orchestrator.tracing import attrs as A
from orchestrator.tracing.setup import SQLiteSpanExporter
from orchestrator.tracing.store import TraceStore

FULL = sqlite3.OperationalError("database or disk is full")


def test_a_write_that_finds_the_disk_full_is_tried_once_more_in_the_reserve(tmp_path: Path) -> None:
    reserve = Reserve(tmp_path / "c.db", size=4096)
    reserve.ensure()
    tries: list[int] = []

    def write() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise FULL
        return "stored"

    assert reserve.write(write) == "stored" and len(tries) == 2
    assert reserve.spent and not reserve.path.exists()
    with pytest.raises(sqlite3.OperationalError, match="full"):  # spent: nothing left to give
        reserve.write(lambda: (_ for _ in ()).throw(FULL))
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # not a full disk: not retried here
        reserve.write(lambda: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")))
    reserve.ensure()
    assert not reserve.spent and reserve.path.stat().st_size == 4096


def test_each_store_file_has_one_reserve_per_process(tmp_path: Path) -> None:
    assert reserve_for(tmp_path / "c.db") is reserve_for(str(tmp_path / "." / "c.db"))
    assert reserve_for(tmp_path / "c.db") is not reserve_for(tmp_path / "t.db")


def test_spans_the_store_refuses_are_held_and_written_with_the_next_batch(tmp_path: Path) -> None:
    """A disk still full after the reserve is spent (or another process took it): the spans are held in
    memory, not dropped, and written once there is room; a span already stored is not counted twice."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            pytest.skip("a tmpfs can't be mounted here (it needs root)")
        store = TraceStore(disk / "t.db")
        store.start_run("r1", "g", config_hash="h", version="v")  # makes the reserve
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("orchestrator")
        for i in range(3):
            with tracer.start_as_current_span(f"s{i}") as span:
                span.set_attribute(A.RUN_ID, "r1")
                span.set_attribute(A.KIND, "tool")
                span.set_attribute("bulk", "x" * 300_000)  # needs new pages: no slack left can take it
        first, second = memory.get_finished_spans()[:2], memory.get_finished_spans()[2:]
        exporter = SQLiteSpanExporter(store)
        assert store.reserve is not None
        store.reserve.release()  # another writer used it, then the disk filled
        fill(disk)
        assert exporter.export(first).name == "FAILURE"
        free(disk)
        assert exporter.export(second).name == "SUCCESS"
        assert exporter.export(first).name == "SUCCESS"  # written again: stored once
        assert sorted(s["name"] for s in store.run_spans("r1")) == ["s0", "s1", "s2"]
        store.close()


def test_the_ledger_writes_its_row_in_the_reserve_when_the_disk_fills(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            pytest.skip("a tmpfs can't be mounted here (it needs root)")
        book = LedgerBook(disk / "c.db")
        reserve = reserve_for(disk / "c.db")
        reserve.ensure()
        entry: Any = {
            "node": "n",
            "kind": "model",
            "name": "m",
            "role": None,
            "input_tokens": 1,
            "output_tokens": 2,
            "cost_usd": 0.5,
            "wall_ms": 1.0,
            "ttft_ms": None,
            "compute_ms": None,
        }
        fill(disk)
        book.add("r1", entry)
        assert book.entries("r1") == [entry]  # stored at once, not held in memory
        assert reserve.spent
        book.close()
        free(disk)


class _Inner:
    """A checkpointer's write path, scripted: fails with the given errors, then stores."""

    serde: Any = None

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors, self.calls, self.rollbacks = errors, 0, 0
        self.lock = asyncio.Lock()
        self.conn = self

    @property
    def in_transaction(self) -> bool:
        return True

    async def rollback(self) -> None:
        self.rollbacks += 1

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


async def test_a_checkpoint_write_on_a_busy_database_is_rolled_back_and_tried_again(tmp_path: Path) -> None:
    """WAL's stale-snapshot case fails at once ("database is locked"), whatever the busy timeout:
    bench/load.py lost 10 to 25 of 1,000 runs to it. The write is rolled back and tried again."""
    busy = sqlite3.OperationalError("database is locked")
    inner = _Inner([busy, busy])
    saver = _Guarded(inner, Reserve(tmp_path / "c.db", size=4096))
    t0 = time.monotonic()
    await saver.aput_writes({}, [], "t")
    assert inner.calls == 3 and inner.rollbacks == 2 and time.monotonic() - t0 < 5


async def test_a_checkpoint_write_stored_in_the_reserve_then_stops_the_run(tmp_path: Path) -> None:
    reserve = Reserve(tmp_path / "c.db", size=4096)
    reserve.ensure()
    inner = _Inner([FULL])
    saver = _Guarded(inner, reserve)
    with pytest.raises(DiskFull, match="stored in its reserve"):
        await saver.aput_writes({}, [], "t")
    assert inner.calls == 2  # written, in the reserve's space, before the run was stopped


async def test_the_checkpoint_store_is_guarded_and_makes_its_reserve(tmp_path: Path) -> None:
    store = Checkpoints(tmp_path / "c.db")
    async with store.open() as saver:
        assert isinstance(saver, _Guarded)
        assert (tmp_path / "c.db.reserve").stat().st_size > 0
        config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        assert await saver.aget_tuple(config) is None


async def test_a_checkpoint_store_locked_past_its_wait_fails_clearly_and_resumably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.errors import StoreBusyError
    from orchestrator.run import checkpoints

    monkeypatch.setattr(checkpoints, "BUSY_WAIT_S", 0.05)
    busy = sqlite3.OperationalError("database is locked")
    saver = _Guarded(_Inner([busy] * 1000), Reserve(tmp_path / "c.db", size=4096))
    with pytest.raises(StoreBusyError, match=r"stayed locked by other writers .*; resume the run"):
        await saver.aput_writes({}, [], "t")


def test_a_new_checkpoint_file_on_a_full_disk_is_one_clear_error(tmp_path: Path) -> None:
    """Found trying it by hand: the ledger's table could not be made, and `orch run` printed a traceback."""
    from orchestrator.tracing.store import TraceStoreError

    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            pytest.skip("a tmpfs can't be mounted here (it needs root)")
        fill(disk)
        with pytest.raises(TraceStoreError, match=r"checkpoint store .*: its disk is full"):
            Checkpoints(disk / "new.db").ledger()
        free(disk)
