"""Wire OpenTelemetry: our SQLite exporter behind a processor that flushes when a node or run span ends.

Inside a host application that has set its own SDK `TracerProvider`, we add our processor to it and never
replace it; the exporter keeps only spans from the `orchestrator` instrumentation scope.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from orchestrator.tracing import attrs as A
from orchestrator.tracing.store import TraceStore

__all__ = ["NodeFlushSpanProcessor", "SQLiteSpanExporter", "Tracing"]

SCOPE = "orchestrator"
_FLUSH_KINDS = {"node", "run"}


class SQLiteSpanExporter(SpanExporter):
    """Writes our spans into a `TraceStore`."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [
            _row(s)
            for s in spans
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == SCOPE
        ]
        try:
            self.store.write_spans(rows)
        except Exception:  # tracing must never break a run
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class NodeFlushSpanProcessor(SpanProcessor):
    """Buffers ended spans; when a node or run span ends, hands the batch to a writer thread.

    The batch is written within milliseconds, off the run's hot path (sqlite3 releases the GIL while it
    writes). `force_flush` waits until everything handed over is written; the runner calls it at the end of
    every run, so a finished run's spans are always in the store.
    """

    def __init__(self, exporter: SpanExporter, max_buffer: int = 512) -> None:
        self.exporter = exporter
        self.max_buffer = max_buffer
        self._buffer: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[ReadableSpan] | threading.Event | None] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._write_loop, name="orchestrator-trace-writer", daemon=True
        )
        self._writer.start()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            self.exporter.export(item)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._buffer.append(span)
            kind = (span.attributes or {}).get(A.KIND)
            if kind not in _FLUSH_KINDS and len(self._buffer) < self.max_buffer:
                return
            batch, self._buffer = self._buffer, []
        self._queue.put(batch)

    def shutdown(self) -> None:
        self.force_flush()
        self._queue.put(None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._queue.put(batch)
        if not self._writer.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout_millis / 1000)


def _row(span: ReadableSpan) -> dict[str, Any]:
    at = dict(span.attributes or {})
    ctx = span.get_span_context()
    assert ctx is not None
    start, end = span.start_time or 0, span.end_time or 0
    status = span.status.status_code
    return {
        "span_id": f"{ctx.span_id:016x}",
        "trace_id": f"{ctx.trace_id:032x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "run_id": at.get(A.RUN_ID),
        "name": span.name,
        "kind": at.get(A.KIND),
        "node": at.get(A.NODE),
        "model": at.get(A.RESPONSE_MODEL) or at.get(A.REQUEST_MODEL),
        "tool": at.get(A.TOOL_NAME),
        "role": at.get(A.ROLE),
        "action": at.get(A.ACTION),
        "start_ns": start,
        "end_ns": end,
        "duration_ms": (end - start) / 1e6,
        "status": {StatusCode.OK: "ok", StatusCode.ERROR: "error"}.get(status, "unset"),
        "status_message": span.status.description,
        "input_tokens": at.get(A.INPUT_TOKENS),
        "output_tokens": at.get(A.OUTPUT_TOKENS),
        "cache_read_tokens": at.get(A.CACHE_READ),
        "cache_write_tokens": at.get(A.CACHE_WRITE),
        "cost_usd": at.get(A.COST),
        "ttft_ms": at.get(A.TTFT_MS),
        "slot": at.get(A.SLOT),
        "provider": at.get(A.PROVIDER),
        "compute_ms": at.get(A.COMPUTE_MS),
        "cache_write_1h_tokens": at.get(A.CACHE_WRITE_1H),
        "reasoning_tokens": at.get(A.REASONING),
        "tokens_per_s": at.get(A.TOKENS_PER_S),
        "attributes": json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in at.items()}),
    }


class Tracing:
    """The tracer a run uses, and the store its spans land in (None when tracing is off)."""

    def __init__(self, store: TraceStore | None, *, enabled: bool = True) -> None:
        self.store = store if enabled else None
        self.processor: NodeFlushSpanProcessor | None = None
        self.provider: trace.TracerProvider
        if not enabled:
            self.provider = trace.NoOpTracerProvider()
        else:
            host = trace.get_tracer_provider()
            if isinstance(host, TracerProvider):
                self.provider = host  # the host's: add to it, never replace it
            else:
                self.provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator"}))
            if store is not None:
                self.processor = NodeFlushSpanProcessor(SQLiteSpanExporter(store))
                _add_processor(self.provider, self.processor)
        from orchestrator._version import __version__

        self.tracer = self.provider.get_tracer(SCOPE, __version__)

    def flush(self) -> None:
        """Export whatever is buffered."""
        if self.processor is not None:
            self.processor.force_flush()

    def close(self) -> None:
        """Flush and detach from the provider (a host's provider keeps running)."""
        self.flush()
        if self.processor is not None and isinstance(self.provider, TracerProvider):
            _remove_processor(self.provider, self.processor)


def _add_processor(provider: Any, processor: SpanProcessor) -> None:
    provider.add_span_processor(processor)


def _remove_processor(provider: Any, processor: SpanProcessor) -> None:
    # The SDK has no public remove; our processor turns inert instead so a host provider stays intact.
    if isinstance(processor, NodeFlushSpanProcessor):
        processor.shutdown()
        processor.exporter = _NullExporter()


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
