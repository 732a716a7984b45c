"""The spare space beside each SQLite store (`orchestrator.reserve`), and the writers that use it: the span
exporter's held rows, the ledger's, and the checkpointer's retried writes. The full disks are real (a small
tmpfs, skipped where it can't be mounted); the runs on them are in tests/test_faults.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bench.faults import fill, free, small_disk
from orchestrator.cost.ledger import LedgerBook
from orchestrator.reserve import DiskFull, Reserve, reserve_for
from orchestrator.run.checkpoints import Checkpoints
from orchestrator.run.sqlite_saver import SqliteCheckpointer
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


async def test_a_checkpoint_write_stored_in_the_reserve_then_stops_the_run(tmp_path: Path) -> None:
    """The disk fills while a run's step is in flight: its batch is committed once more in the reserve's
    space, and each write of it, stored, raises `DiskFull`; the next write, with no reserve left, fails."""
    from langgraph.checkpoint.base import empty_checkpoint

    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            pytest.skip("a tmpfs can't be mounted here (it needs root)")
        store = Checkpoints(disk / "c.db")
        async with store.open() as saver:
            config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
            assert await saver.aget_tuple(config) is None  # set up, the reserve made
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"bulk": "x" * 300_000}  # needs new pages
            fill(disk)
            with pytest.raises(DiskFull, match="stored in its reserve"):
                await saver.aput(config, checkpoint, {}, {})
            found = await saver.aget_tuple(config)
            assert found is not None and found.checkpoint["id"] == checkpoint["id"]
            assert not (disk / "c.db.reserve").exists()
            again = empty_checkpoint()
            again["channel_values"] = {"bulk": "y" * 300_000}
            fill(disk)  # the reserve's space is taken too
            with pytest.raises(sqlite3.OperationalError, match="full"):
                await saver.aput(config, again, {}, {})
        store.close()
        free(disk)


async def test_the_checkpoint_store_makes_its_reserve(tmp_path: Path) -> None:
    store = Checkpoints(tmp_path / "c.db")
    async with store.open() as saver:
        assert isinstance(saver, SqliteCheckpointer)
        assert (tmp_path / "c.db.reserve").stat().st_size > 0
        config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        assert await saver.aget_tuple(config) is None
    store.close()


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
