"""OTLP export: the orchestrator's spans and GenAI metrics over OTLP/HTTP (protobuf) to one collector
endpoint (`ORCH_OTLP_ENDPOINT`, or `otlp_endpoint` in the manifest; the `otlp` extra).

Nothing here waits on the network during a run: spans go through a `BatchSpanProcessor`, metrics through a
`PeriodicExportingMetricReader`, and the spans' flush at the end of each run is handed to a background
thread. A dead or slow collector costs a run nothing; closing waits at most `CLOSE_WAIT_S` for the last
spans and metrics, then gives them up (the exporters' retries are cut short).

Headers (a collector's API key) come from `ORCH_OTLP_HEADERS` (`name=value,name2=value2`, values
percent-decoded), else from the standard `OTEL_EXPORTER_OTLP_HEADERS`, which the exporters read themselves.
They are never written to the manifest, the store or a span.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from orchestrator.errors import ConfigError

__all__ = ["CLOSE_WAIT_S", "HEADERS_ENV", "OtlpExport", "otlp_headers"]

CLOSE_WAIT_S = 2.0
HEADERS_ENV = "ORCH_OTLP_HEADERS"

log = logging.getLogger("orchestrator.tracing")


def otlp_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """The headers `ORCH_OTLP_HEADERS` gives, or None (the exporters then read `OTEL_EXPORTER_OTLP_HEADERS`).

    Example:
        >>> otlp_headers({"ORCH_OTLP_HEADERS": "x-api-key=abc%3D,x-team=ops"})
        {'x-api-key': 'abc=', 'x-team': 'ops'}
    """
    raw = environ.get(HEADERS_ENV, "")
    if not raw.strip():
        return None
    headers: dict[str, str] = {}
    for n, item in enumerate(raw.split(","), 1):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():  # the value is not shown: it is likely a secret
            raise ConfigError(f"{HEADERS_ENV}: entry {n} is not name=value; write name=value,name2=value2")
        headers[unquote(name.strip()).lower()] = unquote(value.strip())
    return headers


class OtlpExport:
    """A span processor and a meter provider exporting to one OTLP/HTTP endpoint, flushed off the run's path.

    `endpoint` is the collector's base URL (`http://127.0.0.1:4318`): spans go to `/v1/traces`, metrics to
    `/v1/metrics`.
    """

    def __init__(self, endpoint: str, resource: Resource) -> None:
        try:  # the `otlp` extra: imported only when an endpoint is set
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                f"OTLP export to {_shown(endpoint)!r} needs opentelemetry-exporter-otlp-proto-http ({exc}); "
                "install it with pip install 'racehorse-orchestrator[otlp]', or unset ORCH_OTLP_ENDPOINT / "
                "the manifest's otlp_endpoint"
            ) from None
        base = endpoint.rstrip("/")
        headers = otlp_headers()
        self.endpoint = _shown(base)  # for messages
        self._spans_out = _OnceSpanExporter(OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers))
        self._metrics_out = _OnceMetricExporter(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers)
        )
        self.span_processor: SpanProcessor = BatchSpanProcessor(self._spans_out)
        self.meter_provider = MeterProvider(
            metric_readers=[PeriodicExportingMetricReader(self._metrics_out)],
            resource=resource,
            shutdown_on_exit=False,  # closing does it, within CLOSE_WAIT_S; never a stalled exit
        )
        self._wake = threading.Event()
        self._closing = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._ship, name="orchestrator-otlp", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Send the buffered spans now, from the background thread (never waits). Metrics go on their own
        period (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s) and at `close`: one export per run would be chatty."""
        self._wake.set()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> bool:
        """Send the last batch and stop, waiting at most `wait_s`; False if the collector took longer (what
        it had not taken is dropped)."""
        if not self._closed.is_set():
            self._closing = True
            self._wake.set()
        if self._closed.wait(wait_s):
            return True
        log.warning(
            "OTLP endpoint %s took more than %.1fs to take the last spans and metrics; dropped them",
            self.endpoint,
            wait_s,
        )
        self._spans_out.shutdown()  # ends the exporters' retries at once
        self._metrics_out.shutdown()
        return False

    def _ship(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            final = self._closing
            try:
                self.span_processor.force_flush()
                if final:
                    self.span_processor.shutdown()
                    self.meter_provider.shutdown()  # its last collection is exported first
            except Exception:  # the SDK logs failed exports itself; this thread must keep going
                log.debug("OTLP export failed", exc_info=True)
            if final:
                self._closed.set()
                return


def _shown(url: str) -> str:
    """A URL for a message, without any user and password it carries."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class _OnceSpanExporter(SpanExporter):
    """An exporter whose shutdown may be asked twice (by close, when the collector is slow, and by the
    processor): the second time does nothing."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE if self._down else self.inner.export(spans)

    def shutdown(self) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _OnceMetricExporter(MetricExporter):
    """The same for the metric exporter."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self._lock = threading.Lock()
        self._down = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self._down:
            return MetricExportResult.FAILURE
        return self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)
