"""OpenTelemetry tracing: span helpers, the SQLite trace store and its exporter, hotspot queries."""

from orchestrator.tracing.setup import Tracing
from orchestrator.tracing.store import TraceStore

__all__ = ["TraceStore", "Tracing"]
