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
import threading
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import StatusCode

from orchestrator.tracing import attrs as A
from orchestrator.tracing.export import OtlpExport
from orchestrator.tracing.metrics import GenAIMetrics, host_meter_provider
from orchestrator.tracing.records import Finished, RecordTracer, SpanRecord, readable
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

    def export(self, spans: Sequence[Finished]) -> SpanExportResult:
        fresh = [_row(s) for s in spans if _ours(s)]
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
                        "trace store %s refused %d spans%s (%s); held to write later",
                        self.store.path,
                        len(rows),
                        " and runs' start rows" if self.store.pending_starts() else "",
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
    """Buffers ended spans; a writer thread writes them, `LINGER_S` after a node or run span ends.

    The spans are written off the run's hot path (sqlite3 releases the GIL while it writes), everything
    buffered in one transaction: nodes that end close together share a commit. A commit costs about as much
    as writing ten spans (200-350 µs against 15-30 µs a span), and a graph whose nodes take a few
    milliseconds each paid one per node. The writer is woken once per window, not at every node's end: a
    wake-up is a thread switch and a hand-over of the GIL, which the run's thread then waits to get back.
    A SIGKILL loses at most the spans of the last `LINGER_S`; the run's checkpoint is not affected.

    `force_flush` waits until everything ended before it is written, and ends the writer's wait at once;
    the runner calls it at the end of every run, so a finished run's spans are always in the store.
    """

    MAX_WRITE = 5000  # spans written in one transaction at most, when many are buffered
    LINGER_S = 0.02  # how long the writer waits, once woken, for more spans to write in the same transaction

    def __init__(self, exporter: SpanExporter, max_buffer: int = 512) -> None:
        self.exporter = exporter
        self.max_buffer = max_buffer
        self._buffer: list[Finished] = []
        self._lock = threading.Lock()
        self._armed = False  # the writer has been woken for the spans buffered (or is writing them)
        self._waiters: list[threading.Event] = []  # flushes waiting for what was buffered before them
        self._stopping = False
        self._wake = threading.Event()  # a write is due: LINGER_S from now, or at once when hurried
        self._hurry = threading.Event()  # a flush or a stop: write now
        self._writer = threading.Thread(
            target=self._write_loop, name="orchestrator-trace-writer", daemon=True
        )
        self._writer.start()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._hurry.wait(self.LINGER_S)  # more spans end meanwhile: one commit for them all
            with self._lock:
                self._hurry.clear()
                batch, self._buffer = self._buffer, []
                waiters, self._waiters = self._waiters, []
                stop = self._stopping
                self._armed = False
            # an empty batch writes what the store holds to write without spans: runs' start rows
            for start in range(0, max(1, len(batch)), self.MAX_WRITE):
                part = batch[start : start + self.MAX_WRITE]
                self.exporter.export(part)  # type: ignore[arg-type]  # ours takes records too
            for done in waiters:
                done.set()
            if stop:
                return

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: Finished) -> None:
        with self._lock:
            self._buffer.append(span)
            if self._armed:
                return
            kind = (span.attributes or {}).get(A.KIND)
            if kind not in _FLUSH_KINDS and len(self._buffer) < self.max_buffer:
                return
            self._armed = True
        self._wake.set()

    def nudge(self) -> None:
        """Have the writer write within `LINGER_S` though no span ended: what the store was given to write
        with the next spans (a run's start row)."""
        with self._lock:
            if self._armed:
                return
            self._armed = True
        self._wake.set()

    def shutdown(self) -> None:
        done = self._signal(stop=True)
        if done is not None:
            done.wait(30)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        done = self._signal(stop=False)
        return done is not None and done.wait(timeout_millis / 1000)

    def _signal(self, stop: bool) -> threading.Event | None:
        """Have the writer write now (and end, with `stop`); the event it sets when it has."""
        if not self._writer.is_alive():
            return None
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
            self._stopping = self._stopping or stop
        self._hurry.set()
        self._wake.set()
        return done


_STATUS = {StatusCode.OK: "ok", StatusCode.ERROR: "error", StatusCode.UNSET: "unset"}


def _ours(span: Finished) -> bool:
    if type(span) is SpanRecord:
        return True
    scope = span.instrumentation_scope
    return scope is not None and scope.name == SCOPE


def _row(span: Finished) -> dict[str, Any]:
    """A span's row: its columns, and all its attributes as JSON (written once, here)."""
    at = span.attributes or {}
    get = at.get
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or 0
    status = span.status
    return {
        "span_id": f"{ctx.span_id:016x}",
        "trace_id": f"{ctx.trace_id:032x}",
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "run_id": get(A.RUN_ID),
        "name": span.name,
        "kind": get(A.KIND),
        "node": get(A.NODE),
        "model": get(A.RESPONSE_MODEL) or get(A.REQUEST_MODEL),
        "tool": get(A.TOOL_NAME),
        "role": get(A.ROLE),
        "action": get(A.ACTION),
        "start_ns": start,
        "end_ns": end,
        "duration_ms": (end - start) / 1e6,
        "status": _STATUS.get(status.status_code, "unset"),
        "status_message": status.description,
        "input_tokens": get(A.INPUT_TOKENS),
        "output_tokens": get(A.OUTPUT_TOKENS),
        "cache_read_tokens": get(A.CACHE_READ),
        "cache_write_tokens": get(A.CACHE_WRITE),
        "cost_usd": get(A.COST),
        "ttft_ms": get(A.TTFT_MS),
        "slot": get(A.SLOT),
        "provider": get(A.PROVIDER),
        "compute_ms": get(A.COMPUTE_MS),
        "cache_write_1h_tokens": get(A.CACHE_WRITE_1H),
        "reasoning_tokens": get(A.REASONING),
        "tokens_per_s": get(A.TOKENS_PER_S),
        "node_path": get(A.NODE_PATH),
        "repairs": get(A.WORKER_REPAIRS),
        "escalations": get(A.WORKER_ESCALATIONS),
        "attributes": _dumps(dict(at) if type(at) is not dict else at),  # a tuple is written as a list
    }


def _dumps(attributes: dict[str, Any]) -> str:
    """Attributes as JSON: orjson (20x the standard library's speed here); anything it can't write (a huge
    int, a value the SDK would have refused) through the standard library."""
    try:
        return orjson.dumps(attributes).decode()
    except TypeError:
        return json.dumps(attributes, default=str)


class Tracing:
    """The tracer a run uses, and where its spans go: the SQLite store (None when tracing is off), an OTLP
    endpoint (`otlp_endpoint`), the GenAI metrics; through the redaction hook (`redact`) when one is set.

    Our spans are plain records (records.py), routed here when they end. The SDK's span processors of the
    provider (a host application's, or ours that a test or a host added processors to) receive them as SDK
    spans, built only when a processor is there to read them.

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
        self._metrics: GenAIMetrics | None = None
        self._closed = False
        self._active = True
        self.provider: trace.TracerProvider
        self.tracer: trace.Tracer
        if not enabled:
            self.provider = trace.NoOpTracerProvider()
            self.tracer = self.provider.get_tracer(SCOPE, __version__)
            return
        host = trace.get_tracer_provider()
        if isinstance(host, TracerProvider):
            self.provider = host  # the host's: add to it, never replace it
        else:
            self.provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator"}))
        self._resource = self.provider.resource
        if otlp_endpoint:  # first: a missing extra is a ConfigError before any thread starts
            self.export = OtlpExport(otlp_endpoint, self._resource)
        if store is not None:
            self.processor = NodeFlushSpanProcessor(SQLiteSpanExporter(store))
        meters = [m for m in (host_meter_provider(), self.export and self.export.meter_provider) if m]
        if meters:
            self._metrics = GenAIMetrics(meters, SCOPE, __version__)
        self._fanout: Any = getattr(self.provider, "_active_span_processor", None)
        self._seen: Any = None  # the provider's processors last looked at, and whether one is not ours
        self._others = False
        _add_processor(self.provider, _Hooks(self.flush, self.close))  # flushed when the provider is
        self.tracer = RecordTracer(InstrumentationScope(SCOPE, __version__), self._ended)

    def _ended(self, span: SpanRecord) -> None:
        """Where an ended span of ours goes: the metrics; the provider's processors, as it is; the store
        and the OTLP endpoint, through the redaction hook."""
        if not self._active:
            return
        if self._metrics is not None:
            self._metrics.record(span)
        fanout = self._fanout
        if fanout is not None:
            processors = getattr(fanout, "_span_processors", ())
            if processors is not self._seen:  # a processor was added since: look again, once
                self._seen = processors
                self._others = any(not isinstance(p, _Hooks) for p in processors)
            if self._others:
                fanout.on_end(readable(span, self._resource))
        if self.processor is None and self.export is None:
            return
        if self.redactor is not None:
            span = self.redactor.record(span)
        if self.processor is not None:
            self.processor.on_end(span)
        if self.export is not None:
            self.export.span_processor.on_end(readable(span, self._resource))

    def start_run(self, run_id: str, graph: str, *, config_hash: str, version: str) -> None:
        """Record a run as running in the store (nothing when tracing is off). The row is written by the
        span writer's thread within `LINGER_S` (20 ms), with the rows of other runs started meanwhile,
        instead of a commit of its own on the caller's thread; `flush` writes it too. A store known damaged,
        or a full disk, refuses the run here (`TraceStore.start_run`)."""
        if self.store is None:
            return
        processor = self.processor
        self.store.start_run(
            run_id, graph, config_hash=config_hash, version=version, defer=processor is not None
        )
        if processor is not None:
            processor.nudge()

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
        """Flush and stop routing spans (a host's provider keeps running); the OTLP endpoint gets at
        most `export.CLOSE_WAIT_S` to take the last batch."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._active = False
        if self.processor is not None:
            _remove_processor(self.provider, self.processor)
        if self.export is not None:
            self.export.close()


class _Hooks(SpanProcessor):
    """On the provider, for its flush and its shutdown at exit (when the orchestrator was never closed);
    spans reach us another way (`Tracing._ended`)."""

    def __init__(self, flush: Callable[[], None], close: Callable[[], None]) -> None:
        self._flush = flush
        self._close = close

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._flush()
        return True


def _add_processor(provider: Any, processor: SpanProcessor) -> None:
    provider.add_span_processor(processor)


def _remove_processor(provider: Any, processor: NodeFlushSpanProcessor) -> None:
    # our processor turns inert (its writer stops), so a host provider stays intact
    processor.shutdown()
    processor.exporter = _NullExporter()


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
