"""The redaction hook: a function of the project's (`redact = "module:function"` in the manifest) that sees
every span's attributes before anything is stored in SQLite or exported over OTLP.

The hook is called as `redact(name, attributes)`, once for the span (its name and attributes, the status
description under `otel.status_description`) and once for each of its events (an exception's message and
stack trace): it returns the attributes to keep, masked as it likes, or None to keep the dict it was given
(edited in place). A hook that raises never breaks a run: that span keeps none of its content attributes,
no status description and no exception messages, and the failure is logged once.

Example:
    >>> import re
    >>> EMAIL = re.compile(r"[\\w.+-]+@[\\w-]+\\.[\\w.-]+")
    >>> def redact(name, attributes):
    ...     return {k: EMAIL.sub("<email>", v) if isinstance(v, str) else v for k, v in attributes.items()}
    >>> redact("chat x", {"gen_ai.input.messages": "mail ana@example.com"})
    {'gen_ai.input.messages': 'mail <email>'}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status

from orchestrator.tracing import attrs as A
from orchestrator.tracing.records import Finished, SpanRecord

__all__ = ["CONTENT_ATTRIBUTES", "Redact", "Redactor"]

Redact = Callable[[str, dict[str, Any]], Mapping[str, Any] | None]

STATUS_DESCRIPTION = "otel.status_description"
ANSWER = A.NS + "answer"  # a run row's answer (content capture only), as the hook sees it
# what content capture records: the user's text and the models' (dropped when the hook fails)
CONTENT_ATTRIBUTES = frozenset(
    {
        A.INPUT_MESSAGES,
        A.OUTPUT_MESSAGES,
        A.TOOL_ARGS,
        A.TOOL_RESULT,
        A.WORKER_INPUT,
        A.WORKER_OUTPUT,
        A.PLAN,
        A.UNGROUNDED,
        ANSWER,
    }
)
_KEPT = (A.KIND, A.RUN_ID)  # what the store files a span by: never taken away by the hook
_SCALARS = (str, bool, int, float)

log = logging.getLogger("orchestrator.tracing")


class Redactor:
    """Applies a redaction hook to a finished span, giving a new span (the original is left as it is)."""

    def __init__(self, hook: Redact) -> None:
        self.hook = hook
        self._warned = False

    def __call__(self, span: ReadableSpan) -> ReadableSpan:
        kept, status, events = self._redact(span)
        return ReadableSpan(
            name=span.name,
            context=span.get_span_context(),
            parent=span.parent,
            resource=span.resource,
            attributes=kept,
            events=events,
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def record(self, span: SpanRecord) -> SpanRecord:
        """The same for one of our span records (records.py)."""
        return span.copy(*self._redact(span))

    def _redact(self, span: Finished) -> tuple[dict[str, Any], Status, list[Event]]:
        """A span's attributes, status and events as the hook leaves them."""
        attributes = dict(span.attributes or {})
        description = span.status.description
        try:
            given = dict(attributes)
            if description is not None:
                given[STATUS_DESCRIPTION] = description
            kept = self._apply(span.name, given)
            description = kept.pop(STATUS_DESCRIPTION, None)
            events = [
                Event(e.name, self._apply(e.name, dict(e.attributes or {})), e.timestamp) for e in span.events
            ]
        except Exception as exc:  # the hook must never break a run: keep nothing it could have masked
            self._warn(exc)
            kept = {k: v for k, v in attributes.items() if k not in CONTENT_ATTRIBUTES}
            description = None
            events = [_bare(e) for e in span.events]
        for key in _KEPT:
            if key in attributes:
                kept[key] = attributes[key]
        return kept, Status(span.status.status_code, description), events

    def run_row(self, answer: str | None, error: str | None) -> tuple[str | None, str | None]:
        """A run row's answer and error: the hook sees them as `orchestrator.answer` and
        `otel.status_description` of a span named `invoke_workflow`; if it raises, neither is kept."""
        given = {k: v for k, v in ((ANSWER, answer), (STATUS_DESCRIPTION, error)) if v is not None}
        if not given:
            return answer, error
        try:
            kept = self._apply("invoke_workflow", given)
        except Exception as exc:
            self._warn(exc)
            return None, None
        return _text(kept.get(ANSWER)), _text(kept.get(STATUS_DESCRIPTION))

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            # the type only: the message could quote what the hook was masking (DEBUG logs it all)
            log.warning(
                "redaction hook %r raised %s; the content of the spans it fails on is dropped",
                getattr(self.hook, "__qualname__", self.hook),
                type(exc).__name__,
            )
        log.debug("redaction hook failed", exc_info=exc)

    def _apply(self, name: str, attributes: dict[str, Any]) -> dict[str, Any]:
        out = self.hook(name, attributes)
        if out is None:
            out = attributes
        if not isinstance(out, Mapping):
            raise TypeError(f"the hook returned {type(out).__name__}, not a dict of attributes (or None)")
        return {str(k): v for k, v in out.items() if _valid(v)}


def _valid(value: Any) -> bool:
    """An OpenTelemetry attribute value: a str, bool, int or float, or a sequence of one of them."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, bytes | bytearray | memoryview):  # not text: the store could not write it
        return False
    return isinstance(value, Sequence) and all(isinstance(v, _SCALARS) for v in value)


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def _bare(event: Event) -> Event:
    """An event with only its type kept (an exception's message and stack trace can quote content)."""
    attributes = {k: v for k, v in (event.attributes or {}).items() if k == "exception.type"}
    return Event(event.name, attributes, event.timestamp)
