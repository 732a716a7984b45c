"""An OTLP/HTTP receiver on the loopback server: it takes `/v1/traces` and `/v1/metrics` and decodes their
protobuf bodies with opentelemetry-proto's own classes."""

from __future__ import annotations

import gzip
import socket
import zlib
from dataclasses import dataclass
from typing import Any

from loopback import Loopback, Reply, Request
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["Received", "attributes", "body", "collect", "metrics", "payloads", "refused_port", "spans"]

_PATHS = ("/v1/traces", "/v1/metrics")


def collect(server: Loopback) -> None:
    """Answer OTLP exports as a collector does: 200 and an empty protobuf response."""

    def ok(request: Request) -> Reply:
        return Reply(200, {"content-type": "application/x-protobuf"}, b"")

    for path in _PATHS:
        server.handle(path, ok)


def body(request: Request) -> bytes:
    """A request's body, decompressed."""
    encoding = request.headers.get("content-encoding", "")
    if encoding == "gzip":
        return gzip.decompress(request.body)
    if encoding == "deflate":
        return zlib.decompress(request.body)
    return request.body


def payloads(server: Loopback) -> bytes:
    """Every OTLP body received, as one byte string (to grep)."""
    return b"\n".join(body(r) for r in server.requests if r.path in _PATHS)


@dataclass
class Received:
    span: Span
    scope: str
    resource: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


def spans(server: Loopback) -> list[Received]:
    """Every span received, in the order received."""
    out = []
    for request in server.requests:
        if request.path != "/v1/traces":
            continue
        decoded = ExportTraceServiceRequest.FromString(body(request))
        for rs in decoded.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                out.extend(Received(s, ss.scope.name, resource) for s in ss.spans)
    return out


def metrics(server: Loopback) -> dict[str, Metric]:
    """The metrics of the last metrics export (cumulative: it holds the totals), by name."""
    last = [r for r in server.requests if r.path == "/v1/metrics"]
    assert last, "no metrics were exported"
    decoded = ExportMetricsServiceRequest.FromString(body(last[-1]))
    return {m.name: m for rm in decoded.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP key-values as a dict of Python values."""
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
