"""Our spans as plain records (tracing/records.py): what the SDK's span did, they do; where they go."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, StatusCode, TraceFlags

from orchestrator.tracing import attrs as A
from orchestrator.tracing.records import SpanRecord
from orchestrator.tracing.setup import NodeFlushSpanProcessor, Tracing
from orchestrator.tracing.spans import open_span
from orchestrator.tracing.store import TraceStore

# values the SDK keeps as they are, turns into tuples (lists, nested too) or copies (a dict)
TRICKY: dict[str, Any] = {
    "s": "text",
    "i": 3,
    "f": 0.5,
    "b": True,
    "list": ["a", "b"],
    "ints": (1, 2),
    "empty": [],
    "none": None,
    "mixed": [1, "a"],
    "nested": [[1]],
    "bytes": b"raw",
    "dict": {"a": 1},
}


def _sdk_attributes() -> dict[str, Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("orchestrator").start_as_current_span("x", attributes=TRICKY) as span:
        span.set_attribute("late", [1.5, 2.5])
        span.set_attribute("late_none", None)
    provider.shutdown()
    (done,) = memory.get_finished_spans()
    return dict(done.attributes or {})


def test_a_record_cleans_attribute_values_as_the_sdk_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracing = Tracing(None)
    ended: list[SpanRecord] = []
    tracer: Any = tracing.tracer
    tracer.sink = ended.append
    with tracer.start_as_current_span("x", attributes=TRICKY) as span:
        assert isinstance(span, SpanRecord)
        span.set_attribute("late", [1.5, 2.5])
        span.set_attribute("late_none", None)
    tracing.close()
    (record,) = ended
    assert record.attributes == _sdk_attributes()
    assert record.attributes["list"] == ("a", "b")


def test_our_spans_nest_with_a_hosts_spans_both_ways_and_reach_its_processors_as_sdk_spans() -> None:
    tracing = Tracing(None)
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    host = tracing.provider.get_tracer("host.app")
    with (
        host.start_as_current_span("http request") as request,
        open_span(tracing.tracer, "invoke_workflow g", "run", {A.RUN_ID: "r1"}) as run,
    ):
        assert trace.get_current_span() is run  # what user code and node_span() see
        with host.start_as_current_span("db query"):
            pass
        with (
            pytest.raises(ValueError),
            open_span(tracing.tracer, "execute_tool t", "tool", {A.TOOL_NAME: "t"}),
        ):
            raise ValueError("no such row")
    tracing.close()
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert set(spans) == {"http request", "invoke_workflow g", "db query", "execute_tool t"}
    tool, query, ours = spans["execute_tool t"], spans["db query"], spans["invoke_workflow g"]
    assert isinstance(ours, ReadableSpan) and ours.instrumentation_scope is not None
    assert ours.instrumentation_scope.name == "orchestrator"
    assert ours.parent is not None and ours.parent.span_id == request.get_span_context().span_id
    assert ours.context is not None and ours.context.trace_id == request.get_span_context().trace_id
    assert query.parent is not None and query.parent.span_id == ours.context.span_id
    assert tool.parent is not None and tool.parent.span_id == ours.context.span_id
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.status.description == "ValueError: no such row"
    assert [e.name for e in tool.events] == ["exception"]
    assert dict(tool.attributes or {})[A.ERROR_TYPE] == "ValueError"
    assert dict(ours.attributes or {}) == {A.KIND: "run", A.RUN_ID: "r1"}


def test_a_processor_added_after_spans_ended_gets_the_next_ones_and_the_store_gets_all(
    tmp_path: Path,
) -> None:
    store = TraceStore(tmp_path / "t.db")
    tracing = Tracing(store)
    with open_span(tracing.tracer, "invoke_workflow g", "run", {A.RUN_ID: "r1"}):
        pass
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    with open_span(tracing.tracer, "invoke_workflow g", "run", {A.RUN_ID: "r2"}):
        pass
    tracing.close()
    assert [dict(s.attributes or {})[A.RUN_ID] for s in memory.get_finished_spans()] == ["r2"]
    assert sorted(r["run_id"] for r in store.spans()) == ["r1", "r2"]
    store.close()


def test_the_store_gets_a_redacted_copy_and_the_providers_processors_the_span_as_it_was(
    tmp_path: Path,
) -> None:
    def hook(name: str, attributes: dict[str, Any]) -> dict[str, Any]:
        return {k: "<masked>" if k == A.TOOL_ARGS else v for k, v in attributes.items()}

    store = TraceStore(tmp_path / "t.db")
    tracing = Tracing(store, redact=hook)
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    with open_span(tracing.tracer, "execute_tool t", "tool", {A.RUN_ID: "r", A.TOOL_ARGS: '{"to": "ana"}'}):
        pass
    tracing.close()
    (row,) = store.spans()
    assert json.loads(row["attributes"])[A.TOOL_ARGS] == "<masked>"
    (sent,) = memory.get_finished_spans()
    assert dict(sent.attributes or {})[A.TOOL_ARGS] == '{"to": "ana"}'
    store.close()


class _Batches(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.batches.append([s.name for s in spans])
        return SpanExportResult.SUCCESS


def test_node_batches_handed_over_together_are_written_in_one_transaction_and_a_flush_ends_the_wait() -> None:
    exporter = _Batches()
    processor = NodeFlushSpanProcessor(exporter)
    processor.LINGER_S = 30.0  # the writer waits for more batches; the flush below must not wait for it
    tracing = Tracing(None)
    tracer: Any = tracing.tracer
    tracer.sink = processor.on_end
    for i in range(3):  # three node spans: three batches handed to the writer, a moment apart
        with open_span(tracing.tracer, f"node {i}", "node", {A.RUN_ID: "r"}):
            pass
        time.sleep(0.05)  # the writer has woken for the first before the next comes
    t0 = time.monotonic()
    assert processor.force_flush()
    assert time.monotonic() - t0 < 10.0  # not the 30 s linger
    assert exporter.batches == [["node 0", "node 1", "node 2"]]
    processor.shutdown()  # writes what is left, and the writer ends
    processor._writer.join(5.0)
    assert not processor._writer.is_alive()
    tracing.close()


def test_a_span_under_a_hosts_unsampled_trace_is_stored_but_not_given_to_its_processors(
    tmp_path: Path,
) -> None:
    store = TraceStore(tmp_path / "t.db")
    tracing = Tracing(store)
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    unsampled = trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.DEFAULT)))
    with open_span(tracing.tracer, "invoke_workflow g", "run", {A.RUN_ID: "r1"}, parent=unsampled):
        pass
    with open_span(tracing.tracer, "invoke_workflow g", "run", {A.RUN_ID: "r2"}):  # a trace of its own
        pass
    tracing.close()
    assert [dict(s.attributes or {})[A.RUN_ID] for s in memory.get_finished_spans()] == ["r2"]
    rows = {r["run_id"]: r for r in store.spans()}
    assert set(rows) == {"r1", "r2"}  # the cost records are the orchestrator's, sampled or not
    assert rows["r1"]["trace_id"] == f"{0xABC:032x}" and rows["r1"]["parent_id"] == f"{0xDEF:016x}"
    store.close()


def test_run_rows_are_written_by_the_span_writer_together_and_kept_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    store = TraceStore(tmp_path / "t.db")
    tracing = Tracing(store)
    threads: list[str] = []
    calls: list[int] = []
    write_starts = store._write_starts
    fail = [True]

    def recorded(starts: list[list[Any]]) -> None:
        threads.append(threading.current_thread().name)
        calls.append(len(starts))
        if fail[0]:
            fail[0] = False
            raise sqlite3.OperationalError("disk I/O error")
        write_starts(starts)

    monkeypatch.setattr(store, "_write_starts", recorded)
    for i in range(50):
        tracing.start_run(f"run-{i}", "g", config_hash="h", version="v")
    # no flush: the writer, nudged, writes them within milliseconds (the first try fails; the rows are kept
    # and go with the next write)
    reader = sqlite3.connect(tmp_path / "t.db")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = reader.execute("select count(*) from runs where run_id like 'run-%' and run_id != 'run-late'")
        if seen.fetchone()[0] == 50:
            break
        tracing.start_run("run-late", "g", config_hash="h", version="v")  # a later run's nudge
        time.sleep(0.05)
    assert reader.execute("select count(*) from runs where run_id != 'run-late'").fetchone()[0] == 50
    assert set(threads) == {"orchestrator-trace-writer"}  # never a commit on the caller's thread
    assert len(calls) < 50  # rows of runs started together share a transaction
    tracing.flush()
    store.end_run("run-3", status="ok")
    row = reader.execute("select graph, status, duration_ms from runs where run_id = 'run-3'").fetchone()
    assert row[0] == "g" and row[1] == "ok" and row[2] is not None and row[2] >= 0
    reader.close()
    tracing.close()
    store.close()
