"""Other readers of the traces: OTLP export of the spans and the GenAI metrics (a real OTLP/HTTP receiver on
loopback, decoding the protobuf), the metrics on a host's MeterProvider, a collector that is down or slow,
and the store served by Datasette and read with the documented queries."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from collector import attributes, collect, metrics, refused_port, spans
from loopback import Loopback, Reply, Request
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from orchestrator import Manifest, Settings
from orchestrator.errors import ConfigError
from orchestrator.tracing import Tracing
from orchestrator.tracing.export import CLOSE_WAIT_S, otlp_headers
from orchestrator.tracing.metrics import TOKEN_USAGE as TOKEN
from orchestrator.tracing.queries import QUERIES, datasette_metadata
from support import MakeOrch, act

TASK = "How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card has not arrived'"
DAYS = {"tool": "days between 2026-03-02 and 2026-03-20"}
CLASSIFY = {"worker": "classify_request", "text": "my card has not arrived"}
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
FINAL = act(action="final", answer="18 days; card_arrival")
LABEL = '{"label": "card_arrival"}'
DOCS = Path(__file__).resolve().parent.parent / "docs" / "tracing.md"


def plan(*parts: dict[str, str]) -> str:
    return json.dumps({"plan": list(parts)})


STEPS = [plan(DAYS, CLASSIFY), CALL, FINAL]
GEN_AI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "python",
    "gen_ai.request.model": "python:scripted",
    "gen_ai.response.model": "python:scripted",
}


async def test_spans_and_metrics_reach_an_otlp_collector(
    make_orch: MakeOrch, settings: Settings, loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    collect(loopback)
    monkeypatch.setenv("ORCH_OTLP_HEADERS", "x-collector-key=c0ll3ct0r%2Dkey, x-team=ops")
    orch = make_orch(STEPS, [LABEL], settings=replace(settings, otlp_endpoint=loopback.url))
    result = await orch.arun("agent", TASK)
    assert result.status == "ok"
    assert orch.store is not None
    rows = {r["span_id"]: r for r in orch.store.run_spans(result.run_id)}
    t0 = time.perf_counter()
    orch.close()  # sends the last batch and metrics
    assert time.perf_counter() - t0 < CLOSE_WAIT_S

    got = spans(loopback)
    assert {s.scope for s in got} == {"orchestrator"}
    assert got[0].resource["service.name"] == "orchestrator"
    by_id = {s.span.span_id.hex(): s for s in got}
    assert len(got) == len(by_id) == len(rows) == 13 and set(by_id) == set(rows)  # each span once
    for span_id, row in rows.items():  # the same tree as in the store: names, parent links, trace
        span = by_id[span_id].span
        assert (span.name, span.trace_id.hex(), span.parent_span_id.hex() or None) == (
            row["name"],
            row["trace_id"],
            row["parent_id"],
        )
    run = next(s for s in got if s.span.name == "invoke_workflow agent")
    assert run.span.parent_span_id == b""
    assert run.attributes["orchestrator.run_id"] == result.run_id
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["orchestrator.status"] == "ok"
    tool = next(s for s in got if s.span.name == "execute_tool date_diff")
    assert by_id[tool.span.parent_span_id.hex()].span.name == "call_tool"
    assert tool.attributes["gen_ai.tool.name"] == "date_diff"
    chats = [s for s in got if s.span.name == "chat python:scripted"]
    assert len(chats) == 4  # the plan, the call, the answer, the worker
    for chat in chats:
        at, row = chat.attributes, rows[chat.span.span_id.hex()]
        assert {k: at[k] for k in GEN_AI} == GEN_AI
        assert by_id[chat.span.parent_span_id.hex()].span.name.startswith("invoke_agent ")
        assert at["gen_ai.usage.input_tokens"] == row["input_tokens"] > 0
        assert at["gen_ai.usage.output_tokens"] == row["output_tokens"] > 0
        assert at["orchestrator.cost_usd"] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0
        assert at["orchestrator.slot"] in {"controller", "classify"}
    assert sum(c.attributes["orchestrator.cost_usd"] for c in chats) == pytest.approx(result.ledger.cost_usd)

    exports = [r for r in loopback.requests if r.path in ("/v1/traces", "/v1/metrics")]
    assert {r.path for r in exports} == {"/v1/traces", "/v1/metrics"}
    for request in exports:  # OTLP/HTTP protobuf, with the headers ORCH_OTLP_HEADERS gives
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-protobuf"
        assert (request.headers["x-collector-key"], request.headers["x-team"]) == ("c0ll3ct0r-key", "ops")

    exported = metrics(loopback)
    usage = exported["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    points = {attributes(p.attributes)["gen_ai.token.type"]: p for p in usage.histogram.data_points}
    assert set(points) == {"input", "output"}
    for kind, point in points.items():
        assert attributes(point.attributes) == {**GEN_AI, "gen_ai.token.type": kind}
        assert point.count == 4
        assert list(point.explicit_bounds[:4]) == [1, 4, 16, 64]  # the buckets the conventions advise
    assert points["input"].sum == result.ledger.input_tokens
    assert points["output"].sum == result.ledger.output_tokens
    duration = exported["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    (point,) = duration.histogram.data_points
    assert attributes(point.attributes) == GEN_AI  # no error.type: every call succeeded
    assert point.count == 4
    chat_ms = sum(r["duration_ms"] for r in rows.values() if r["kind"] == "chat")
    assert point.sum == pytest.approx(chat_ms / 1000, abs=1e-6)


async def test_metrics_are_recorded_on_the_hosts_meter_provider(
    make_orch: MakeOrch, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    host = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(otel_metrics, "get_meter_provider", lambda: host)  # as if the host had set it

    def down(messages: Any) -> str:
        raise RuntimeError("model down")

    orch = make_orch([plan(DAYS), down])  # the second controller call fails
    result = await orch.arun("agent", TASK)
    orch.close()
    assert orch.tracing.export is None  # no OTLP endpoint: the host's provider is the only reader
    assert result.status == "failed"
    data = reader.get_metrics_data()
    assert data is not None
    found = {
        m.name: (sm.scope.name, m)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    scope, duration = found["gen_ai.client.operation.duration"]
    assert scope == "orchestrator"
    by_error = {p.attributes.get("error.type"): p for p in duration.data.data_points}
    assert set(by_error) == {None, "ModelError"}
    assert by_error[None].count == by_error["ModelError"].count == 1
    assert {k: by_error["ModelError"].attributes[k] for k in GEN_AI if k != "gen_ai.response.model"} == {
        k: v for k, v in GEN_AI.items() if k != "gen_ai.response.model"
    }
    _, usage = found["gen_ai.client.token.usage"]
    input_points = [p for p in usage.data.data_points if p.attributes["gen_ai.token.type"] == "input"]
    assert sum(p.sum for p in input_points) == result.ledger.input_tokens
    host.shutdown()


async def test_two_orchestrators_on_a_hosts_providers_record_each_call_once_in_their_own_store(
    make_orch: MakeOrch, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    meters, tracers = MeterProvider(metric_readers=[reader]), TracerProvider()
    monkeypatch.setattr(otel_metrics, "get_meter_provider", lambda: meters)  # as if the host had set them
    monkeypatch.setattr(otel_trace, "get_tracer_provider", lambda: tracers)
    one = make_orch(STEPS, [LABEL])
    two = make_orch(STEPS, [LABEL], settings=replace(settings, traces_path=tmp_path / "two.db"))
    assert one.tracing.provider is two.tracing.provider is tracers  # both processors see every span
    with otel_trace.get_tracer("host.app").start_as_current_span("http request"):  # the host's own span
        first, second = await one.arun("agent", TASK), await two.arun("agent", TASK)
    for orch, result in ((one, first), (two, second)):
        assert orch.store is not None
        assert {r["run_id"] for r in orch.store.spans()} == {result.run_id}  # its own runs' spans only
        assert len(orch.store.spans()) == 13
        orch.close()
    data = reader.get_metrics_data()
    assert data is not None
    found = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    (usage,) = [m for m in found if m.name == TOKEN]
    (point,) = [p for p in usage.data.data_points if p.attributes["gen_ai.token.type"] == "input"]
    assert point.count == 8  # four calls a run, each once
    assert point.sum == first.ledger.input_tokens + second.ledger.input_tokens
    meters.shutdown()
    tracers.shutdown()


def test_no_meter_provider_is_made_when_nothing_reads_metrics() -> None:
    tracing = Tracing(None)
    assert tracing.export is None and tracing._metrics is None
    assert not isinstance(otel_metrics.get_meter_provider(), MeterProvider)  # none was set globally
    tracing.close()


@pytest.mark.parametrize("collector", ["refuses connections", "never answers"])
async def test_a_dead_or_slow_collector_never_fails_or_stalls_a_run(
    collector: str, make_orch: MakeOrch, settings: Settings, loopback: Loopback
) -> None:
    if collector == "refuses connections":
        endpoint = f"http://127.0.0.1:{refused_port()}"
    else:
        endpoint = loopback.url

        def stall(request: Request) -> Reply:
            return Reply(stall=30.0)

        loopback.handle("/v1/", stall)
    orch = make_orch(STEPS, [LABEL] * 2, settings=replace(settings, otlp_endpoint=endpoint), by_turn=True)
    first = await orch.arun("agent", TASK)  # its end hands its spans to the export thread, now stuck
    t0 = time.perf_counter()
    second = await orch.arun("agent", TASK)
    # a warm scripted run takes ~0.2 s; one that waited on the collector would take its 10 s timeout
    assert time.perf_counter() - t0 < 2.5
    assert first.status == second.status == "ok"
    assert orch.store is not None and len(orch.store.run_spans(first.run_id)) == 13  # the store is intact
    t0 = time.perf_counter()
    orch.close()
    assert time.perf_counter() - t0 < CLOSE_WAIT_S + 1.0  # gives the last batch up, bounded


def test_the_endpoint_comes_from_the_environment_over_the_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = Manifest(otlp_endpoint="http://collector.internal:4318/")
    monkeypatch.delenv("ORCH_OTLP_ENDPOINT", raising=False)
    assert Settings.resolve(manifest).otlp_endpoint == "http://collector.internal:4318"
    monkeypatch.setenv("ORCH_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert Settings.resolve(manifest).otlp_endpoint == "http://127.0.0.1:4318"
    assert (
        Settings.resolve(manifest, otlp_endpoint="https://otlp.example").otlp_endpoint
        == "https://otlp.example"
    )
    monkeypatch.delenv("ORCH_OTLP_ENDPOINT")
    assert Settings.resolve(Manifest()).otlp_endpoint is None
    with pytest.raises(ConfigError, match=r"\[tool.orchestrator\].otlp_endpoint 'collector:4318': .*http://"):
        Settings.resolve(Manifest(otlp_endpoint="collector:4318"))
    monkeypatch.setenv("ORCH_OTLP_ENDPOINT", "grpc://x")
    with pytest.raises(ConfigError, match="ORCH_OTLP_ENDPOINT 'grpc://x'"):
        Settings.resolve()


def test_headers_come_from_the_environment_and_a_bad_one_is_named_without_its_value() -> None:
    assert otlp_headers({}) is None  # the exporter then reads OTEL_EXPORTER_OTLP_HEADERS itself
    assert otlp_headers({"ORCH_OTLP_HEADERS": "Authorization=Bearer%20t0ken,x-a=1"}) == {
        "authorization": "Bearer t0ken",
        "x-a": "1",
    }
    with pytest.raises(ConfigError, match="entry 2 is not name=value") as caught:
        otlp_headers({"ORCH_OTLP_HEADERS": "x-a=1,s3cr3t-t0ken"})
    assert "s3cr3t" not in str(caught.value)


# --- Datasette and the documented queries ------------------------------------------------------------------


@pytest.fixture
async def store_file(make_orch: MakeOrch) -> Path:
    """A store holding two runs, closed (its WAL folded in) as other readers would find it."""
    orch = make_orch(STEPS, [LABEL] * 2, by_turn=True)
    assert (await orch.arun("agent", TASK)).status == "ok"
    assert (await orch.arun("agent", TASK)).status == "ok"
    assert orch.store is not None
    path = Path(orch.store.path)
    orch.close()
    return path


async def test_datasette_serves_the_runs_the_spans_and_the_canned_queries(store_file: Path) -> None:
    from datasette.app import Datasette

    ds = Datasette([str(store_file)], metadata=datasette_metadata(store_file.stem))
    runs = (await ds.client.get(f"/{store_file.stem}/runs.json?_shape=array")).json()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"ok"}
    chats = (await ds.client.get(f"/{store_file.stem}/spans.json?_shape=array&kind=chat&_size=max")).json()
    assert len(chats) == 8
    assert {c["model"] for c in chats} == {"python:scripted"} and all(c["cost_usd"] > 0 for c in chats)
    assert {c["slot"] for c in chats} == {"controller", "classify"}  # m003's columns are served too
    migrations = (await ds.client.get(f"/{store_file.stem}/_migrations.json?_shape=array")).json()
    assert {"m001_runs_spans", "m003_span_columns"} <= {m["name"] for m in migrations}
    page = await ds.client.get(f"/{store_file.stem}")
    assert page.status_code == 200 and "Cost by model over the last day" in page.text
    for name in QUERIES:  # every canned query runs and returns rows on a real store
        response = await ds.client.get(f"/{store_file.stem}/{name}.json?_shape=array")
        assert response.status_code == 200, (name, response.text[:300])
        assert response.json(), name
    (model,) = (await ds.client.get(f"/{store_file.stem}/cost_by_model_last_day.json?_shape=array")).json()
    assert (model["model"], model["calls"], model["unpriced_calls"]) == ("python:scripted", 8, 0)


def _documented_sql() -> list[str]:
    """The SQL blocks of docs/tracing.md's section on reading the store."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Reading the store", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sql\n(.*?)```", section, flags=re.S)]


def test_the_documented_queries_are_the_canned_ones_and_run_on_a_real_store(store_file: Path) -> None:
    documented = _documented_sql()
    assert documented == [sql for _, sql in QUERIES.values()]
    conn = sqlite3.connect(store_file)
    try:
        for sql in documented:
            assert conn.execute(sql).fetchall(), sql
    finally:
        conn.close()
    # the sqlite-utils CLI line the docs give
    sql = QUERIES["slowest_tools"][1]
    out = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "query", str(store_file), sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (tool,) = json.loads(out)
    assert (tool["tool"], tool["calls"], tool["errors"]) == ("date_diff", 2, 0)


def test_an_endpoint_without_the_otlp_extra_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match=r"pip install 'racehorse-orchestrator\[otlp\]'"):
        Tracing(None, otlp_endpoint="http://127.0.0.1:4318")
