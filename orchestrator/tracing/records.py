"""Our spans as plain records: an OpenTelemetry API `Span` that is a few slots, not the SDK's span.

The SDK's span costs about 45 µs of CPU to start, fill and end (attribute validation under a lock, the
sampler, the processors' fan-out); ours costs a few. A `SpanRecord` is a current span like any other: user
code sees it through `trace.get_current_span()`, a host's SDK tracer parents its spans under it, and ours
under the host's. When it ends it is handed to one function (`Tracing` in setup.py routes it: the store,
the metrics, the redaction hook, and, only when a host's provider or an OTLP endpoint is there to read it,
an SDK `ReadableSpan` built from it).

A record reads like a `ReadableSpan` where the store, the metrics and the redaction hook look (`name`,
`attributes`, `events`, `status`, `start_time`, `end_time`, `parent`, `get_span_context()`), so they
take either.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

__all__ = ["Finished", "RecordTracer", "SpanRecord", "readable"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_SCALAR = (str, bool, int, float)
_AS_IS = (str, bool, int, float, bytes)
_getrandbits = random.getrandbits
_time_ns = time.time_ns


def _value(value: Any) -> Any:
    """An attribute value as the SDK keeps it: a scalar (None and bytes included) as it is, a sequence as a
    tuple, a mapping as a dict (each cleaned the same way), anything else as its str."""
    if value is None or isinstance(value, _AS_IS):
        return value
    if isinstance(value, Sequence):
        return tuple(_value(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _value(v) for k, v in value.items() if k}
    return str(value)


class SpanRecord(trace.Span):
    """One span: its name, ids, times, attributes, status and events; `end()` hands it on."""

    __slots__ = (
        "_sink",
        "attributes",
        "context",
        "end_time",
        "events",
        "name",
        "parent",
        "scope",
        "start_time",
        "status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        sink: Callable[[SpanRecord], None],
        scope: InstrumentationScope,
        start_time: int,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.attributes = attributes
        self.events: list[Event] = []
        self.status = _UNSET
        self.start_time = start_time
        self.end_time: int | None = None
        self._sink = sink
        self.scope = scope

    # --- as the API's span -------------------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is not None:
            return
        self.attributes[key] = value if type(value) in _SCALAR else _value(value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self.end_time is None:
            self.events.append(Event(name, attributes, timestamp or _time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        return None  # our spans carry no links

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # as the SDK: OK is final, UNSET is no change
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        name = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
        found: dict[str, Any] = {
            "exception.type": name,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            found.update(attributes)
        self.add_event("exception", found, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or _time_ns()
        self._sink(self)

    # --- as the SDK's ReadableSpan, where ours are read ----------------------------------------------
    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self.scope

    @property
    def links(self) -> tuple[Link, ...]:
        return ()

    @property
    def kind(self) -> SpanKind:
        return SpanKind.INTERNAL

    def copy(self, attributes: dict[str, Any], status: Status, events: list[Event]) -> SpanRecord:
        """The same span with other content (the redaction hook's)."""
        out = SpanRecord(
            self.name, self.context, self.parent, attributes, self._sink, self.scope, self.start_time
        )
        out.status, out.events, out.end_time = status, events, self.end_time
        return out

    def __repr__(self) -> str:
        return f"SpanRecord({self.name!r}, span_id={self.context.span_id:016x})"


Finished = ReadableSpan | SpanRecord  # an ended span, the SDK's or ours


class RecordTracer(trace.Tracer):
    """Starts `SpanRecord`s: the parent is the given context's current span (ours or anyone's), as with
    any OpenTelemetry tracer; each ended record goes to `sink`."""

    def __init__(self, scope: InstrumentationScope, sink: Callable[[SpanRecord], None]) -> None:
        self.scope = scope
        self.sink = sink

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> SpanRecord:
        parent = trace.get_current_span(context).get_span_context()
        span_id = _getrandbits(64) or 1
        if parent.is_valid:  # the parent's sampling decision (a host's) carries over to the processors
            ctx = SpanContext(parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state)
            up: SpanContext | None = parent
        else:
            ctx = SpanContext(_getrandbits(128) or 1, span_id, False, _SAMPLED)
            up = None
        at: dict[str, Any] = {}
        if attributes:
            for key, value in attributes.items():
                at[key] = value if type(value) in _SCALAR else _value(value)
        return SpanRecord(name, ctx, up, at, self.sink, self.scope, start_time or _time_ns())

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _Current:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return _Current(span, end_on_exit, record_exception, set_status_on_exception)


class _Current:
    """`trace.use_span` for a record, as a class: the span is current inside, ended on the way out; an
    `Exception` (not a BaseException) is recorded and sets the error status, as the SDK does, when asked."""

    __slots__ = ("end_on_exit", "record", "span", "status", "token")

    def __init__(self, span: SpanRecord, end_on_exit: bool, record: bool, status: bool) -> None:
        self.span = span
        self.end_on_exit = end_on_exit
        self.record = record
        self.status = status

    def __enter__(self) -> SpanRecord:
        self.token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        context_api.detach(self.token)
        span = self.span
        if isinstance(exc, Exception) and span.end_time is None:
            if self.record:
                span.record_exception(exc)
            if self.status:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self.end_on_exit:
            span.end()


def readable(span: SpanRecord, resource: Resource) -> ReadableSpan:
    """The SDK's finished span for a record (for a host's span processors and the OTLP exporter)."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=span.attributes,
        events=span.events,
        kind=SpanKind.INTERNAL,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.scope,
    )
