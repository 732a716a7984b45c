"""Wire OpenTelemetry: our SQLite exporter behind a processor that flushes when a node or run span ends,
an OTLP endpoint when one is set (export.py), the GenAI metrics (metrics.py), and the redaction hook
(redact.py) in front of the store and the endpoint alike.

Inside a host application that has set its own SDK `TracerProvider` (or `MeterProvider`), we add our
processors to it (record our metrics on it) and never replace it; only spans from the `orchestrator`
instrumentation scope are stored or exported.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import Attributes

from orchestrator.tracing import attrs as A
from orchestrator.tracing.export import OtlpExport
from orchestrator.tracing.metrics import GenAIMetrics, host_meter_provider
from orchestrator.tracing.redact import Redact, Redactor
from orchestrator.tracing.store import TraceStore, TraceStoreDamaged

__all__ = ["NodeFlushSpanProcessor", "SQLiteSpanExporter", "Tracing"]

SCOPE = "orchestrator"
_FLUSH_KINDS = {"node", "run"}
_log = logging.getLogger("orchestrator.tracing")


class SQLiteSpanExporter(SpanExporter):
    """Writes our spans into a `TraceStore`."""

    MAX_HELD = 100_000  # span rows kept in memory while the store refuses them (a full disk), at most

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self._held: list[dict[str, Any]] = []  # rows the store refused: written before the next ones
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        fresh = [
            _row(s)
            for s in spans
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == SCOPE
        ]
        with self._lock:
            rows = self._held + fresh
            try:
                self.store.write_spans(rows)  # a span is stored once by id: writing one again is harmless
            except TraceStoreDamaged:  # never written into again; the runner says so once, at the run's end
                self._held = []
                return SpanExportResult.FAILURE
            except Exception as exc:  # tracing must never break a run
                if not self._held:
                    _log.warning(
                        "trace store %s refused %d spans (%s); held to write later",
                        self.store.path,
                        len(rows),
                        exc,
                    )
                if len(rows) > self.MAX_HELD:
                    _log.error(
                        "trace store %s: %d held spans dropped", self.store.path, len(rows) - self.MAX_HELD
                    )
                self._held = rows[-self.MAX_HELD :]
                return SpanExportResult.FAILURE
            if self._held:
                _log.warning("trace store %s: %d held spans written", self.store.path, len(self._held))
            self._held = []
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

    MAX_WRITE = 5000  # spans written in one transaction at most, when batches queue up

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
            # under load, batches queue up while one is written: take them all into one transaction (one
            # commit instead of one per node), up to a bound, and honour a flush or stop queued behind them
            batch: list[ReadableSpan] = list(item)
            after: threading.Event | None = None
            stop = False
            while len(batch) < self.MAX_WRITE:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if isinstance(more, threading.Event):
                    after = more
                    break
                batch.extend(more)
            self.exporter.export(batch)
            if after is not None:
                after.set()
            if stop:
                return

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
        "node_path": at.get(A.NODE_PATH),
        "repairs": at.get(A.WORKER_REPAIRS),
        "escalations": at.get(A.WORKER_ESCALATIONS),
        "attributes": json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in at.items()}),
    }


class Tracing:
    """The tracer a run uses, and where its spans go: the SQLite store (None when tracing is off), an OTLP
    endpoint (`otlp_endpoint`), the GenAI metrics; through the redaction hook (`redact`) when one is set.

    Metrics are recorded only where something reads them: the host's SDK `MeterProvider`, and ours when an
    OTLP endpoint is set.
    """

    def __init__(
        self,
        store: TraceStore | None,
        *,
        enabled: bool = True,
        otlp_endpoint: str | None = None,
        redact: Redact | None = None,
    ) -> None:
        from orchestrator._version import __version__

        self.store = store if enabled else None
        self.processor: NodeFlushSpanProcessor | None = None
        self.export: OtlpExport | None = None
        self.redactor = Redactor(redact) if redact is not None else None
        self._outlet: _Outlet | None = None
        self._metrics: GenAIMetrics | None = None
        self._closed = False
        outlets: list[SpanProcessor] = []  # where the spans go, after the redaction hook
        self.provider: trace.TracerProvider
        if not enabled:
            self.provider = trace.NoOpTracerProvider()
        else:
            resource = Resource.create({"service.name": "orchestrator"})
            host = trace.get_tracer_provider()
            if isinstance(host, TracerProvider):
                self.provider = host  # the host's: add to it, never replace it
            else:
                self.provider = TracerProvider(resource=resource)
            if otlp_endpoint:  # first: a missing extra is a ConfigError before any thread starts
                self.export = OtlpExport(otlp_endpoint, resource)
            if store is not None:
                self.processor = NodeFlushSpanProcessor(SQLiteSpanExporter(store))
                outlets.append(self.processor)
            if self.export is not None:
                outlets.append(self.export.span_processor)
            meters = [m for m in (host_meter_provider(), self.export and self.export.meter_provider) if m]
            if meters:
                self._metrics = GenAIMetrics(meters, SCOPE, __version__)
        self.tracer: trace.Tracer = self.provider.get_tracer(SCOPE, __version__)
        if outlets or self._metrics is not None:
            own = _OwnTracer(self.tracer)
            self.tracer = own
            self._outlet = _Outlet(own.started, outlets, self._metrics, self.redactor, self.flush, self.close)
            _add_processor(self.provider, self._outlet)

    def flush(self) -> None:
        """Store whatever is buffered (waits for the writes); hand the OTLP batch to its thread (never
        waits for the network)."""
        if self.processor is not None:
            self.processor.force_flush()
        if self.export is not None:
            self.export.kick()

    def redact_run(self, answer: str | None, error: str | None) -> tuple[str | None, str | None]:
        """A run row's answer and error, through the redaction hook when one is set."""
        if self.redactor is None:
            return answer, error
        return self.redactor.run_row(answer, error)

    def close(self) -> None:
        """Flush and detach from the provider (a host's provider keeps running); the OTLP endpoint gets at
        most `export.CLOSE_WAIT_S` to take the last batch."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        if self._outlet is not None:
            self._outlet.active = False  # inert: the SDK has no public remove
        if self.processor is not None and isinstance(self.provider, TracerProvider):
            _remove_processor(self.provider, self.processor)
        if self.export is not None:
            self.export.close()


class _OwnTracer(trace.Tracer):
    """The SDK's tracer, noting the ids of the spans it starts. On a host's provider every processor sees
    every span, the host's and other orchestrators' alike: each orchestrator's outlet takes only its own."""

    def __init__(self, inner: trace.Tracer) -> None:
        self.inner = inner
        self.started: set[int] = set()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        span = self.inner.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        self.started.add(span.get_span_context().span_id)
        return span

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class _Outlet(SpanProcessor):
    """Where our spans leave the process: the metrics, then (through the redaction hook, once for all of
    them) the store and the OTLP endpoint. Only the spans our own tracer started."""

    def __init__(
        self,
        started: set[int],
        processors: list[SpanProcessor],
        metrics: GenAIMetrics | None,
        redactor: Redactor | None,
        flush: Callable[[], None],
        close: Callable[[], None],
    ) -> None:
        self.started = started
        self.processors = processors
        self.metrics = metrics
        self.redactor = redactor
        self.active = True
        self._flush = flush
        self._close = close

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        if ctx is None or ctx.span_id not in self.started:
            return  # the host's span, or another orchestrator's
        self.started.discard(ctx.span_id)
        if not self.active:
            return
        if self.metrics is not None:
            self.metrics.record(span)
        if self.processors:
            if self.redactor is not None:
                span = self.redactor(span)
            for processor in self.processors:
                processor.on_end(span)

    def shutdown(self) -> None:
        self._close()  # the provider's shutdown at exit, when the orchestrator was never closed

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._flush()
        return True


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
