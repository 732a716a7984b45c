"""One context manager for every span we open: errors and cancellation end the span with a status."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.errors import GraphBubbleUp
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from orchestrator.tracing import attrs as A

__all__ = ["open_span"]


@contextmanager
def open_span(
    tracer: trace.Tracer,
    name: str,
    kind: str,
    attributes: dict[str, AttributeValue],
    parent: Span | None = None,
) -> Iterator[Span]:
    """Start a current span (under `parent` if given, else the current one); record an exception as error
    and a cancellation as a cancelled error."""
    with tracer.start_as_current_span(
        name,
        context=trace.set_span_in_context(parent) if parent is not None else None,
        attributes={A.KIND: kind, **attributes},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except GraphBubbleUp:  # an interrupt (waiting for a person) or a jump: control flow, not an error
            span.set_attribute(A.INTERRUPTED, True)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            span.set_attribute(A.CANCELLED, True)
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
            span.set_attribute(A.ERROR_TYPE, type(exc).__name__)
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
            span.set_attribute(A.ERROR_TYPE, type(exc).__qualname__)
            raise
