"""OpenTelemetry tracing: span helpers, the SQLite trace store and its exporter, hotspot queries.

`Tracing` and `TraceStore` are imported when first used, so reading the store (`orch traces ...`) does not
load the OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.tracing.setup import Tracing
    from orchestrator.tracing.store import TraceStore

__all__ = ["TraceStore", "Tracing"]


def __getattr__(name: str) -> Any:
    if name == "Tracing":
        from orchestrator.tracing.setup import Tracing

        return Tracing
    if name == "TraceStore":
        from orchestrator.tracing.store import TraceStore

        return TraceStore
    raise AttributeError(f"module 'orchestrator.tracing' has no attribute {name!r}")
