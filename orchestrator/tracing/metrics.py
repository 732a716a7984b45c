"""The GenAI client metrics (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`), derived from
the chat spans as they end (setup.py hands each one over): every model call, on any path, ends in one, so the
call paths record nothing themselves.

Metrics are recorded only where something reads them: the host application's own SDK `MeterProvider` (used,
never replaced) and the orchestrator's, which exists only when an OTLP endpoint is set (export.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.trace import StatusCode

from orchestrator.tracing import attrs as A
from orchestrator.tracing.records import Finished

__all__ = ["DURATION", "TOKEN_TYPE", "TOKEN_USAGE", "GenAIMetrics", "host_meter_provider"]

TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"
TOKEN_TYPE = "gen_ai.token.type"
# the bucket boundaries the semantic conventions advise for each
_TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16, ... 67108864
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01, 0.02, 0.04, ... 81.92 s
_ATTRIBUTES = (A.OPERATION, A.PROVIDER, A.REQUEST_MODEL, A.RESPONSE_MODEL)


def host_meter_provider() -> metrics.MeterProvider | None:
    """The host application's SDK `MeterProvider`, if it has set one (else None: nobody reads metrics)."""
    provider = metrics.get_meter_provider()
    return provider if isinstance(provider, SdkMeterProvider) else None


class GenAIMetrics:
    """Records the two GenAI client histograms on each given meter provider, from an ended chat span."""

    def __init__(self, providers: Sequence[metrics.MeterProvider], scope: str, version: str) -> None:
        self._instruments: list[tuple[metrics.Histogram, metrics.Histogram]] = []
        for provider in providers:
            meter = provider.get_meter(scope, version)
            tokens = meter.create_histogram(
                TOKEN_USAGE,
                unit="{token}",
                description="Number of input and output tokens used",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            )
            duration = meter.create_histogram(
                DURATION,
                unit="s",
                description="GenAI operation duration",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
            self._instruments.append((tokens, duration))

    def record(self, span: Finished) -> None:
        """Record a chat span's call (any other span is left alone)."""
        at = span.attributes or {}
        if at.get(A.KIND) != "chat":
            return
        common: dict[str, Any] = {k: at[k] for k in _ATTRIBUTES if at.get(k) is not None}
        common.setdefault(A.OPERATION, "chat")
        timed = dict(common)
        if span.status.status_code is StatusCode.ERROR:
            timed[A.ERROR_TYPE] = at.get(A.ERROR_TYPE) or "_OTHER"
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        used = [(kind, at.get(key)) for kind, key in (("input", A.INPUT_TOKENS), ("output", A.OUTPUT_TOKENS))]
        for tokens, duration in self._instruments:
            duration.record(seconds, timed)
            for kind, count in used:
                if isinstance(count, int):
                    tokens.record(count, {**common, TOKEN_TYPE: kind})
